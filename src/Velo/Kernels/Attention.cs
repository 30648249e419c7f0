using System.Numerics.Tensors;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using Velo.Threading;

namespace Velo.Kernels;

/// <summary>
/// Causal multi-head attention of a batch of query rows against per-sequence KV caches, with grouped-query heads
/// (each KV head serves <c>heads / kvHeads</c> query heads). Row i attends to positions 0..positions[i] of the
/// cache of sequence sequences[i].
/// </summary>
public static unsafe class Attention
{
    public struct Arguments
    {
        public float* Queries;       // rows × heads × headDim
        public float* Output;        // rows × heads × headDim
        public int* Positions;
        public int* Sequences;
        public int Rows;
        public int Heads;
        public int KvHeads;
        public int HeadDim;
        public float* KeyCache;      // sequences × kvHeads × contextLength × headDim
        public float* ValueCache;
        public int ContextLength;
    }

    public static void Compute(in Arguments args, WorkerPool pool)
    {
        int stride = ScoreStride(args.ContextLength);
        var job = new Job { Args = args, ScoreStride = stride, RowsPerBlock = RowsPerBlock(args.Rows, stride) };
        job.Scores = (float*)pool.SharedScratch((long)pool.ThreadCount * job.RowsPerBlock * stride * sizeof(float));
        pool.Run(ref job);
    }

    /// <summary>Plain loops in double precision, for tests.</summary>
    public static void Reference(in Arguments a)
    {
        for (int i = 0; i < a.Rows; i++)
        for (int h = 0; h < a.Heads; h++)
        {
            int length = a.Positions[i] + 1;
            float* q = a.Queries + ((long)i * a.Heads + h) * a.HeadDim;
            long kvOffset = ((long)a.Sequences[i] * a.KvHeads + h / (a.Heads / a.KvHeads)) * a.ContextLength * a.HeadDim;
            var scores = new double[length];
            double max = double.NegativeInfinity;
            for (int t = 0; t < length; t++)
            {
                float* k = a.KeyCache + kvOffset + (long)t * a.HeadDim;
                double dot = 0;
                for (int d = 0; d < a.HeadDim; d++) dot += (double)q[d] * k[d];
                scores[t] = dot / Math.Sqrt(a.HeadDim);
                max = Math.Max(max, scores[t]);
            }
            double sum = 0;
            for (int t = 0; t < length; t++) sum += scores[t] = Math.Exp(scores[t] - max);
            float* o = a.Output + ((long)i * a.Heads + h) * a.HeadDim;
            for (int d = 0; d < a.HeadDim; d++)
            {
                double acc = 0;
                for (int t = 0; t < length; t++) acc += scores[t] / sum * a.ValueCache[kvOffset + (long)t * a.HeadDim + d];
                o[d] = (float)acc;
            }
        }
    }

    /// <summary>
    /// Hands out items of one head and up to <see cref="RowsPerBlock"/> consecutive rows, head-major: decode rows of
    /// different lengths balance across the threads, and prefill rows of a block score each group of keys and
    /// weigh each tile of values while it is in L1. Every row's arithmetic is the same whatever block it is in,
    /// so results do not depend on the batch or the threads.
    /// </summary>
    private struct Job : IParallelJob
    {
        public Arguments Args;
        public float* Scores; // RowsPerBlock × ScoreStride floats per thread
        public int ScoreStride;
        public int RowsPerBlock;
        public int NextItem;

