using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using Velo.Threading;

namespace Velo.Kernels;

/// <summary>
/// Bidirectional multi-head attention within each sequence of a batch, straight from the batch's own rows of
/// queries, keys and values: every row attends to every row of its sequence in the batch (an encoder's input comes
/// whole in one batch, so nothing needs caching). Scores are <c>scale · q·k</c>. Rows are grouped by sequence
/// (in any order in the batch); each (sequence, head) is one work item: its keys transposed once into
/// scratch, so that scores for a tile of queries are FMAs over 8 (AVX2) or 32 (AVX-512) keys per step, then
/// softmax, then values weighted by probability over 16 or 32 dimensions per step.
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

    private const int QueryTile = 4, WideQueryTile = 8;

    /// <summary>Whether <see cref="Compute"/> runs the vector kernel (else the reference).</summary>
    public static bool Vectorized(int headDim) => headDim % 16 == 0 && Avx2.IsSupported && Fma.IsSupported;

    public static void Compute(in Arguments args, WorkerPool pool) => Compute(args, pool, allowAvx512: true);

    /// <summary>
    /// With AVX-512, heads of a multiple of 32 and a positive scale, <see cref="Head512"/> takes each (sequence, head):
    /// eight queries at a time, softmax fused over each scores row; else the AVX2 code, four queries at a time.
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
        bool wide = allowAvx512 && Avx512F.IsSupported && args.HeadDim % 32 == 0 && args.Scale > 0;
        int queryTile = wide ? WideQueryTile : QueryTile;
        int keyStep = wide ? 32 : 8;
        // Room for the worst case (one sequence of all rows), so the scratch is taken once: sort keys, the rows in
        // sequence order, each sequence's start, then each thread's transposed keys and a query tile's rows of scores.
        int stride = (rows + keyStep - 1) / keyStep * keyStep;
        long perThread = (long)(args.HeadDim + queryTile) * stride;
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
            ThreadScratch = (float*)(scratch + orderBytes), PerThread = (long)(args.HeadDim + queryTile) * stride,
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
            float* scores = scratch + (long)Args.HeadDim * Stride;
            int items = Segments * Args.Heads;
            // Each thread claims its next item before computing the current one, so the wide kernel can ask for the
            // next item's rows while it computes (the items are independent: who takes which changes no result).
            int item = Interlocked.Increment(ref Next) - 1;
            while (item < items)
            {
                int next = Interlocked.Increment(ref Next) - 1;
                var current = ItemOf(item);
                if (Wide) Head512(Args, current, next < items ? ItemOf(next) : default, Stride, scratch, scores);
                else Head(Args, current.Rows, current.Length, current.Head, Stride, scratch, scores);
                item = next;
            }
        }

        private readonly HeadItem ItemOf(int item)
        {
            int segment = item / Args.Heads;
            return new HeadItem(Order + Starts[segment], Starts[segment + 1] - Starts[segment], item % Args.Heads);
        }
    }

    /// <summary>One head of one sequence: its <paramref name="length"/> rows are <paramref name="rows"/>; <c>default</c>, none.</summary>
    private readonly struct HeadItem(int* rows, int length, int head)
    {
        public int* Rows { get; } = rows;
        public int Length { get; } = length;
        public int Head { get; } = head;
    }

    /// <summary>
    /// transposed[d * stride + j] = key j's dimension d of the head at <paramref name="offset"/>. Padding keys (from
    /// <paramref name="length"/> to <paramref name="stride"/>) are zero: never weighted, and their products stay finite.
    /// Blocks of 8 keys × 8 dimensions go through registers (<see cref="Transpose8x8"/>), the last keys short of 8 one
    /// by one: it only moves floats, so every path gets the same numbers.
    /// </summary>
    private static void TransposeKeys(in Arguments a, int* rows, int length, int offset, int stride, float* transposed)
    {
        int hd = a.HeadDim, width = a.Heads * hd, whole = length & ~7;
        float** k = stackalloc float*[8];
        for (int j = 0; j < whole; j += 8)
        {
            // The next block's keys, and this block's values for the first query tile's weighted sum: all far apart.
            for (int i = j + 8; i < Math.Min(j + 16, length); i++) PrefetchRow(a.Keys + (long)rows[i] * width + offset, hd);
            for (int i = j; i < j + 8; i++) PrefetchRow(a.Values + (long)rows[i] * width + offset, hd);
            for (int i = 0; i < 8; i++) k[i] = a.Keys + (long)rows[j + i] * width + offset;
            for (int d = 0; d < hd; d += 8) Transpose8x8(k, d, transposed + (long)d * stride + j, stride);
        }
        for (int j = whole; j < length; j++)
        {
            float* key = a.Keys + (long)rows[j] * width + offset;
            for (int d = 0; d < hd; d++) transposed[(long)d * stride + j] = key[d];
        }
        for (int d = 0; d < hd; d++)
            for (int j = length; j < stride; j++) transposed[(long)d * stride + j] = 0;
    }

    /// <summary>Dimensions d..d+7 of eight keys, as eight rows of <paramref name="stride"/> floats from <paramref name="output"/>
    /// (dimension d + i in row i): unpacks, shuffles within 128-bit lanes, then lanes swapped across.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Transpose8x8(float** k, int d, float* output, int stride)
    {
        var r0 = Avx.LoadVector256(k[0] + d);
        var r1 = Avx.LoadVector256(k[1] + d);
        var r2 = Avx.LoadVector256(k[2] + d);
        var r3 = Avx.LoadVector256(k[3] + d);
        var r4 = Avx.LoadVector256(k[4] + d);
        var r5 = Avx.LoadVector256(k[5] + d);
        var r6 = Avx.LoadVector256(k[6] + d);
        var r7 = Avx.LoadVector256(k[7] + d);
        // Within each 128-bit lane: t0 = (k0[0], k1[0], k0[1], k1[1]), t1 = (k0[2], k1[2], k0[3], k1[3]), ...
        var t0 = Avx.UnpackLow(r0, r1);
        var t1 = Avx.UnpackHigh(r0, r1);
        var t2 = Avx.UnpackLow(r2, r3);
        var t3 = Avx.UnpackHigh(r2, r3);
        var t4 = Avx.UnpackLow(r4, r5);
        var t5 = Avx.UnpackHigh(r4, r5);
        var t6 = Avx.UnpackLow(r6, r7);
        var t7 = Avx.UnpackHigh(r6, r7);
        // u0 = (k0[0], k1[0], k2[0], k3[0]) in each lane (lane 1 holding dimension 4), and so on.
        var u0 = Avx.Shuffle(t0, t2, 0x44);
        var u1 = Avx.Shuffle(t0, t2, 0xEE);
        var u2 = Avx.Shuffle(t1, t3, 0x44);
        var u3 = Avx.Shuffle(t1, t3, 0xEE);
        var u4 = Avx.Shuffle(t4, t6, 0x44);
        var u5 = Avx.Shuffle(t4, t6, 0xEE);
        var u6 = Avx.Shuffle(t5, t7, 0x44);
        var u7 = Avx.Shuffle(t5, t7, 0xEE);
        Avx.Store(output, Avx.Permute2x128(u0, u4, 0x20));
        Avx.Store(output + stride, Avx.Permute2x128(u1, u5, 0x20));
        Avx.Store(output + 2L * stride, Avx.Permute2x128(u2, u6, 0x20));
        Avx.Store(output + 3L * stride, Avx.Permute2x128(u3, u7, 0x20));
        Avx.Store(output + 4L * stride, Avx.Permute2x128(u0, u4, 0x31));
        Avx.Store(output + 5L * stride, Avx.Permute2x128(u1, u5, 0x31));
        Avx.Store(output + 6L * stride, Avx.Permute2x128(u2, u6, 0x31));
        Avx.Store(output + 7L * stride, Avx.Permute2x128(u3, u7, 0x31));
    }

    /// <summary>One head of one sequence: its <paramref name="length"/> rows are <paramref name="rows"/>.</summary>
    private static void Head(in Arguments a, int* rows, int length, int head, int stride, float* transposed, float* scores)
    {
        int hd = a.HeadDim, width = a.Heads * hd, offset = head * hd;
        TransposeKeys(a, rows, length, offset, stride, transposed);

        for (int q0 = 0; q0 < length; q0 += QueryTile)
        {
            int tile = Math.Min(QueryTile, length - q0);
            float* q0Row = a.Queries + (long)rows[q0] * width + offset;
            float* q1Row = a.Queries + (long)rows[q0 + Math.Min(1, tile - 1)] * width + offset;
            float* q2Row = a.Queries + (long)rows[q0 + Math.Min(2, tile - 1)] * width + offset;
            float* q3Row = a.Queries + (long)rows[q0 + Math.Min(3, tile - 1)] * width + offset;
            Scores(transposed, stride, hd, q0Row, q1Row, q2Row, q3Row, scores);
            for (int t = 0; t < tile; t++) Softmax256(scores + (long)t * stride, length, a.Scale);
            float* o0 = a.Output + (long)rows[q0] * width + offset;
            float* o1 = a.Output + (long)rows[q0 + Math.Min(1, tile - 1)] * width + offset;
            float* o2 = a.Output + (long)rows[q0 + Math.Min(2, tile - 1)] * width + offset;
            float* o3 = a.Output + (long)rows[q0 + Math.Min(3, tile - 1)] * width + offset;
            // A short tile repeats its last query: its rows are computed again and written alike.
            for (int t = tile; t < QueryTile; t++)
                new Span<float>(scores + (long)(tile - 1) * stride, stride).CopyTo(new Span<float>(scores + (long)t * stride, stride));
            WeightedValues(a.Values + offset, rows, length, width, hd, scores, stride, o0, o1, o2, o3);
        }
    }

    /// <summary>
    /// One row of <paramref name="length"/> scores into <c>softmax(scale · s)</c>, 8 at a time (padding up to the next
    /// 8 set to 0), in three passes over the row in L1: scaled and their max; <see cref="FloatExp.NonPositive(Vector256{float})"/>
    /// of each less the max, and their sum; each times 1/sum.
    /// </summary>
    private static void Softmax256(float* s, int length, float scale)
    {
        int whole = length & ~7;
        var padding = Vector256.GreaterThanOrEqual(Vector256<int>.Indices, Vector256.Create(length - whole)).AsSingle();
        var scaleV = Vector256.Create(scale);
        var max = Vector256.Create(float.NegativeInfinity);
        for (int j = 0; j < whole; j += 8)
        {
            var x = Avx.LoadVector256(s + j) * scaleV;
            Avx.Store(s + j, x);
            max = Avx.Max(max, x);
        }
        if (whole < length)
        {
            var x = Avx.LoadVector256(s + whole) * scaleV;
            Avx.Store(s + whole, x);
            max = Avx.Max(max, Vector256.ConditionalSelect(padding, Vector256.Create(float.NegativeInfinity), x));
        }
        var shift = Vector256.Create(MaxAcross(max));
        var sum = Vector256<float>.Zero;
        for (int j = 0; j < whole; j += 8)
        {
            var e = FloatExp.NonPositive(Avx.LoadVector256(s + j) - shift);
            Avx.Store(s + j, e);
            sum += e;
        }
        if (whole < length)
        {
            var e = Vector256.ConditionalSelect(padding, Vector256<float>.Zero, FloatExp.NonPositive(Avx.LoadVector256(s + whole) - shift));
            Avx.Store(s + whole, e);
            sum += e;
        }
        var inverse = Vector256.Create(1 / Vector256.Sum(sum));
        for (int j = 0; j < length; j += 8) Avx.Store(s + j, Avx.LoadVector256(s + j) * inverse);
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

    /// <summary>
    /// One head of one sequence with AVX-512, eight queries at a time: their scores against all keys (eight queries
    /// × 32 keys in 16 registers per step over the dimensions) into eight rows of scratch that stay in L1, each
    /// row's running max taken from the registers on the way; then the eight rows' exponentials and their sums in
    /// one pass over them, then the unnormalized weights times the values (eight queries × 32 dimensions in 16
    /// registers per key), each output scaled by its row's 1/sum as it is stored.
    /// </summary>
    private static void Head512(in Arguments a, HeadItem item, HeadItem next, int stride, float* transposed, float* scores)
    {
        int* rows = item.Rows;
        int length = item.Length, hd = a.HeadDim, width = a.Heads * hd, offset = item.Head * hd;
        TransposeKeys(a, rows, length, offset, stride, transposed);
        // The next item's rows, a share of them per query tile, so they come in over this item's whole run.
        int tiles = (length + WideQueryTile - 1) / WideQueryTile, nextPerTile = (next.Length + tiles - 1) / tiles;

        float** q = stackalloc float*[WideQueryTile];
        float** o = stackalloc float*[WideQueryTile];
        float* inverseSums = stackalloc float[WideQueryTile];
        var maxes = stackalloc Vector512<float>[WideQueryTile];
        for (int q0 = 0; q0 < length; q0 += WideQueryTile)
        {
            // A short tile repeats its last query: its row is computed again and written alike.
            for (int t = 0; t < WideQueryTile; t++)
            {
                long row = (long)rows[q0 + Math.Min(t, length - q0 - 1)] * width + offset;
                q[t] = a.Queries + row;
                o[t] = a.Output + row;
            }
            PrefetchRows(a, rows + q0 + WideQueryTile, Math.Min(WideQueryTile, length - q0 - WideQueryTile), offset);
            int nextFirst = q0 / WideQueryTile * nextPerTile;
            PrefetchNextItem(a, next, nextFirst, Math.Min(next.Length, nextFirst + nextPerTile));
            Scores512(transposed, stride, length, hd, q, scores, maxes);
            Softmax512(scores, stride, length, a.Scale, maxes, inverseSums);
            WeightedValues512(a.Values + offset, rows, length, width, hd, scores, stride, o, inverseSums);
        }
    }

    /// <summary>
    /// Asks for the next tile's query and output rows while this one computes: each query row is read by one tile
    /// only, a token's projections apart (1.5 KiB for MiniLM) and written by the products long before, so without this
    /// the tile's score loop waits on their misses; the output rows are written once, and their misses wait alike.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void PrefetchRows(in Arguments a, int* rows, int count, int offset)
    {
        long width = (long)a.Heads * a.HeadDim;
        for (int t = 0; t < count; t++)
        {
            PrefetchRow(a.Queries + rows[t] * width + offset, a.HeadDim);
            PrefetchRow(a.Output + rows[t] * width + offset, a.HeadDim);
        }
    }

    /// <summary>
    /// Asks for rows <paramref name="first"/>..<paramref name="end"/> of the next item's queries, keys and values into
    /// L2: a head's 128 bytes of rows 1.5 KiB apart (for MiniLM), which the products wrote long before and the
    /// hardware prefetchers do not follow, so its key transposition otherwise waited on each miss.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void PrefetchNextItem(in Arguments a, HeadItem next, int first, int end)
    {
        long width = (long)a.Heads * a.HeadDim, offset = (long)next.Head * a.HeadDim;
        for (int i = first; i < end; i++)
        {
            long row = next.Rows[i] * width + offset;
            for (int d = 0; d < a.HeadDim; d += 16)
            {
                Sse.Prefetch1(a.Queries + row + d);
                Sse.Prefetch1(a.Keys + row + d);
                Sse.Prefetch1(a.Values + row + d);
            }
        }
    }

    /// <summary>One head's <paramref name="length"/> floats from <paramref name="row"/> into L1, a cache line per 16.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void PrefetchRow(float* row, int length)
    {
        for (int d = 0; d < length; d += 16) Sse.Prefetch0(row + d);
    }

    /// <summary>
    /// Eight queries' q·k for all keys (and the zero padding), into eight rows of <paramref name="scores"/>;
    /// <paramref name="stride"/> is a multiple of 32. <paramref name="maxes"/>[t] gets 16 lanes whose max is query t's
    /// largest score over its <paramref name="length"/> keys (padding left out), taken from the registers before the
    /// store instead of in a pass over the row: a max is exact, so it is the same float in any order.
    /// </summary>
    private static void Scores512(float* transposed, int stride, int length, int hd, float** q, float* scores, Vector512<float>* maxes)
    {
        float* q0 = q[0], q1 = q[1], q2 = q[2], q3 = q[3], q4 = q[4], q5 = q[5], q6 = q[6], q7 = q[7];
        var none = Vector512.Create(float.NegativeInfinity);
        for (int t = 0; t < WideQueryTile; t++) maxes[t] = none;
        for (int j = 0; j < stride; j += 32)
        {
            Vector512<float> a0 = default, a1 = default, a2 = default, a3 = default, a4 = default, a5 = default, a6 = default, a7 = default;
            Vector512<float> b0 = default, b1 = default, b2 = default, b3 = default, b4 = default, b5 = default, b6 = default, b7 = default;
            float* keys = transposed + j;
            for (int d = 0; d < hd; d++, keys += stride)
            {
                var k = Avx512F.LoadVector512(keys);
                var l = Avx512F.LoadVector512(keys + 16);
                var w = Vector512.Create(q0[d]);
                a0 = Avx512F.FusedMultiplyAdd(w, k, a0);
                b0 = Avx512F.FusedMultiplyAdd(w, l, b0);
                w = Vector512.Create(q1[d]);
                a1 = Avx512F.FusedMultiplyAdd(w, k, a1);
                b1 = Avx512F.FusedMultiplyAdd(w, l, b1);
                w = Vector512.Create(q2[d]);
                a2 = Avx512F.FusedMultiplyAdd(w, k, a2);
                b2 = Avx512F.FusedMultiplyAdd(w, l, b2);
                w = Vector512.Create(q3[d]);
                a3 = Avx512F.FusedMultiplyAdd(w, k, a3);
                b3 = Avx512F.FusedMultiplyAdd(w, l, b3);
                w = Vector512.Create(q4[d]);
                a4 = Avx512F.FusedMultiplyAdd(w, k, a4);
                b4 = Avx512F.FusedMultiplyAdd(w, l, b4);
                w = Vector512.Create(q5[d]);
                a5 = Avx512F.FusedMultiplyAdd(w, k, a5);
                b5 = Avx512F.FusedMultiplyAdd(w, l, b5);
                w = Vector512.Create(q6[d]);
                a6 = Avx512F.FusedMultiplyAdd(w, k, a6);
                b6 = Avx512F.FusedMultiplyAdd(w, l, b6);
                w = Vector512.Create(q7[d]);
                a7 = Avx512F.FusedMultiplyAdd(w, k, a7);
                b7 = Avx512F.FusedMultiplyAdd(w, l, b7);
            }
            if (j < length)
            {
                // Lanes past the sequence's last key hold padding's zero scores: -inf for the max.
                var inA = Vector512.GreaterThan(Vector512.Create(length - j), Vector512<int>.Indices).AsSingle();
                var inB = Vector512.GreaterThan(Vector512.Create(length - j - 16), Vector512<int>.Indices).AsSingle();
                maxes[0] = MaxOf(maxes[0], a0, b0, inA, inB, none);
                maxes[1] = MaxOf(maxes[1], a1, b1, inA, inB, none);
                maxes[2] = MaxOf(maxes[2], a2, b2, inA, inB, none);
                maxes[3] = MaxOf(maxes[3], a3, b3, inA, inB, none);
                maxes[4] = MaxOf(maxes[4], a4, b4, inA, inB, none);
                maxes[5] = MaxOf(maxes[5], a5, b5, inA, inB, none);
                maxes[6] = MaxOf(maxes[6], a6, b6, inA, inB, none);
                maxes[7] = MaxOf(maxes[7], a7, b7, inA, inB, none);
            }
            float* s = scores + j;
            Avx512F.Store(s, a0);
            Avx512F.Store(s + 16, b0);
            Avx512F.Store(s += stride, a1);
            Avx512F.Store(s + 16, b1);
            Avx512F.Store(s += stride, a2);
            Avx512F.Store(s + 16, b2);
            Avx512F.Store(s += stride, a3);
            Avx512F.Store(s + 16, b3);
            Avx512F.Store(s += stride, a4);
            Avx512F.Store(s + 16, b4);
            Avx512F.Store(s += stride, a5);
            Avx512F.Store(s + 16, b5);
            Avx512F.Store(s += stride, a6);
            Avx512F.Store(s + 16, b6);
            Avx512F.Store(s += stride, a7);
            Avx512F.Store(s + 16, b7);
        }

        static Vector512<float> MaxOf(Vector512<float> max, Vector512<float> a, Vector512<float> b, Vector512<float> inA, Vector512<float> inB,
            Vector512<float> none) =>
            Vector512.Max(max, Vector512.Max(Vector512.ConditionalSelect(inA, a, none), Vector512.ConditionalSelect(inB, b, none)));
    }

    /// <summary>
    /// Eight rows of <paramref name="length"/> scores, 16 at a time, into <c>exp(scale · (s − max))</c> (padding up to
    /// the next 16 set to 0), each row's max the max across its <paramref name="maxes"/> lanes; each row's sum of them
    /// to <paramref name="inverseSums"/> as 1/sum, by which the caller scales the weighted values. The rows go
    /// through together, so eight chains of exponentials and sums overlap; each row's sum adds its groups of 16 in
    /// order, as a row alone would.
    /// </summary>
    private static void Softmax512(float* scores, int stride, int length, float scale, Vector512<float>* maxes, float* inverseSums)
    {
        int whole = length & ~15;
        var padding = Vector512.GreaterThanOrEqual(Vector512<int>.Indices, Vector512.Create(length - whole)).AsSingle();
        // In base 2: 2^(c·s − c·max) with c = scale·log2 e.
        float c = scale * Log2E;
        var scaleV = Vector512.Create(c);
        var shifts = stackalloc Vector512<float>[WideQueryTile];
        var sums = stackalloc Vector512<float>[WideQueryTile];
        for (int t = 0; t < WideQueryTile; t++)
        {
            shifts[t] = Vector512.Create(-c * MaxAcross(maxes[t]));
            sums[t] = Vector512<float>.Zero;
        }
        for (int j = 0; j < whole; j += 16)
        {
            float* s = scores + j;
            for (int t = 0; t < WideQueryTile; t++, s += stride)
            {
                var e = Exp2(Avx512F.FusedMultiplyAdd(Avx512F.LoadVector512(s), scaleV, shifts[t]));
                Avx512F.Store(s, e);
                sums[t] += e;
            }
        }
        if (whole < length)
        {
            float* s = scores + whole;
            for (int t = 0; t < WideQueryTile; t++, s += stride)
            {
                var e = Exp2(Avx512F.FusedMultiplyAdd(Avx512F.LoadVector512(s), scaleV, shifts[t]));
                e = Vector512.ConditionalSelect(padding, Vector512<float>.Zero, e);
                Avx512F.Store(s, e);
                sums[t] += e;
            }
        }
        for (int t = 0; t < WideQueryTile; t++) inverseSums[t] = 1 / Vector512.Sum(sums[t]);
    }

    private const float Log2E = 1.44269504088896341f;

    /// <summary>
    /// 2^x for the softmax's x ≤ 0: x = n + f with n whole and |f| ≤ ½, 2^f by Cephes' exp2f polynomial (relative
    /// error 1.7e-7, below the scores' own rounding), times 2^n by <c>vscalefps</c>, which goes to 0 below the float
    /// range rather than wrapping. In base 2 the argument needs no Cody–Waite reduction by ln 2: six multiplies fewer
    /// per 16 weights than e^x, where the softmax's exponentials cost a fifth of a head's time beside its 64 FMAs per
    /// key and query.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<float> Exp2(Vector512<float> x)
    {
        var n = Vector512.Round(x);
        var f = x - n;
        var p = Vector512.Create(1.535336188319500e-4f);
        p = Avx512F.FusedMultiplyAdd(p, f, Vector512.Create(1.339887440266574e-3f));
        p = Avx512F.FusedMultiplyAdd(p, f, Vector512.Create(9.618437357674640e-3f));
        p = Avx512F.FusedMultiplyAdd(p, f, Vector512.Create(5.550332471162809e-2f));
        p = Avx512F.FusedMultiplyAdd(p, f, Vector512.Create(2.402264791363012e-1f));
        p = Avx512F.FusedMultiplyAdd(p, f, Vector512.Create(6.931472028550421e-1f));
        return Avx512F.Scale(Avx512F.FusedMultiplyAdd(p, f, Vector512<float>.One), n);
    }

    private static float MaxAcross(Vector512<float> v) => MaxAcross(Vector256.Max(v.GetLower(), v.GetUpper()));

    private static float MaxAcross(Vector256<float> m)
    {
        var n = Vector128.Max(m.GetLower(), m.GetUpper());
        n = Vector128.Max(n, Vector128.Shuffle(n, Vector128.Create(2, 3, 0, 1)));
        n = Vector128.Max(n, Vector128.Shuffle(n, Vector128.Create(1, 0, 3, 2)));
        return n.ToScalar();
    }

    /// <summary>Eight queries' Σ p·v over the keys, 32 dimensions per step (<paramref name="hd"/> a multiple of 32),
    /// each output times its row's <paramref name="inverseSums"/>.</summary>
    private static void WeightedValues512(float* values, int* rows, int length, int width, int hd, float* p, int stride,
        float** o, float* inverseSums)
    {
        for (int d = 0; d < hd; d += 32)
        {
            Vector512<float> a0 = default, a1 = default, a2 = default, a3 = default, a4 = default, a5 = default, a6 = default, a7 = default;
            Vector512<float> b0 = default, b1 = default, b2 = default, b3 = default, b4 = default, b5 = default, b6 = default, b7 = default;
            for (int j = 0; j < length; j++)
            {
                float* v = values + (long)rows[j] * width + d;
                var lo = Avx512F.LoadVector512(v);
                var hi = Avx512F.LoadVector512(v + 16);
                float* pj = p + j;
                var w = Vector512.Create(pj[0]);
                a0 = Avx512F.FusedMultiplyAdd(w, lo, a0);
                b0 = Avx512F.FusedMultiplyAdd(w, hi, b0);
                w = Vector512.Create(pj[stride]);
                a1 = Avx512F.FusedMultiplyAdd(w, lo, a1);
                b1 = Avx512F.FusedMultiplyAdd(w, hi, b1);
                w = Vector512.Create(pj[2L * stride]);
                a2 = Avx512F.FusedMultiplyAdd(w, lo, a2);
                b2 = Avx512F.FusedMultiplyAdd(w, hi, b2);
                w = Vector512.Create(pj[3L * stride]);
                a3 = Avx512F.FusedMultiplyAdd(w, lo, a3);
                b3 = Avx512F.FusedMultiplyAdd(w, hi, b3);
                w = Vector512.Create(pj[4L * stride]);
                a4 = Avx512F.FusedMultiplyAdd(w, lo, a4);
                b4 = Avx512F.FusedMultiplyAdd(w, hi, b4);
                w = Vector512.Create(pj[5L * stride]);
                a5 = Avx512F.FusedMultiplyAdd(w, lo, a5);
                b5 = Avx512F.FusedMultiplyAdd(w, hi, b5);
                w = Vector512.Create(pj[6L * stride]);
                a6 = Avx512F.FusedMultiplyAdd(w, lo, a6);
                b6 = Avx512F.FusedMultiplyAdd(w, hi, b6);
                w = Vector512.Create(pj[7L * stride]);
                a7 = Avx512F.FusedMultiplyAdd(w, lo, a7);
                b7 = Avx512F.FusedMultiplyAdd(w, hi, b7);
            }
            Store(o[0] + d, a0, b0, inverseSums[0]);
            Store(o[1] + d, a1, b1, inverseSums[1]);
            Store(o[2] + d, a2, b2, inverseSums[2]);
            Store(o[3] + d, a3, b3, inverseSums[3]);
            Store(o[4] + d, a4, b4, inverseSums[4]);
            Store(o[5] + d, a5, b5, inverseSums[5]);
            Store(o[6] + d, a6, b6, inverseSums[6]);
            Store(o[7] + d, a7, b7, inverseSums[7]);
        }

        static void Store(float* output, Vector512<float> lo, Vector512<float> hi, float inverseSum)
        {
            var scale = Vector512.Create(inverseSum);
            Avx512F.Store(output, lo * scale);
            Avx512F.Store(output + 16, hi * scale);
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
