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

/// <summary>Binds a Llama-family GGUF file's tensors by their llama.cpp names, checking every shape and type.</summary>
internal sealed unsafe class LlamaWeights : IDisposable
{
    private readonly WeightBinder _bind;

    public LlamaWeights(GgufFile file, LlamaConfig c)
    {
        _bind = new WeightBinder(file);
        TokenEmbedding = _bind.Matrix("token_embd.weight", c.VocabSize, c.Dim);
        OutputNorm = _bind.Vector("output_norm.weight", c.Dim);
        // Tied embeddings: without an output matrix the token embedding doubles as the classifier.
        Output = _bind.Has("output.weight") ? _bind.Matrix("output.weight", c.VocabSize, c.Dim) : TokenEmbedding;
        RopeFrequencyFactors = _bind.OptionalVector("rope_freqs.weight", c.RopeDims / 2);

        Layers = new LlamaLayerWeights[c.Layers];
        for (int i = 0; i < c.Layers; i++)
        {
            string p = $"blk.{i}.";
            Layers[i] = new LlamaLayerWeights
            {
                AttentionNorm = _bind.Vector(p + "attn_norm.weight", c.Dim),
                Attention = AttentionWeights.Bind(_bind, p, c.Attention, c.Dim),
                FfnNorm = _bind.Vector(p + "ffn_norm.weight", c.Dim),
                FeedForward = FeedForwardWeights.Bind(_bind, p, c.Dim, c.FfnDim),
            };
        }
    }

    public WeightMatrix TokenEmbedding { get; }
    public float* OutputNorm { get; }
    public WeightMatrix Output { get; }

    /// <summary>Llama 3's rope frequency divisors, or null.</summary>
    public float* RopeFrequencyFactors { get; }

    public LlamaLayerWeights[] Layers { get; }

    public void Dispose() => _bind.Dispose();
}