        public void Execute(int threadIndex, int threadCount)
        {
            ref readonly var a = ref Args;
            float scale = 1f / MathF.Sqrt(a.HeadDim);
            float* scores = Scores + (long)threadIndex * RowsPerBlock * ScoreStride;
            int blocks = (a.Rows + RowsPerBlock - 1) / RowsPerBlock, items = blocks * a.Heads;
            float** pointers = stackalloc float*[4 * MaxBlockRows];
            int* lengths = stackalloc int[MaxBlockRows];
            var rows = new BlockRows
            {
                Queries = pointers, Outputs = pointers + MaxBlockRows, Keys = pointers + 2 * MaxBlockRows,
                Values = pointers + 3 * MaxBlockRows, Lengths = lengths,
            };
            while (true)
            {
                int item = Interlocked.Increment(ref NextItem) - 1;
                if (item >= items) return;
                int h = item / blocks, first = item % blocks * RowsPerBlock, count = Math.Min(RowsPerBlock, a.Rows - first);
                int kvHead = h / (a.Heads / a.KvHeads);
                for (int r = 0; r < count; r++)
                {
                    int i = first + r;
                    long kvOffset = ((long)a.Sequences[i] * a.KvHeads + kvHead) * a.ContextLength * a.HeadDim;
                    long head = (long)i * a.Heads + h;
                    rows.Queries[r] = a.Queries + head * a.HeadDim;
                    rows.Outputs[r] = a.Output + head * a.HeadDim;
                    rows.Keys[r] = a.KeyCache + kvOffset;
                    rows.Values[r] = a.ValueCache + kvOffset;
                    rows.Lengths[r] = a.Positions[i] + 1;
                }
                Block(rows, count, a.HeadDim, a.HeadDim, scale, scores, ScoreStride);
            }
        }
    }

    private const int MaxBlockRows = 16;
    private const int KeyGroup = 8;

    /// <summary>Keys whose values one pass of the weighted sum adds to a block's outputs: 32 rows of 64 floats fill 8 KB of L1.</summary>
    private const int ValueTile = 32;

    /// <summary>Per row of a block: where its query, output, keys and values are, and how many keys it sees.</summary>
    private struct BlockRows
    {
        public float** Queries, Outputs, Keys, Values;
        public int* Lengths;
    }

    /// <summary>
    /// Rows per item: one for small batches, whose items are few, and up to 16 for prefill, as long as a block's
    /// scores take at most 1 MB per thread (long contexts).
    /// </summary>
    private static int RowsPerBlock(int rows, int scoreStride) => Math.Clamp(Math.Min(rows / 16, (1 << 18) / scoreStride), 1, MaxBlockRows);

    /// <summary>Scratch floats per row: scores are written in whole groups of <see cref="KeyGroup"/>.</summary>
    private static int ScoreStride(int contextLength) => (contextLength + KeyGroup - 1) / KeyGroup * KeyGroup;

    /// <summary>
    /// The rows of a block against their cached keys and values, <paramref name="stride"/> floats apart. A row's
    /// scores are computed group by group and its outputs tile by tile, in the same order as for a block of one.
    /// </summary>
    private static void Block(in BlockRows rows, int count, int stride, int headDim, float scale, float* scores, int scoreStride)
    {
        int longest = 0;
        for (int r = 0; r < count; r++) longest = Math.Max(longest, rows.Lengths[r]);

        for (int t = 0; t < longest; t += KeyGroup)
            for (int r = 0; r < count; r++)
                if (t < rows.Lengths[r])
                    ScoreGroup(rows.Queries[r], rows.Keys[r] + (long)t * stride, stride, headDim, rows.Lengths[r] - t, scale, scores + (long)r * scoreStride + t);

        for (int r = 0; r < count; r++)
            new Span<float>(rows.Outputs[r], headDim).Clear();
        float* sums = stackalloc float[MaxBlockRows];
        for (int r = 0; r < count; r++)
        {
            float* s = scores + (long)r * scoreStride;
            sums[r] = Exponentiate(s, rows.Lengths[r], Max(s, rows.Lengths[r]));
        }
        // A single row has no one to share a tile with: its outputs then stay in registers throughout.
        int tile = count == 1 ? longest : ValueTile;
        for (int t = 0; t < longest; t += tile)
            for (int r = 0; r < count; r++)
                if (t < rows.Lengths[r])
                    AddWeightedValues(scores + (long)r * scoreStride, t, Math.Min(t + tile, rows.Lengths[r]), rows.Values[r], stride, rows.Outputs[r], headDim);
        for (int r = 0; r < count; r++)
        {
            var output = new Span<float>(rows.Outputs[r], headDim);
            TensorPrimitives.Multiply(output, 1f / sums[r], output);
        }
    }

