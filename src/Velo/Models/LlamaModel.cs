using Velo.Formats;
using Velo.Inference;
using Velo.Kernels;
using Velo.Tensors;
using Velo.Threading;

namespace Velo.Models;

/// <summary>
/// A Llama-family decoder (Llama 2/3, Mistral, Qwen2, Qwen3): pre-norm blocks of grouped-query attention with rope
/// and a SwiGLU feed-forward network. Weights stay in the memory-mapped GGUF file.
/// <code>
/// h   = x + Wo · Attention(rope(Wq·norm(x)), rope(Wk·norm(x)), Wv·norm(x))
/// out = h + Wdown · (silu(Wgate·norm(h)) ⊙ Wup·norm(h))
/// </code>
/// </summary>
public sealed unsafe class LlamaModel : IDisposable
{
    private LlamaModel(GgufFile file, LlamaConfig config)
    {
        File = file;
        Config = config;
        Weights = new LlamaWeights(file, config);
    }

    public GgufFile File { get; }
    public LlamaConfig Config { get; }
    public LlamaWeights Weights { get; }

    public static LlamaModel Load(string path)
    {
        var file = GgufFile.Open(path);
        try
        {
            return new LlamaModel(file, LlamaConfig.FromGguf(file));
        }
        catch
        {
            file.Dispose();
            throw;
        }
    }

    /// <summary>Runs the batch through the model, appending its keys and values to the cache (each sequence's tokens
    /// must continue it: <see cref="KvCache.Append"/>), and writes the logits
    /// of the tokens that asked for them to <see cref="LlamaState.Logits"/>, one row each in batch order.</summary>
    public void Forward(LlamaState s, ForwardBatch batch)
    {
        var c = Config;
        int n = batch.Count;
        Validate(s, batch);
        s.Cache.Append(batch);
        float* x = s.X, xb = s.Xb, q = s.Q, k = s.K, v = s.V, att = s.AttentionOut, gate = s.Gate, up = s.Up;

        for (int i = 0; i < n; i++)
            Dequantize.Row(Weights.TokenEmbedding.Type, Weights.TokenEmbedding.RowSpan(batch.Tokens[i]), new Span<float>(x + (long)i * c.Dim, c.Dim));
        ComputeRopeTables(s, batch);

        for (int l = 0; l < c.Layers; l++)
        {
            ref readonly var w = ref Weights.Layers[l];

            NormalizeRows(x, w.AttentionNorm, xb, n);
            MatMul.Multiply([new MatMulTarget(w.Query, q), new MatMulTarget(w.Key, k), new MatMulTarget(w.Value, v)], xb, n, s.Pool);
            for (int i = 0; i < n; i++)
            {
                var qi = Row(q, i, c.QueryDim);
                var ki = Row(k, i, c.KvDim);
                var vi = Row(v, i, c.KvDim);
                if (w.QueryBias != null) Elementwise.Add(qi, Vector(w.QueryBias, c.QueryDim), qi);
                if (w.KeyBias != null) Elementwise.Add(ki, Vector(w.KeyBias, c.KvDim), ki);
                if (w.ValueBias != null) Elementwise.Add(vi, Vector(w.ValueBias, c.KvDim), vi);
                if (w.QueryNorm != null) NormalizeHeads(qi, w.QueryNorm);
                if (w.KeyNorm != null) NormalizeHeads(ki, w.KeyNorm);
                var cos = Row(s.RopeCos, i, c.RopeDims / 2);
                var sin = Row(s.RopeSin, i, c.RopeDims / 2);
                Rope.Rotate(qi, c.HeadDim, cos, sin, c.RopeLayout);
                Rope.Rotate(ki, c.HeadDim, cos, sin, c.RopeLayout);
            }
            s.Cache.Store(l, batch, k, v);

            fixed (int* positions = batch.Positions)
            fixed (int* sequences = batch.Sequences)
            {
                var args = new Attention.Arguments
                {
                    Queries = q, Output = att, Positions = positions, Sequences = sequences, Rows = n, Heads = c.Heads,
                    Cache = s.Cache.Layer(l),
                };
                Attention.Compute(args, s.Pool);
            }
            MatMul.Multiply(w.Output, att, n, xb, s.Pool);
            AddInPlace(x, xb, (long)n * c.Dim);

            NormalizeRows(x, w.FfnNorm, xb, n);
            MatMul.Multiply([new MatMulTarget(w.Gate, gate), new MatMulTarget(w.Up, up)], xb, n, s.Pool);
            var hidden = new Span<float>(gate, n * c.FfnDim);
            Activations.SwiGLU(hidden, new ReadOnlySpan<float>(up, n * c.FfnDim), hidden);
            MatMul.Multiply(w.Down, gate, n, xb, s.Pool);
            AddInPlace(x, xb, (long)n * c.Dim);
        }

        int rows = 0;
        for (int i = 0; i < n; i++)
            if (batch.WantLogits[i])
                RmsNorm.Apply(Row(x, i, c.Dim), Vector(Weights.OutputNorm, c.Dim), Row(xb, rows++, c.Dim), c.NormEpsilon);
        if (rows > 0) MatMul.Multiply(Weights.Output, xb, rows, s.LogitsPointer, s.Pool);
    }

