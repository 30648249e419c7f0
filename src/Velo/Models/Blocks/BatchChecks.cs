using Velo.Runtime;

namespace Velo.Models.Blocks;

/// <summary>What every family does before a forward pass: the batch must fit its state and name real tokens; its
/// positions and sequences are checked and recorded by the KV memory, which every later step reads.</summary>
internal static class BatchChecks
{
    /// <summary>Checks the batch against the state, then appends it to the state's memory: each sequence's tokens must
    /// continue what it holds, or rewrite it from an earlier position (<see cref="KvCache.Append"/>).</summary>
    public static void Begin(IModelState s, ForwardBatch batch, int vocabSize)
    {
        if (batch.Count == 0) throw new ArgumentException("the batch is empty");
        if (batch.Count > s.MaxBatch) throw new ArgumentException($"the batch has {batch.Count} tokens, more than the state's {s.MaxBatch}");
        if (batch.LogitCount > s.MaxLogitRows) throw new ArgumentException($"the batch asks for {batch.LogitCount} rows of logits, more than the state's {s.MaxLogitRows}");
        for (int i = 0; i < batch.Count; i++)
            if ((uint)batch.Tokens[i] >= (uint)vocabSize)
                throw new ArgumentOutOfRangeException(nameof(batch), $"token id {batch.Tokens[i]} is outside the vocabulary of {vocabSize}");
        // Positions beyond the context and sequences the memory lacks are refused here, before anything is written.
        s.Cache.Append(batch);
    }
}
