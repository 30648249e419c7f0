using System.Numerics.Tensors;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using Velo.Threading;

namespace Velo.Kernels;

/// <summary>
/// Bidirectional multi-head attention within each sequence of a batch, straight from the batch's own rows of
/// queries, keys and values: every row attends to every row of its sequence in the batch (an encoder's input comes
/// whole in one batch, so nothing needs caching). Scores are <c>scale · q·k</c>. Rows are grouped by sequence
/// (in any order in the batch); each (sequence, head) is one work item: its keys transposed once into
/// scratch, so that scores for four queries at a time are FMAs over 8 keys per vector, then softmax, then values
/// weighted by probability, four queries at a time over 8 dimensions per vector.
/// </summary>
internal static unsafe class BatchAttention
{
    public struct Arguments
    {
        public float* Queries;   // rows × heads × headDim, and so are keys, values and output
        public float* Keys;
        public float* Values;
        public float* Output;
        public int* Sequences;
        public int Rows;
        public int Heads;
        public int HeadDim;
        public float Scale;
    }

    private const int QueryTile = 4;

    /// <summary>Whether <see cref="Compute"/> runs the vector kernel (else the reference).</summary>
    public static bool Vectorized(int headDim) => headDim % 16 == 0 && Avx2.IsSupported && Fma.IsSupported;

    public static void Compute(in Arguments args, WorkerPool pool) => Compute(args, pool, allowAvx512: true);

