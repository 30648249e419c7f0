using Velo.Formats;
using Velo.Models.Blocks;
using Velo.Tensors;

namespace Velo.Models.Llama;

/// <summary>The weights of one decoder layer.</summary>
internal readonly unsafe struct LlamaLayerWeights
{
    public required float* AttentionNorm { get; init; }
    public required AttentionWeights Attention { get; init; }
    public required float* FfnNorm { get; init; }
    public required FeedForwardWeights FeedForward { get; init; }
}

/// <summary>
/// Binds a Llama-family GGUF file's tensors by their llama.cpp names, checking every shape and type: those of the
/// blocks in <paramref name="layers"/>, with the token embedding when they start at block 0 and the output head when
/// they end at the last block.
/// </summary>
internal sealed unsafe class LlamaWeights : IDisposable
{
    private readonly WeightBinder _bind;

    public LlamaWeights(GgufFile file, LlamaConfig c, LayerRange layers)
    {
        _bind = new WeightBinder(file, WeightLoading.CopiesMatrices);
        if (layers.IsFirst) TokenEmbedding = _bind.Matrix("token_embd.weight", c.VocabSize, c.Dim, multiplied: false);
        if (layers.IsLast)
        {
            OutputNorm = _bind.Vector("output_norm.weight", c.Dim);
            // Tied embeddings: without an output matrix the token embedding doubles as the classifier.
            Output = _bind.Matrix(_bind.Has("output.weight") ? "output.weight" : "token_embd.weight", c.VocabSize, c.Dim);
        }
        RopeFrequencyFactors = _bind.OptionalVector("rope_freqs.weight", c.RopeDims / 2);

        // Indexed from the range's first block: the state's KV memory holds only these blocks, in the same order.
        Layers = new LlamaLayerWeights[layers.Count];
        for (int i = 0; i < layers.Count; i++)
        {
            string p = $"blk.{layers.Start + i}.";
            Layers[i] = new LlamaLayerWeights
            {
                AttentionNorm = _bind.Vector(p + "attn_norm.weight", c.Dim),
                Attention = AttentionWeights.Bind(_bind, p, c.Attention, c.Dim),
                FfnNorm = _bind.Vector(p + "ffn_norm.weight", c.Dim),
                FeedForward = FeedForwardWeights.Bind(_bind, p, c.Dim, c.FfnDim),
            };
        }
    }

    /// <summary>Bound only when the blocks start at block 0.</summary>
    public WeightMatrix TokenEmbedding { get; }

    /// <summary>The final norm and classifier, bound only when the blocks end at the last one.</summary>
    public float* OutputNorm { get; }

    public WeightMatrix Output { get; }

    /// <summary>Llama 3's rope frequency divisors, or null.</summary>
    public float* RopeFrequencyFactors { get; }

    /// <summary>The blocks bound, from the range's first.</summary>
    public LlamaLayerWeights[] Layers { get; }

    /// <summary>The bytes of the tensors bound: what the forward pass reads of the file.</summary>
    public long Bytes => _bind.BoundBytes;

    /// <summary>What repacking matrices at load adds to the bytes a forward pass keeps resident.</summary>
    public long RepackGrowth => _bind.RepackGrowth;

    public WeightRepack Repack => _bind.Repack;

    public void Dispose() => _bind.Dispose();
}