    private void Validate(LlamaState s, ForwardBatch batch)
    {
        if (batch.Count == 0) throw new ArgumentException("the batch is empty");
        if (batch.Count > s.MaxBatch) throw new ArgumentException($"the batch has {batch.Count} tokens, more than the state's {s.MaxBatch}");
        if (batch.LogitCount > s.MaxLogitRows) throw new ArgumentException($"the batch asks for {batch.LogitCount} rows of logits, more than the state's {s.MaxLogitRows}");
        for (int i = 0; i < batch.Count; i++)
        {
            if ((uint)batch.Tokens[i] >= (uint)Config.VocabSize)
                throw new ArgumentOutOfRangeException(nameof(batch), $"token id {batch.Tokens[i]} is outside the vocabulary of {Config.VocabSize}");
            if ((uint)batch.Positions[i] >= (uint)s.Cache.ContextLength)
                throw new ArgumentOutOfRangeException(nameof(batch), $"position {batch.Positions[i]} is beyond the context of {s.Cache.ContextLength} tokens");
            if ((uint)batch.Sequences[i] >= (uint)s.Cache.Sequences)
                throw new ArgumentOutOfRangeException(nameof(batch), $"sequence {batch.Sequences[i]} does not exist (the state holds {s.Cache.Sequences})");
        }
    }

    private void ComputeRopeTables(LlamaState s, ForwardBatch batch)
    {
        int pairs = Config.RopeDims / 2;
        var factors = Weights.RopeFrequencyFactors != null ? Vector(Weights.RopeFrequencyFactors, pairs) : default;
        for (int i = 0; i < batch.Count; i++)
            Rope.Angles(batch.Positions[i] * Config.RopeFrequencyScale, Config.RopeBase, factors, Row(s.RopeCos, i, pairs), Row(s.RopeSin, i, pairs));
    }

    private void NormalizeRows(float* x, float* weight, float* y, int rows)
    {
        var w = Vector(weight, Config.Dim);
        for (int i = 0; i < rows; i++) RmsNorm.Apply(Row(x, i, Config.Dim), w, Row(y, i, Config.Dim), Config.NormEpsilon);
    }

    /// <summary>Qwen3's per-head RMSNorm of queries and keys, one shared weight vector for every head.</summary>
    private void NormalizeHeads(Span<float> heads, float* weight)
    {
        var w = Vector(weight, Config.HeadDim);
        for (int h = 0; h < heads.Length; h += Config.HeadDim)
        {
            var head = heads.Slice(h, Config.HeadDim);
            RmsNorm.Apply(head, w, head, Config.NormEpsilon);
        }
    }

    private static Span<float> Row(float* matrix, int row, int length) => new(matrix + (long)row * length, length);

    private static ReadOnlySpan<float> Vector(float* vector, int length) => new(vector, length);

    private static void AddInPlace(float* x, float* y, long n)
    {
        var xs = new Span<float>(x, checked((int)n));
        Elementwise.Add(xs, new ReadOnlySpan<float>(y, (int)n), xs);
    }

    public LlamaState CreateState(int contextLength = 0, int maxBatch = 512, int sequences = 1, int maxLogitRows = 0, WorkerPool? pool = null,
        KvCacheTypes cacheTypes = default) =>
        new(this, contextLength > 0 ? contextLength : Config.ContextLength, maxBatch, sequences, maxLogitRows > 0 ? maxLogitRows : sequences, pool, cacheTypes);

    public void Dispose()
    {
        Weights.Dispose();
        File.Dispose();
    }
}
