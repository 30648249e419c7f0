using Velo.Runtime;

namespace Velo.Models.Blocks;

/// <summary>What every family checks before a forward pass: a batch must fit its state and name real tokens, positions and sequences.</summary>
internal static class BatchChecks
{
    public static void Validate(IModelState s, ForwardBatch batch, int vocabSize)
    {
        if (batch.Count == 0) throw new ArgumentException("the batch is empty");
        if (batch.Count > s.MaxBatch) throw new ArgumentException($"the batch has {batch.Count} tokens, more than the state's {s.MaxBatch}");
        if (batch.LogitCount > s.MaxLogitRows) throw new ArgumentException($"the batch asks for {batch.LogitCount} rows of logits, more than the state's {s.MaxLogitRows}");
        for (int i = 0; i < batch.Count; i++)
        {
            if ((uint)batch.Tokens[i] >= (uint)vocabSize)
                throw new ArgumentOutOfRangeException(nameof(batch), $"token id {batch.Tokens[i]} is outside the vocabulary of {vocabSize}");
            if ((uint)batch.Positions[i] >= (uint)s.Cache.ContextLength)
                throw new ArgumentOutOfRangeException(nameof(batch), $"position {batch.Positions[i]} is beyond the context of {s.Cache.ContextLength} tokens");
            if ((uint)batch.Sequences[i] >= (uint)s.Cache.Sequences)
                throw new ArgumentOutOfRangeException(nameof(batch), $"sequence {batch.Sequences[i]} does not exist (the state holds {s.Cache.Sequences})");
        }
    }
}
