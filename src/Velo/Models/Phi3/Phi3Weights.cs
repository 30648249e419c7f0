using Velo.Formats;
using Velo.Models.Blocks;
using Velo.Tensors;

namespace Velo.Models.Phi3;

/// <summary>The weights of one Phi-3 decoder layer.</summary>
internal readonly unsafe struct Phi3LayerWeights
{
    public required float* AttentionNorm { get; init; }
    public required AttentionWeights Attention { get; init; }
    public required float* FfnNorm { get; init; }
    public required FeedForwardWeights FeedForward { get; init; }
}

/// <summary>
/// Binds a Phi-3 GGUF file's tensors by their llama.cpp names, checking every shape and type. Its fused matrices are
/// split by rows into views of the mapped tensor, nothing copied: <c>attn_qkv</c> holds Q, K and V stacked, and
/// <c>ffn_up</c> the gate and then the up projection, so the forward pass multiplies them as separate targets.
/// </summary>
internal sealed unsafe class Phi3Weights : IDisposable
{
    private readonly WeightBinder _bind;

    public Phi3Weights(GgufFile file, Phi3Config c)
    {
        _bind = new WeightBinder(file, WeightLoading.CopiesMatrices);
        TokenEmbedding = _bind.Matrix("token_embd.weight", c.VocabSize, c.Dim, multiplied: !_bind.Has("output.weight"));
        OutputNorm = _bind.Vector("output_norm.weight", c.Dim);
        // Tied embeddings: without an output matrix the token embedding doubles as the classifier.
        Output = _bind.Has("output.weight") ? _bind.Matrix("output.weight", c.VocabSize, c.Dim) : TokenEmbedding;
        // llama.cpp binds these per layer, every layer sharing the one tensor: they are model-wide here.
        RopeFactorsLong = _bind.OptionalVector("rope_factors_long.weight", c.RopeDims / 2);
        RopeFactorsShort = _bind.OptionalVector("rope_factors_short.weight", c.RopeDims / 2);

        Layers = new Phi3LayerWeights[c.Layers];
        for (int i = 0; i < c.Layers; i++)
        {
            string p = $"blk.{i}.";
            var up = _bind.Matrix(p + "ffn_up.weight", 2 * c.FfnDim, c.Dim);
            Layers[i] = new Phi3LayerWeights
            {
                AttentionNorm = _bind.Vector(p + "attn_norm.weight", c.Dim),
                Attention = BindAttention(p, c),
                FfnNorm = _bind.Vector(p + "ffn_norm.weight", c.Dim),
                FeedForward = new FeedForwardWeights
                {
                    Gate = up.Slice(0, c.FfnDim),
                    Up = up.Slice(c.FfnDim, c.FfnDim),
                    Down = _bind.Matrix(p + "ffn_down.weight", c.Dim, c.FfnDim),
                },
            };
        }
    }

    /// <summary>The fused <c>attn_qkv</c>, as llama.cpp's converter writes every Phi-3 (Phi-3's own checkpoints fuse them too).</summary>
    private AttentionWeights BindAttention(string prefix, Phi3Config c)
    {
        var qkv = _bind.Matrix(prefix + "attn_qkv.weight", c.QueryDim + 2 * c.KvDim, c.Dim);
        return new AttentionWeights
        {
            Query = qkv.Slice(0, c.QueryDim),
            Key = qkv.Slice(c.QueryDim, c.KvDim),
            Value = qkv.Slice(c.QueryDim + c.KvDim, c.KvDim),
            Output = _bind.Matrix(prefix + "attn_output.weight", c.Dim, c.QueryDim),
        };
    }

    public WeightMatrix TokenEmbedding { get; }
    public float* OutputNorm { get; }
    public WeightMatrix Output { get; }

    /// <summary>LongRoPE's frequency divisors for contexts beyond the original one, or null.</summary>
    public float* RopeFactorsLong { get; }

    /// <summary>LongRoPE's frequency divisors within the original context, or null.</summary>
    public float* RopeFactorsShort { get; }

    public Phi3LayerWeights[] Layers { get; }

    /// <summary>What repacking matrices at load adds to the bytes a forward pass keeps resident.</summary>
    public long RepackGrowth => _bind.RepackGrowth;

    public WeightRepack Repack => _bind.Repack;

    public void Dispose() => _bind.Dispose();
}
