using Velo.Kernels;
using Velo.Runtime;
using Velo.Tensors;
using Velo.Threading;

namespace Velo.Backends.Cpu;

/// <summary>The op set on the CPU: the SIMD kernels, with matrix products and attention shared out over a worker pool.</summary>
internal sealed unsafe class CpuBackend(WorkerPool pool) : IBackend
{
    public void EmbeddingLookup(in WeightMatrix table, ReadOnlySpan<int> tokens, float* output)
    {
        for (int t = 0; t < tokens.Length; t++)
            Dequantize.Row(table.Type, table.RowSpan(tokens[t]), Row(output, t, table.Cols));
    }

    public void MatMul(in WeightMatrix weights, float* x, int rows, float* y) => Kernels.MatMul.Multiply(weights, x, rows, y, pool);

    public void MatMul(ReadOnlySpan<MatMulTarget> targets, float* x, int rows) => Kernels.MatMul.Multiply(targets, x, rows, pool);

    public void RmsNorm(float* x, float* weight, float* y, int rows, int width, float epsilon)
    {
        var w = new ReadOnlySpan<float>(weight, width);
        for (int i = 0; i < rows; i++) Kernels.RmsNorm.Apply(Row(x, i, width), w, Row(y, i, width), epsilon);
    }

    /// <summary>Rows shared out over the pool from this many on (an encoder's batch); fewer are not worth waking the workers.</summary>
    private const int ParallelNormRows = 64;

    public void LayerNorm(float* x, float* weight, float* bias, float* y, int rows, int width, float epsilon)
    {
        var job = new LayerNormJob { X = x, Weight = weight, Bias = bias, Y = y, Rows = rows, Width = width, Epsilon = epsilon };
        if (rows >= ParallelNormRows) pool.Run(ref job);
        else job.Execute(0, 1);
    }

    /// <summary>LayerNorm of rows handed out in chunks of 16: each row is normalized alone, so the results do not depend on the split.</summary>
    private struct LayerNormJob : IParallelJob
    {
        public float* X, Weight, Bias, Y;
        public int Rows, Width;
        public float Epsilon;
        public int NextChunk;

        public void Execute(int threadIndex, int threadCount)
        {
            const int chunkRows = 16;
            var w = new ReadOnlySpan<float>(Weight, Width);
            var b = new ReadOnlySpan<float>(Bias, Width);
            for (int chunk; (chunk = Interlocked.Increment(ref NextChunk) - 1) * chunkRows < Rows;)
                for (int i = chunk * chunkRows, end = Math.Min(Rows, i + chunkRows); i < end; i++)
                    Kernels.LayerNorm.Apply(Row(X, i, Width), w, b, Row(Y, i, Width), Epsilon);
        }
    }

    public void Add(float* x, float* y, long count)
    {
        var xs = new Span<float>(x, checked((int)count));
        Elementwise.Add(xs, new ReadOnlySpan<float>(y, (int)count), xs);
    }

    public void Scale(float* x, long count, float factor) => Elementwise.Scale(new Span<float>(x, checked((int)count)), factor);

    public void SoftCap(float* x, long count, float cap) => Elementwise.SoftCap(new Span<float>(x, checked((int)count)), cap);

    public void RopeAngles(ReadOnlySpan<int> positions, float positionScale, float theta, float* frequencyFactors, int pairs, float* cos, float* sin,
        float magnitude = 1)
    {
        var factors = frequencyFactors != null ? new ReadOnlySpan<float>(frequencyFactors, pairs) : default;
        for (int i = 0; i < positions.Length; i++)
            Kernels.Rope.Angles(positions[i] * positionScale, theta, factors, Row(cos, i, pairs), Row(sin, i, pairs), magnitude);
    }

    public void Rope(float* x, int rows, int width, int headDim, float* cos, float* sin, int pairs, RopeLayout layout)
    {
        for (int i = 0; i < rows; i++)
            Kernels.Rope.Rotate(Row(x, i, width), headDim, Row(cos, i, pairs), Row(sin, i, pairs), layout);
    }

    public void StoreKeysValues(KvCache cache, int layer, ForwardBatch batch, float* keys, float* values) => cache.Store(layer, batch, keys, values);

