using Velo.Kernels;
using Velo.Runtime;
using Velo.Tensors;
using Velo.Threading;

namespace Velo.Backends.Cpu;

/// <summary>The op set on the CPU: the SIMD kernels, with matrix products and attention shared out over a worker pool.</summary>
internal sealed unsafe class CpuBackend(WorkerPool pool) : IBackend
{
    /// <summary>Each token's row of <paramref name="table"/> widened to floats; a prefill's or an encoder's rows are
    /// shared out over the pool like the norms (each row alone, so the same floats), as the table's rows are scattered
    /// far from the core and otherwise left the second thread idle while one thread waited on them.</summary>
    public void EmbeddingLookup(in WeightMatrix table, ReadOnlySpan<int> tokens, float* output)
    {
        fixed (int* ids = tokens)
            Share(new EmbeddingRows { Table = table, Tokens = ids, Output = output }, tokens.Length, ChunkRows, ParallelRows);
    }

    private struct EmbeddingRows : IRangeOp
    {
        public WeightMatrix Table;
        public int* Tokens;
        public float* Output;

        public readonly void Run(int first, int end)
        {
            for (int t = first; t < end; t++)
                Dequantize.Row(Table.Type, Table.RowSpan(Tokens[t]), Row(Output, t, Table.Cols));
        }
    }

    public void MatMul(in WeightMatrix weights, float* x, int rows, float* y) => Kernels.MatMul.Multiply(weights, x, rows, y, pool);

    public void MatMul(ReadOnlySpan<MatMulTarget> targets, float* x, int rows) => Kernels.MatMul.Multiply(targets, x, rows, pool);

    public void RmsNorm(float* x, float* weight, float* y, int rows, int width, float epsilon) =>
        Share(new RmsNormRows { X = x, Weight = weight, Y = y, Width = width, Epsilon = epsilon }, rows, ChunkRows, ParallelRows);

    private struct RmsNormRows : IRangeOp
    {
        public float* X, Weight, Y;
        public int Width;
        public float Epsilon;

        public readonly void Run(int first, int end)
        {
            var w = new ReadOnlySpan<float>(Weight, Width);
            for (int i = first; i < end; i++) Kernels.RmsNorm.Apply(Row(X, i, Width), w, Row(Y, i, Width), Epsilon);
        }
    }

    public void LayerNorm(float* x, float* weight, float* bias, float* y, int rows, int width, float epsilon) =>
        Share(new LayerNormRows { X = x, Weight = weight, Bias = bias, Y = y, Width = width, Epsilon = epsilon }, rows, ChunkRows, ParallelRows);

    private struct LayerNormRows : IRangeOp
    {
        public float* X, Weight, Bias, Y;
        public int Width;
        public float Epsilon;

        public readonly void Run(int first, int end)
        {
            var w = new ReadOnlySpan<float>(Weight, Width);
            var b = new ReadOnlySpan<float>(Bias, Width);
            for (int i = first; i < end; i++) Kernels.LayerNorm.Apply(Row(X, i, Width), w, b, Row(Y, i, Width), Epsilon);
        }
    }

    /// <summary>
    /// Row-wise ops (norms, rope) are shared out over the pool from this many rows on (prefill, an encoder's batch);
    /// fewer are not worth waking the workers. A prefill of 512 tokens otherwise left the second core idle for about
    /// 1 % of the profile's samples.
    /// </summary>
    private const int ParallelRows = 64;

    private const int ChunkRows = 16;

    /// <summary>Element-wise ops likewise, from this many elements on (64 rows of 512), in chunks of whole vectors.</summary>
    private const int ParallelElements = 64 * 512, ChunkElements = 8192;

    /// <summary>An op over a range of rows or elements, each computed alone: the results do not depend on how the range is split.</summary>
    private interface IRangeOp
    {
        void Run(int first, int end);
    }

    /// <summary>Hands out chunks of the range to the pool's threads.</summary>
    private struct RangeJob<TOp> : IParallelJob where TOp : struct, IRangeOp
    {
        public TOp Op;
        public int Count, Chunk;
        public int NextChunk;

        public void Execute(int threadIndex, int threadCount)
        {
            for (int chunk; (chunk = Interlocked.Increment(ref NextChunk) - 1) < (Count + Chunk - 1) / Chunk;)
                Op.Run(chunk * Chunk, Math.Min(Count, (chunk + 1) * Chunk));
        }
    }

    /// <summary>Runs <paramref name="op"/> over 0..<paramref name="count"/>, on the pool's threads from <paramref name="parallelFrom"/> items on.</summary>
    private void Share<TOp>(TOp op, int count, int chunk, int parallelFrom) where TOp : struct, IRangeOp
    {
        if (count < parallelFrom || pool.ThreadCount == 1)
        {
            op.Run(0, count);
            return;
        }
        var job = new RangeJob<TOp> { Op = op, Count = count, Chunk = chunk };
        pool.Run(ref job);
    }

    public void Add(float* x, float* y, long count) =>
        Share(new AddElements { X = x, Y = y }, checked((int)count), ChunkElements, ParallelElements);

    private struct AddElements : IRangeOp
    {
        public float* X, Y;

        public readonly void Run(int first, int end)
        {
            var xs = new Span<float>(X + first, end - first);
            Elementwise.Add(xs, new ReadOnlySpan<float>(Y + first, end - first), xs);
        }
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

    public void Rope(float* x, int rows, int width, int headDim, float* cos, float* sin, int pairs, RopeLayout layout) =>
        Share(new RopeRows { X = x, Width = width, HeadDim = headDim, Cos = cos, Sin = sin, Pairs = pairs, Layout = layout }, rows, ChunkRows, ParallelRows);

    private struct RopeRows : IRangeOp
    {
        public float* X, Cos, Sin;
        public int Width, HeadDim, Pairs;
        public RopeLayout Layout;

        public readonly void Run(int first, int end)
        {
            for (int i = first; i < end; i++)
                Kernels.Rope.Rotate(Row(X, i, Width), HeadDim, Row(Cos, i, Pairs), Row(Sin, i, Pairs), Layout);
        }
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
        if (activation is not (Backends.GatedActivation.SiLU or Backends.GatedActivation.GeluTanh))
            throw new NotSupportedException($"the CPU backend has no {activation} activation");
        // Every element's result is the same wherever it lies (Activations), so chunks give the results of one pass.
        Share(new GatedElements { Gate = gate, Up = up, Activation = activation }, checked((int)count), ChunkElements, ParallelElements);
    }

    private struct GatedElements : IRangeOp
    {
        public float* Gate, Up;
        public GatedActivation Activation;

        public readonly void Run(int first, int end)
        {
            var hidden = new Span<float>(Gate + first, end - first);
            var up = new ReadOnlySpan<float>(Up + first, end - first);
            if (Activation == Backends.GatedActivation.SiLU) Activations.SwiGLU(hidden, up, hidden);
            else Activations.GeGLU(hidden, up, hidden);
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
