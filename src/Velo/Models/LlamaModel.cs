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
    private readonly float[] _inverseFrequencies;

    private LlamaModel(GgufFile file, LlamaConfig config)
    {
        File = file;
        Config = config;
        Weights = new LlamaWeights(file, config);
        _inverseFrequencies = new float[config.RopeDims / 2];
        for (int i = 0; i < _inverseFrequencies.Length; i++)
        {
            float frequency = MathF.Pow(config.RopeBase, -2f * i / config.RopeDims) * config.RopeFrequencyScale;
            if (Weights.RopeFrequencyFactors != null) frequency /= Weights.RopeFrequencyFactors[i];
            _inverseFrequencies[i] = frequency;
        }
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

    /// <summary>Runs the batch through the model, appending its keys and values to the cache, and writes the logits
    /// of the tokens that asked for them to <see cref="LlamaState.Logits"/>, one row each in batch order.</summary>
    public void Forward(LlamaState s, ForwardBatch batch)
    {
        var c = Config;
        int n = batch.Count;
        Validate(s, batch);
        float* x = s.X, xb = s.Xb, q = s.Q, k = s.K, v = s.V, att = s.AttentionOut, gate = s.Gate, up = s.Up;

        for (int i = 0; i < n; i++)
            Dequantize.Row(Weights.TokenEmbedding.Type, Weights.TokenEmbedding.RowSpan(batch.Tokens[i]), new Span<float>(x + (long)i * c.Dim, c.Dim));
        ComputeRopeTables(s, batch);

        for (int l = 0; l < c.Layers; l++)
        {
            ref readonly var w = ref Weights.Layers[l];

            for (int i = 0; i < n; i++) InterimKernels.RmsNorm(x + (long)i * c.Dim, w.AttentionNorm, xb + (long)i * c.Dim, c.Dim, c.NormEpsilon);
            MatMul.Multiply(w.Query, xb, n, q, s.Pool);
            MatMul.Multiply(w.Key, xb, n, k, s.Pool);
            MatMul.Multiply(w.Value, xb, n, v, s.Pool);
            for (int i = 0; i < n; i++)
            {
                float* qi = q + (long)i * c.QueryDim, ki = k + (long)i * c.KvDim, vi = v + (long)i * c.KvDim;
                if (w.QueryBias != null) AddInPlace(qi, w.QueryBias, c.QueryDim);
                if (w.KeyBias != null) AddInPlace(ki, w.KeyBias, c.KvDim);
                if (w.ValueBias != null) AddInPlace(vi, w.ValueBias, c.KvDim);
                if (w.QueryNorm != null)
                    for (int h = 0; h < c.Heads; h++) InterimKernels.RmsNorm(qi + h * c.HeadDim, w.QueryNorm, qi + h * c.HeadDim, c.HeadDim, c.NormEpsilon);
                if (w.KeyNorm != null)
                    for (int h = 0; h < c.KvHeads; h++) InterimKernels.RmsNorm(ki + h * c.HeadDim, w.KeyNorm, ki + h * c.HeadDim, c.HeadDim, c.NormEpsilon);
                float* cos = s.RopeCos + (long)i * c.RopeDims / 2, sin = s.RopeSin + (long)i * c.RopeDims / 2;
                bool neox = c.RopeLayout == RopeLayout.NeoX;
                InterimRope.Apply(qi, c.Heads, c.HeadDim, c.RopeDims, cos, sin, neox);
                InterimRope.Apply(ki, c.KvHeads, c.HeadDim, c.RopeDims, cos, sin, neox);
                int seq = batch.Sequences[i], pos = batch.Positions[i];
                new ReadOnlySpan<float>(ki, c.KvDim).CopyTo(new Span<float>(s.Cache.KeyRow(l, seq, pos), c.KvDim));
                new ReadOnlySpan<float>(vi, c.KvDim).CopyTo(new Span<float>(s.Cache.ValueRow(l, seq, pos), c.KvDim));
            }

            fixed (int* positions = batch.Positions)
            fixed (int* sequences = batch.Sequences)
            {
                var args = new Attention.Arguments
                {
                    Queries = q, Output = att, Positions = positions, Sequences = sequences, Rows = n,
                    Heads = c.Heads, KvHeads = c.KvHeads, HeadDim = c.HeadDim,
                    KeyCache = s.Cache.Keys(l), ValueCache = s.Cache.Values(l), ContextLength = s.Cache.ContextLength,
                };
                Attention.Compute(args, s.Pool);
            }
            MatMul.Multiply(w.Output, att, n, xb, s.Pool);
            AddInPlace(x, xb, (long)n * c.Dim);

            for (int i = 0; i < n; i++) InterimKernels.RmsNorm(x + (long)i * c.Dim, w.FfnNorm, xb + (long)i * c.Dim, c.Dim, c.NormEpsilon);
            MatMul.Multiply(w.Gate, xb, n, gate, s.Pool);
            MatMul.Multiply(w.Up, xb, n, up, s.Pool);
            InterimKernels.SwiGlu(gate, up, gate, n * c.FfnDim);
            MatMul.Multiply(w.Down, gate, n, xb, s.Pool);
            AddInPlace(x, xb, (long)n * c.Dim);
        }

        int rows = 0;
        for (int i = 0; i < n; i++)
            if (batch.WantLogits[i])
                InterimKernels.RmsNorm(x + (long)i * c.Dim, Weights.OutputNorm, xb + (long)rows++ * c.Dim, c.Dim, c.NormEpsilon);
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
        int half = Config.RopeDims / 2;
        for (int i = 0; i < batch.Count; i++)
        {
            float pos = batch.Positions[i];
            for (int j = 0; j < half; j++)
            {
                float angle = pos * _inverseFrequencies[j];
                s.RopeCos[(long)i * half + j] = MathF.Cos(angle);
                s.RopeSin[(long)i * half + j] = MathF.Sin(angle);
            }
        }
    }

    private static void AddInPlace(float* x, float* y, long n) =>
        System.Numerics.Tensors.TensorPrimitives.Add(new ReadOnlySpan<float>(x, checked((int)n)), new ReadOnlySpan<float>(y, (int)n), new Span<float>(x, (int)n));

    public LlamaState CreateState(int contextLength = 0, int maxBatch = 512, int sequences = 1, int maxLogitRows = 0, WorkerPool? pool = null) =>
        new(this, contextLength > 0 ? contextLength : Config.ContextLength, maxBatch, sequences, maxLogitRows > 0 ? maxLogitRows : sequences, pool);

    public void Dispose()
    {
        Weights.Dispose();
        File.Dispose();
    }
}
