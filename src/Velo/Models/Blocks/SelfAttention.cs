using Velo.Backends;
using Velo.Kernels;
using Velo.Runtime;
using Velo.Tensors;

namespace Velo.Models.Blocks;

/// <summary>The heads of an attention block and how its queries and keys are normalized and rotated.</summary>
internal readonly record struct AttentionShape(int Heads, int KvHeads, int HeadDim, float NormEpsilon, RopeLayout RopeLayout)
{
    public int QueryDim => Heads * HeadDim;
    public int KvDim => KvHeads * HeadDim;

    /// <summary>What multiplies q·k; null: 1/√HeadDim, the usual scaling.</summary>
    public float? QueryScale { get; init; }

    /// <summary>Soft-capping of the scores (Gemma 2); 0: none.</summary>
    public float SoftCap { get; init; }

    /// <summary>A sliding window of keys (Gemma's local layers); 0: every earlier position.</summary>
    public int Window { get; init; }

    public AttentionScoring Scoring => new(QueryScale ?? 1 / MathF.Sqrt(HeadDim), SoftCap, Window);
}

/// <summary>An attention block's weights by llama.cpp's tensor names; biases and Q/K norms are null when absent.</summary>
internal readonly unsafe struct AttentionWeights
{
    public required WeightMatrix Query { get; init; }
    public required WeightMatrix Key { get; init; }
    public required WeightMatrix Value { get; init; }
    public required WeightMatrix Output { get; init; }
    public float* QueryBias { get; init; }
    public float* KeyBias { get; init; }
    public float* ValueBias { get; init; }

    /// <summary>Per-head RMSNorm of queries and keys (Qwen3, Gemma 3), one weight vector shared by every head.</summary>
    public float* QueryNorm { get; init; }

    public float* KeyNorm { get; init; }

    /// <summary>Binds <c>{prefix}attn_q/k/v/output.weight</c>, the optional <c>.bias</c> of Q, K and V and <c>attn_q_norm</c>/<c>attn_k_norm</c>.</summary>
    public static AttentionWeights Bind(WeightBinder bind, string prefix, in AttentionShape shape, int dim) => new()
    {
        Query = bind.Matrix(prefix + "attn_q.weight", shape.QueryDim, dim),
        Key = bind.Matrix(prefix + "attn_k.weight", shape.KvDim, dim),
        Value = bind.Matrix(prefix + "attn_v.weight", shape.KvDim, dim),
        Output = bind.Matrix(prefix + "attn_output.weight", dim, shape.QueryDim),
        QueryBias = bind.OptionalVector(prefix + "attn_q.bias", shape.QueryDim),
        KeyBias = bind.OptionalVector(prefix + "attn_k.bias", shape.KvDim),
        ValueBias = bind.OptionalVector(prefix + "attn_v.bias", shape.KvDim),
        QueryNorm = bind.OptionalVector(prefix + "attn_q_norm.weight", shape.HeadDim),
        KeyNorm = bind.OptionalVector(prefix + "attn_k_norm.weight", shape.HeadDim),
    };
}

/// <summary>Rope's cos and sin for every token of a batch: <see cref="Pairs"/> of each per row.</summary>
internal readonly unsafe struct RopeTable(float* cos, float* sin, int pairs)
{
    public float* Cos { get; } = cos;
    public float* Sin { get; } = sin;
    public int Pairs { get; } = pairs;
}

/// <summary>Where an attention block keeps a batch's queries, keys, values and attention output (rows of the batch's tokens).</summary>
internal readonly unsafe struct AttentionBuffers(float* queries, float* keys, float* values, float* output)
{
    public float* Queries { get; } = queries;
    public float* Keys { get; } = keys;
    public float* Values { get; } = values;
    public float* Output { get; } = output;
}

/// <summary>
/// Grouped-query self-attention over the KV cache, llama.cpp's <c>build_attn</c> with the projections around it:
/// <c>out = Wo · Attention(rope(norm(Wq·x + bq)), rope(norm(Wk·x + bk)), Wv·x + bv)</c>, the keys and values of the
/// batch stored in the cache first.
/// </summary>
internal static unsafe class SelfAttention
{
    /// <summary><paramref name="output"/> may be <paramref name="input"/>: the input is consumed before the output is written.</summary>
    public static void Forward(IBackend backend, in AttentionWeights w, in AttentionShape shape, in AttentionBuffers buffers, in RopeTable rope,
        KvCache cache, int layer, ForwardBatch batch, float* input, float* output)
    {
        int n = batch.Count;
        float* q = buffers.Queries, k = buffers.Keys, v = buffers.Values;
        // Biases (where the family has them) are added as the products are stored.
        backend.MatMul([new MatMulTarget(w.Query, q, w.QueryBias), new MatMulTarget(w.Key, k, w.KeyBias), new MatMulTarget(w.Value, v, w.ValueBias)], input, n);
        if (w.QueryNorm != null) backend.RmsNorm(q, w.QueryNorm, q, n * shape.Heads, shape.HeadDim, shape.NormEpsilon);
        if (w.KeyNorm != null) backend.RmsNorm(k, w.KeyNorm, k, n * shape.KvHeads, shape.HeadDim, shape.NormEpsilon);
        backend.Rope(q, n, shape.QueryDim, shape.HeadDim, rope.Cos, rope.Sin, rope.Pairs, shape.RopeLayout);
        backend.Rope(k, n, shape.KvDim, shape.HeadDim, rope.Cos, rope.Sin, rope.Pairs, shape.RopeLayout);
        backend.StoreKeysValues(cache, layer, batch, k, v);
        backend.Attention(cache, layer, batch, q, buffers.Output, shape.Heads, shape.Scoring);
        backend.MatMul(w.Output, buffers.Output, n, output);
    }
}
