using Velo.Formats;
using Velo.Models.Blocks;
using Velo.Tensors;

namespace Velo.Models.Gemma;

/// <summary>The weights of one Gemma layer; the post-norms are null for Gemma 1.</summary>
internal readonly unsafe struct GemmaLayerWeights
{
    public required float* AttentionNorm { get; init; }
    public required AttentionWeights Attention { get; init; }
    public float* PostAttentionNorm { get; init; }
    public required float* FfnNorm { get; init; }
    public required FeedForwardWeights FeedForward { get; init; }
    public float* PostFfnNorm { get; init; }
}

/// <summary>
/// Binds a Gemma GGUF file's tensors by their llama.cpp names, checking every shape and type. The converter has
/// already added Gemma's 1 to every norm weight (HF's <c>x · (1 + w)</c>), so the file's norms are plain RMSNorm
/// weights, as llama.cpp uses them.
/// </summary>
internal sealed unsafe class GemmaWeights : IDisposable
{
    private readonly WeightBinder _bind;

    public GemmaWeights(GgufFile file, GemmaConfig c)
    {
        _bind = new WeightBinder(file, WeightLoading.CopiesMatrices);
        TokenEmbedding = _bind.Matrix("token_embd.weight", c.VocabSize, c.Dim, multiplied: !_bind.Has("output.weight"));
        OutputNorm = _bind.Vector("output_norm.weight", c.Dim);
        // Published Gemma files tie the classifier to the token embedding; llama.cpp takes an output matrix when one is there.
        Output = _bind.Has("output.weight") ? _bind.Matrix("output.weight", c.VocabSize, c.Dim) : TokenEmbedding;

        Layers = new GemmaLayerWeights[c.Layers];
        for (int i = 0; i < c.Layers; i++)
        {
            string p = $"blk.{i}.";
            // The attention block binds Q/K norms where present; Gemma 3 must have them.
            if (c.QkNorm)
            {
                file.RequireTensor(p + "attn_q_norm.weight");
                file.RequireTensor(p + "attn_k_norm.weight");
            }
            Layers[i] = new GemmaLayerWeights
            {
                AttentionNorm = _bind.Vector(p + "attn_norm.weight", c.Dim),
                Attention = AttentionWeights.Bind(_bind, p, c.Attention(i), c.Dim),
                PostAttentionNorm = c.PostNorms ? _bind.Vector(p + "post_attention_norm.weight", c.Dim) : null,
                FfnNorm = _bind.Vector(p + "ffn_norm.weight", c.Dim),
                FeedForward = FeedForwardWeights.Bind(_bind, p, c.Dim, c.FfnDim),
                PostFfnNorm = c.PostNorms ? _bind.Vector(p + "post_ffw_norm.weight", c.Dim) : null,
            };
        }
    }

    public WeightMatrix TokenEmbedding { get; }
    public float* OutputNorm { get; }
    public WeightMatrix Output { get; }
    public GemmaLayerWeights[] Layers { get; }

    /// <summary>What repacking matrices at load adds to the bytes a forward pass keeps resident.</summary>
    public long RepackGrowth => _bind.RepackGrowth;

    public WeightRepack Repack => _bind.Repack;

    public void Dispose() => _bind.Dispose();
}