    /// <summary>
    /// scores[j] = scale · q·k_j for the next min(8, <paramref name="remaining"/>) keys, eight at a time so that one
    /// transposing reduction replaces eight horizontal sums. A short group repeats its final key in the unused
    /// lanes, so every key is scored by the same arithmetic wherever it falls.
    /// </summary>
    private static void ScoreGroup(float* q, float* k0, int stride, int headDim, int remaining, float scale, float* scores)
    {
        if (!Avx.IsSupported)
        {
            for (int j = 0; j < Math.Min(KeyGroup, remaining); j++) scores[j] = Dot(q, k0 + (long)j * stride, 0, headDim) * scale;
            return;
        }
        int vectorDims = headDim & ~7;
        long last = remaining - 1;
        long s1 = Math.Min(1, last) * stride, s2 = Math.Min(2, last) * stride, s3 = Math.Min(3, last) * stride;
        long s4 = Math.Min(4, last) * stride, s5 = Math.Min(5, last) * stride, s6 = Math.Min(6, last) * stride, s7 = Math.Min(7, last) * stride;
        Vector256<float> a0 = default, a1 = default, a2 = default, a3 = default, a4 = default, a5 = default, a6 = default, a7 = default;
        for (int d = 0; d < vectorDims; d += 8)
        {
            var qv = Vector256.Load(q + d);
            float* k = k0 + d;
            a0 = Vector256.FusedMultiplyAdd(qv, Vector256.Load(k), a0);
            a1 = Vector256.FusedMultiplyAdd(qv, Vector256.Load(k + s1), a1);
            a2 = Vector256.FusedMultiplyAdd(qv, Vector256.Load(k + s2), a2);
            a3 = Vector256.FusedMultiplyAdd(qv, Vector256.Load(k + s3), a3);
            a4 = Vector256.FusedMultiplyAdd(qv, Vector256.Load(k + s4), a4);
            a5 = Vector256.FusedMultiplyAdd(qv, Vector256.Load(k + s5), a5);
            a6 = Vector256.FusedMultiplyAdd(qv, Vector256.Load(k + s6), a6);
            a7 = Vector256.FusedMultiplyAdd(qv, Vector256.Load(k + s7), a7);
        }
        // Pairwise sums leave key j's four partial sums in lane j of each 128-bit half.
        var lo = Avx.HorizontalAdd(Avx.HorizontalAdd(a0, a1), Avx.HorizontalAdd(a2, a3));
        var hi = Avx.HorizontalAdd(Avx.HorizontalAdd(a4, a5), Avx.HorizontalAdd(a6, a7));
        var dots = Avx.Permute2x128(lo, hi, 0x20) + Avx.Permute2x128(lo, hi, 0x31);
        if (vectorDims < headDim)
            dots += Vector256.Create(Dot(q, k0, vectorDims, headDim), Dot(q, k0 + s1, vectorDims, headDim),
                Dot(q, k0 + s2, vectorDims, headDim), Dot(q, k0 + s3, vectorDims, headDim),
                Dot(q, k0 + s4, vectorDims, headDim), Dot(q, k0 + s5, vectorDims, headDim),
                Dot(q, k0 + s6, vectorDims, headDim), Dot(q, k0 + s7, vectorDims, headDim));
        (dots * Vector256.Create(scale)).Store(scores);
    }

    private static float Dot(float* a, float* b, int from, int to)
    {
        float sum = 0;
        for (int i = from; i < to; i++) sum += a[i] * b[i];
        return sum;
    }

    // Rows are short (a few hundred scores while decoding): one inline loop beats a chain of library calls, each
    // with its own setup.
    private static float Max(float* scores, int length)
    {
        int t = 0;
        float max = float.NegativeInfinity;
        if (Vector256.IsHardwareAccelerated && length >= 8)
        {
            var maxima = Vector256.Load(scores);
            for (t = 8; t + 8 <= length; t += 8) maxima = Vector256.Max(maxima, Vector256.Load(scores + t));
            var m = Vector128.Max(maxima.GetLower(), maxima.GetUpper());
            m = Vector128.Max(m, Vector128.Shuffle(m, Vector128.Create(2, 3, 0, 1)));
            max = Vector128.Max(m, Vector128.Shuffle(m, Vector128.Create(1, 0, 3, 2))).ToScalar();
        }
        for (; t < length; t++) max = MathF.Max(max, scores[t]);
        return max;
    }