    /// <summary>
    /// With AVX-512 and heads of a multiple of 32, scores take 32 keys and weighted values 32 dimensions per step in
    /// two 512-bit registers: every lane still sums the same products in the same order as the AVX2 code (one key's
    /// score over the dimensions, one dimension's output over the keys), so the results are the same bit for bit,
    /// and the 8 accumulators (against the AVX2 scores' 4) keep both FMA units busy.
    /// </summary>
    internal static void Compute(in Arguments args, WorkerPool pool, bool allowAvx512)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(args.Rows, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(args.Heads, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(args.HeadDim, 1);
        if (!Vectorized(args.HeadDim))
        {
            Reference(args);
            return;
        }
        int rows = args.Rows;
        bool wide = allowAvx512 && Avx512F.IsSupported && args.HeadDim % 32 == 0;
        int keyStep = wide ? 32 : 8;
        // Room for the worst case (one sequence of all rows), so the scratch is taken once: sort keys, the rows in
        // sequence order, each sequence's start, then each thread's transposed keys and four rows of scores.
        int stride = (rows + keyStep - 1) / keyStep * keyStep;
        long perThread = (long)(args.HeadDim + QueryTile) * stride;
        long orderBytes = ((long)rows * (sizeof(long) + 2 * sizeof(int)) + sizeof(int) + 63) / 64 * 64;
        byte* scratch = pool.SharedScratch(orderBytes + pool.ThreadCount * perThread * sizeof(float));
        long* keys = (long*)scratch;
        int* order = (int*)(keys + rows);
        int* starts = order + rows;
        // Sorting (sequence, row) keys groups rows by sequence, each sequence's rows in batch order.
        for (int i = 0; i < rows; i++) keys[i] = ((long)args.Sequences[i] << 32) | (uint)i;
        new Span<long>(keys, rows).Sort();
        int segments = 0, longest = 0;
        starts[0] = 0;
        for (int i = 0; i < rows; i++)
        {
            order[i] = (int)(keys[i] & 0xFFFFFFFF);
            if (i == rows - 1 || keys[i + 1] >> 32 != keys[i] >> 32)
            {
                starts[++segments] = i + 1;
                longest = Math.Max(longest, i + 1 - starts[segments - 1]);
            }
        }
        stride = (longest + keyStep - 1) / keyStep * keyStep;
        var job = new Job
        {
            Args = args, Order = order, Starts = starts, Segments = segments, Stride = stride, Wide = wide,
            ThreadScratch = (float*)(scratch + orderBytes), PerThread = (long)(args.HeadDim + QueryTile) * stride,
        };
        pool.Run(ref job);
    }

    private struct Job : IParallelJob
    {
        public Arguments Args;
        public int* Order;
        public int* Starts;
        public int Segments;
        public int Stride;
        public bool Wide;
        public float* ThreadScratch;
        public long PerThread;
        public int Next;

        public void Execute(int threadIndex, int threadCount)
        {
            float* scratch = ThreadScratch + threadIndex * PerThread;
            for (int item; (item = Interlocked.Increment(ref Next) - 1) < Segments * Args.Heads;)
            {
                int segment = item / Args.Heads, head = item % Args.Heads;
                Head(Args, Order + Starts[segment], Starts[segment + 1] - Starts[segment], head, Stride, scratch, scratch + (long)Args.HeadDim * Stride, Wide);
            }
        }
    }

    /// <summary>One head of one sequence: its <paramref name="length"/> rows are <paramref name="rows"/>.</summary>
    private static void Head(in Arguments a, int* rows, int length, int head, int stride, float* transposed, float* scores, bool wide)
    {
        int hd = a.HeadDim, width = a.Heads * hd, offset = head * hd;
        // transposed[d * stride + j] = key j's dimension d; padding keys are zero and never weighted.
        for (int j = 0; j < length; j++)
        {
            float* k = a.Keys + (long)rows[j] * width + offset;
            for (int d = 0; d < hd; d++) transposed[(long)d * stride + j] = k[d];
        }
        for (int d = 0; d < hd; d++)
            for (int j = length; j < stride; j++) transposed[(long)d * stride + j] = 0;

        for (int q0 = 0; q0 < length; q0 += QueryTile)
        {
            int tile = Math.Min(QueryTile, length - q0);
            float* q0Row = a.Queries + (long)rows[q0] * width + offset;
            float* q1Row = a.Queries + (long)rows[q0 + Math.Min(1, tile - 1)] * width + offset;
            float* q2Row = a.Queries + (long)rows[q0 + Math.Min(2, tile - 1)] * width + offset;
            float* q3Row = a.Queries + (long)rows[q0 + Math.Min(3, tile - 1)] * width + offset;
            if (wide) Scores512(transposed, stride, hd, q0Row, q1Row, q2Row, q3Row, scores);
            else Scores(transposed, stride, hd, q0Row, q1Row, q2Row, q3Row, scores);
            for (int t = 0; t < tile; t++)
            {
                var s = new Span<float>(scores + (long)t * stride, length);
                TensorPrimitives.Multiply(s, a.Scale, s);
                TensorPrimitives.Subtract(s, TensorPrimitives.Max(s), s);
                TensorPrimitives.Exp(s, s);
                TensorPrimitives.Multiply(s, 1f / TensorPrimitives.Sum(s), s);
            }
            float* o0 = a.Output + (long)rows[q0] * width + offset;
            float* o1 = a.Output + (long)rows[q0 + Math.Min(1, tile - 1)] * width + offset;
            float* o2 = a.Output + (long)rows[q0 + Math.Min(2, tile - 1)] * width + offset;
            float* o3 = a.Output + (long)rows[q0 + Math.Min(3, tile - 1)] * width + offset;
            // A short tile repeats its last query: its rows are computed again and written alike.
            for (int t = tile; t < QueryTile; t++)
                new Span<float>(scores + (long)(tile - 1) * stride, stride).CopyTo(new Span<float>(scores + (long)t * stride, stride));
            if (wide) WeightedValues512(a.Values + offset, rows, length, width, hd, scores, stride, o0, o1, o2, o3);
            else WeightedValues(a.Values + offset, rows, length, width, hd, scores, stride, o0, o1, o2, o3);
        }
    }

    /// <summary>Four queries' q·k for all keys (and the zero padding), into four rows of <paramref name="scores"/>.</summary>
    private static void Scores(float* transposed, int stride, int hd, float* q0, float* q1, float* q2, float* q3, float* scores)
    {
        for (int j = 0; j < stride; j += 8)
        {
            Vector256<float> a0 = default, a1 = default, a2 = default, a3 = default;
            for (int d = 0; d < hd; d++)
            {
                var k = Avx.LoadVector256(transposed + (long)d * stride + j);
                a0 = Fma.MultiplyAdd(Vector256.Create(q0[d]), k, a0);
                a1 = Fma.MultiplyAdd(Vector256.Create(q1[d]), k, a1);
                a2 = Fma.MultiplyAdd(Vector256.Create(q2[d]), k, a2);
                a3 = Fma.MultiplyAdd(Vector256.Create(q3[d]), k, a3);
            }
            Avx.Store(scores + j, a0);
            Avx.Store(scores + stride + j, a1);
            Avx.Store(scores + 2L * stride + j, a2);
            Avx.Store(scores + 3L * stride + j, a3);
        }
    }

    /// <summary>Four queries' Σ p·v over the keys, 16 dimensions at a time.</summary>
    private static void WeightedValues(float* values, int* rows, int length, int width, int hd, float* p, int stride,
        float* o0, float* o1, float* o2, float* o3)
    {
        for (int d = 0; d < hd; d += 16)
        {
            Vector256<float> a0 = default, b0 = default, a1 = default, b1 = default, a2 = default, b2 = default, a3 = default, b3 = default;
            for (int j = 0; j < length; j++)
            {
                float* v = values + (long)rows[j] * width + d;
                var lo = Avx.LoadVector256(v);
                var hi = Avx.LoadVector256(v + 8);
                var w = Vector256.Create(p[j]);
                a0 = Fma.MultiplyAdd(w, lo, a0);
                b0 = Fma.MultiplyAdd(w, hi, b0);
                w = Vector256.Create(p[stride + j]);
                a1 = Fma.MultiplyAdd(w, lo, a1);
                b1 = Fma.MultiplyAdd(w, hi, b1);
                w = Vector256.Create(p[2L * stride + j]);
                a2 = Fma.MultiplyAdd(w, lo, a2);
                b2 = Fma.MultiplyAdd(w, hi, b2);
                w = Vector256.Create(p[3L * stride + j]);
                a3 = Fma.MultiplyAdd(w, lo, a3);
                b3 = Fma.MultiplyAdd(w, hi, b3);
            }
            Avx.Store(o0 + d, a0);
            Avx.Store(o0 + d + 8, b0);
            Avx.Store(o1 + d, a1);
            Avx.Store(o1 + d + 8, b1);
            Avx.Store(o2 + d, a2);
            Avx.Store(o2 + d + 8, b2);
            Avx.Store(o3 + d, a3);
            Avx.Store(o3 + d + 8, b3);
        }
    }

    /// <summary><see cref="Scores"/> for 32 keys per step (<paramref name="stride"/> a multiple of 32).</summary>
    private static void Scores512(float* transposed, int stride, int hd, float* q0, float* q1, float* q2, float* q3, float* scores)
    {
        for (int j = 0; j < stride; j += 32)
        {
            Vector512<float> a0 = default, a1 = default, a2 = default, a3 = default;
            Vector512<float> b0 = default, b1 = default, b2 = default, b3 = default;
            for (int d = 0; d < hd; d++)
            {
                float* keys = transposed + (long)d * stride + j;
                var k = Avx512F.LoadVector512(keys);
                var l = Avx512F.LoadVector512(keys + 16);
                var q = Vector512.Create(q0[d]);
                a0 = Avx512F.FusedMultiplyAdd(q, k, a0);
                b0 = Avx512F.FusedMultiplyAdd(q, l, b0);
                q = Vector512.Create(q1[d]);
                a1 = Avx512F.FusedMultiplyAdd(q, k, a1);
                b1 = Avx512F.FusedMultiplyAdd(q, l, b1);
                q = Vector512.Create(q2[d]);
                a2 = Avx512F.FusedMultiplyAdd(q, k, a2);
                b2 = Avx512F.FusedMultiplyAdd(q, l, b2);
                q = Vector512.Create(q3[d]);
                a3 = Avx512F.FusedMultiplyAdd(q, k, a3);
                b3 = Avx512F.FusedMultiplyAdd(q, l, b3);
            }
            Avx512F.Store(scores + j, a0);
            Avx512F.Store(scores + j + 16, b0);
            Avx512F.Store(scores + stride + j, a1);
            Avx512F.Store(scores + stride + j + 16, b1);
            Avx512F.Store(scores + 2L * stride + j, a2);
            Avx512F.Store(scores + 2L * stride + j + 16, b2);
            Avx512F.Store(scores + 3L * stride + j, a3);
            Avx512F.Store(scores + 3L * stride + j + 16, b3);
        }
    }

    /// <summary><see cref="WeightedValues"/> for 32 dimensions per step (<paramref name="hd"/> a multiple of 32).</summary>
    private static void WeightedValues512(float* values, int* rows, int length, int width, int hd, float* p, int stride,
        float* o0, float* o1, float* o2, float* o3)
    {
        for (int d = 0; d < hd; d += 32)
        {
            Vector512<float> a0 = default, b0 = default, a1 = default, b1 = default, a2 = default, b2 = default, a3 = default, b3 = default;
            for (int j = 0; j < length; j++)
            {
                float* v = values + (long)rows[j] * width + d;
                var lo = Avx512F.LoadVector512(v);
                var hi = Avx512F.LoadVector512(v + 16);
                var w = Vector512.Create(p[j]);
                a0 = Avx512F.FusedMultiplyAdd(w, lo, a0);
                b0 = Avx512F.FusedMultiplyAdd(w, hi, b0);
                w = Vector512.Create(p[stride + j]);
                a1 = Avx512F.FusedMultiplyAdd(w, lo, a1);
                b1 = Avx512F.FusedMultiplyAdd(w, hi, b1);
                w = Vector512.Create(p[2L * stride + j]);
                a2 = Avx512F.FusedMultiplyAdd(w, lo, a2);
                b2 = Avx512F.FusedMultiplyAdd(w, hi, b2);
                w = Vector512.Create(p[3L * stride + j]);
                a3 = Avx512F.FusedMultiplyAdd(w, lo, a3);
                b3 = Avx512F.FusedMultiplyAdd(w, hi, b3);
            }
            Avx512F.Store(o0 + d, a0);
            Avx512F.Store(o0 + d + 16, b0);
            Avx512F.Store(o1 + d, a1);
            Avx512F.Store(o1 + d + 16, b1);
            Avx512F.Store(o2 + d, a2);
            Avx512F.Store(o2 + d + 16, b2);
            Avx512F.Store(o3 + d, a3);
            Avx512F.Store(o3 + d + 16, b3);
        }
    }

    /// <summary>The definition, in double precision: softmax(scale · q·k) · v over the rows of the query's sequence.</summary>
    public static void Reference(in Arguments a)
    {
        int hd = a.HeadDim, width = a.Heads * hd;
        var scores = new double[a.Rows];
        for (int i = 0; i < a.Rows; i++)
            for (int h = 0; h < a.Heads; h++)
            {
                float* q = a.Queries + (long)i * width + h * hd;
                double max = double.NegativeInfinity;
                for (int j = 0; j < a.Rows; j++)
                {
                    if (a.Sequences[j] != a.Sequences[i]) continue;
                    float* k = a.Keys + (long)j * width + h * hd;
                    double dot = 0;
                    for (int d = 0; d < hd; d++) dot += (double)q[d] * k[d];
                    scores[j] = a.Scale * dot;
                    max = Math.Max(max, scores[j]);
                }
                double sum = 0;
                for (int j = 0; j < a.Rows; j++)
                    if (a.Sequences[j] == a.Sequences[i]) sum += scores[j] = Math.Exp(scores[j] - max);
                for (int d = 0; d < hd; d++)
                {
                    double o = 0;
                    for (int j = 0; j < a.Rows; j++)
                        if (a.Sequences[j] == a.Sequences[i]) o += scores[j] * a.Values[(long)j * width + h * hd + d];
                    a.Output[(long)i * width + h * hd + d] = (float)(o / sum);
                }
            }
    }
}