    public void Attention(KvCache cache, int layer, ForwardBatch batch, float* queries, float* output, int heads, in AttentionScoring scoring)
    {
        fixed (int* positions = batch.Positions)
        fixed (int* sequences = batch.Sequences)
        {
            var args = new Kernels.Attention.Arguments
            {
                Queries = queries, Output = output, Positions = positions, Sequences = sequences, Rows = batch.Count, Heads = heads,
                Cache = cache.Layer(layer), Scale = scoring.Scale, SoftCap = scoring.SoftCap, Window = scoring.Window,
                Bidirectional = scoring.Bidirectional,
            };
            Kernels.Attention.Compute(args, pool);
        }
    }

    public void BatchAttention(ForwardBatch batch, float* queries, float* keys, float* values, float* output, int heads, int headDim, float scale)
    {
        fixed (int* sequences = batch.Sequences)
        {
            var args = new Kernels.BatchAttention.Arguments
            {
                Queries = queries, Keys = keys, Values = values, Output = output, Sequences = sequences, Rows = batch.Count,
                Heads = heads, HeadDim = headDim, Scale = scale,
            };
            Kernels.BatchAttention.Compute(args, pool);
        }
    }

    public void GatedActivation(GatedActivation activation, float* gate, float* up, long count)
    {
        var hidden = new Span<float>(gate, checked((int)count));
        switch (activation)
        {
            case Backends.GatedActivation.SiLU:
                Activations.SwiGLU(hidden, new ReadOnlySpan<float>(up, (int)count), hidden);
                break;
            case Backends.GatedActivation.GeluTanh:
                Activations.GeGLU(hidden, new ReadOnlySpan<float>(up, (int)count), hidden);
                break;
            default:
                throw new NotSupportedException($"the CPU backend has no {activation} activation");
        }
    }

    public void Pool(float* x, ForwardBatch batch, int width, Models.EmbeddingPooling pooling, bool normalize, float* output)
    {
        int n = batch.Count, row = 0;
        for (int i = 0; i < n; i++)
        {
            if (!batch.WantLogits[i]) continue;
            var o = Row(output, row++, width);
            int sequence = batch.Sequences[i];
            switch (pooling)
            {
                case Models.EmbeddingPooling.None:
                    Row(x, i, width).CopyTo(o);
                    continue;
                case Models.EmbeddingPooling.Mean:
                    o.Clear();
                    int count = 0;
                    for (int j = 0; j < n; j++)
                        if (batch.Sequences[j] == sequence)
                        {
                            Elementwise.Add(o, Row(x, j, width), o);
                            count++;
                        }
                    Elementwise.Scale(o, 1f / count);
                    break;
                case Models.EmbeddingPooling.Cls:
                    int first = -1;
                    for (int j = 0; j < n && first < 0; j++)
                        if (batch.Sequences[j] == sequence && batch.Positions[j] == 0) first = j;
                    if (first < 0) throw new ArgumentException($"sequence {sequence} has no first token in the batch to pool");
                    Row(x, first, width).CopyTo(o);
                    break;
                case Models.EmbeddingPooling.Last:
                    int last = -1;
                    for (int j = 0; j < n; j++)
                        if (batch.Sequences[j] == sequence && (last < 0 || batch.Positions[j] > batch.Positions[last])) last = j;
                    Row(x, last, width).CopyTo(o);
                    break;
                default:
                    throw new NotSupportedException($"the CPU backend has no {pooling} pooling");
            }
            // sentence-transformers' Normalize: x / max(‖x‖, 1e-12).
            if (normalize) Elementwise.Scale(o, 1f / MathF.Max(System.Numerics.Tensors.TensorPrimitives.Norm(o), 1e-12f));
        }
    }

    public int SelectRows(float* x, ReadOnlySpan<bool> selected, int width, float* output)
    {
        int rows = 0;
        for (int i = 0; i < selected.Length; i++)
            if (selected[i])
                Row(x, i, width).CopyTo(Row(output, rows++, width));
        return rows;
    }

    private static Span<float> Row(float* matrix, int row, int length) => new(matrix + (long)row * length, length);
}