    /// <summary>scores[t] = exp(scores[t] - max) for t &lt; length; returns their sum.</summary>
    private static float Exponentiate(float* scores, int length, float max)
    {
        if (!Vector256.IsHardwareAccelerated)
        {
            float total = 0;
            for (int t = 0; t < length; t++) total += scores[t] = MathF.Exp(scores[t] - max);
            return total;
        }
        var maxima = Vector256.Create(max);
        var sums = Vector256<float>.Zero;
        var lanes = Vector256.Create(0, 1, 2, 3, 4, 5, 6, 7);
        for (int t = 0; t < length; t += KeyGroup)
        {
            // The scratch holds whole groups; lanes past the end must not count.
            var e = Vector256.Exp(Vector256.Load(scores + t) - maxima);
            if (t + KeyGroup > length) e = Vector256.ConditionalSelect(Vector256.LessThan(lanes, Vector256.Create(length - t)).AsSingle(), e, default);
            e.Store(scores + t);
            sums += e;
        }
        return Vector256.Sum(sums);
    }

    /// <summary>
    /// output += Σ_{t in [from, to)} weights[t] · values[t], the value rows <paramref name="stride"/> floats apart;
    /// 64 output floats stay in registers across the tile, and every output float sums its terms in order of t.
    /// </summary>
    private static void AddWeightedValues(float* weights, int from, int to, float* values, int stride, float* output, int n)
    {
        int d = 0;
        if (Vector256.IsHardwareAccelerated)
        {
            for (; d + 64 <= n; d += 64)
            {
                float* o = output + d;
                Vector256<float> o0 = Vector256.Load(o), o1 = Vector256.Load(o + 8), o2 = Vector256.Load(o + 16), o3 = Vector256.Load(o + 24);
                Vector256<float> o4 = Vector256.Load(o + 32), o5 = Vector256.Load(o + 40), o6 = Vector256.Load(o + 48), o7 = Vector256.Load(o + 56);
                float* v = values + (long)from * stride + d;
                for (int t = from; t < to; t++, v += stride)
                {
                    var w = Vector256.Create(weights[t]);
                    o0 = Vector256.FusedMultiplyAdd(w, Vector256.Load(v), o0);
                    o1 = Vector256.FusedMultiplyAdd(w, Vector256.Load(v + 8), o1);
                    o2 = Vector256.FusedMultiplyAdd(w, Vector256.Load(v + 16), o2);
                    o3 = Vector256.FusedMultiplyAdd(w, Vector256.Load(v + 24), o3);
                    o4 = Vector256.FusedMultiplyAdd(w, Vector256.Load(v + 32), o4);
                    o5 = Vector256.FusedMultiplyAdd(w, Vector256.Load(v + 40), o5);
                    o6 = Vector256.FusedMultiplyAdd(w, Vector256.Load(v + 48), o6);
                    o7 = Vector256.FusedMultiplyAdd(w, Vector256.Load(v + 56), o7);
                }
                o0.Store(o);
                o1.Store(o + 8);
                o2.Store(o + 16);
                o3.Store(o + 24);
                o4.Store(o + 32);
                o5.Store(o + 40);
                o6.Store(o + 48);
                o7.Store(o + 56);
            }
            for (; d + 8 <= n; d += 8)
            {
                var o = Vector256.Load(output + d);
                float* v = values + (long)from * stride + d;
                for (int t = from; t < to; t++, v += stride)
                    o = Vector256.FusedMultiplyAdd(Vector256.Create(weights[t]), Vector256.Load(v), o);
                o.Store(output + d);
            }
        }
        for (; d < n; d++)
        {
            float acc = output[d];
            for (int t = from; t < to; t++) acc += weights[t] * values[(long)t * stride + d];
            output[d] = acc;
        }
    }
}
