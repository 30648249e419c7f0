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
        public float* KeyCache;      // sequences × contextLength × kvHeads × headDim
        public float* ValueCache;
        public int ContextLength;
    }

    public static void Compute(in Arguments args, WorkerPool pool)
    {
        int stride = ScoreStride(args.ContextLength);
        var job = new Job { Args = args, ScoreStride = stride, Scores = (float*)pool.SharedScratch((long)pool.ThreadCount * stride * sizeof(float)) };
        pool.Run(ref job);
    }

    /// <summary>Plain loops in double precision, for tests.</summary>
    public static void Reference(in Arguments a)
    {
        int kvDim = a.KvHeads * a.HeadDim;
        for (int i = 0; i < a.Rows; i++)
        for (int h = 0; h < a.Heads; h++)
        {
            int length = a.Positions[i] + 1;
            float* q = a.Queries + ((long)i * a.Heads + h) * a.HeadDim;
            long kvOffset = (long)a.Sequences[i] * a.ContextLength * kvDim + h / (a.Heads / a.KvHeads) * a.HeadDim;
            var scores = new double[length];
            double max = double.NegativeInfinity;
            for (int t = 0; t < length; t++)
            {
                float* k = a.KeyCache + kvOffset + (long)t * kvDim;
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
                for (int t = 0; t < length; t++) acc += scores[t] / sum * a.ValueCache[kvOffset + (long)t * kvDim + d];
                o[d] = (float)acc;
            }
        }
    }

    /// <summary>
    /// Hands out (head, row) items one at a time, head-major: rows of different lengths then balance across the
    /// threads, and during prefill consecutive items reread one head's keys and values while they are in cache.
    /// Each item's arithmetic depends only on its own row, so results do not depend on the batch or the threads.
    /// </summary>
    private struct Job : IParallelJob
    {
        public Arguments Args;
        public float* Scores; // ScoreStride floats per thread
        public int ScoreStride;
        public int NextItem;

        public void Execute(int threadIndex, int threadCount)
        {
            ref readonly var a = ref Args;
            int kvDim = a.KvHeads * a.HeadDim;
            float scale = 1f / MathF.Sqrt(a.HeadDim);
            float* scores = Scores + (long)threadIndex * ScoreStride;
            int items = a.Rows * a.Heads;
            while (true)
            {
                int item = Interlocked.Increment(ref NextItem) - 1;
                if (item >= items) return;
                int h = item / a.Rows, i = item % a.Rows;
                long kvOffset = (long)a.Sequences[i] * a.ContextLength * kvDim + h / (a.Heads / a.KvHeads) * a.HeadDim;
                long head = (long)i * a.Heads + h;
                Head(a.Queries + head * a.HeadDim, a.KeyCache + kvOffset, a.ValueCache + kvOffset, kvDim, a.HeadDim,
                    a.Positions[i] + 1, scale, scores, a.Output + head * a.HeadDim);
            }
        }
    }

    /// <summary>Scratch floats per thread: scores are written in whole groups of <see cref="KeyGroup"/>.</summary>
    private static int ScoreStride(int contextLength) => (contextLength + KeyGroup - 1) / KeyGroup * KeyGroup;

    private const int KeyGroup = 8;

    /// <summary>One query head against <paramref name="length"/> cached keys and values, <paramref name="stride"/> floats apart.</summary>
    private static void Head(float* q, float* keys, float* values, int stride, int headDim, int length, float scale, float* scores, float* output)
    {
        float max = ScoreKeys(q, keys, stride, headDim, length, scale, scores);
        float sum = Exponentiate(scores, length, max);
        WeightedSum(scores, length, values, stride, output, headDim, 1f / sum);
    }

    /// <summary>
    /// scores[t] = scale · q·k_t for every key, eight keys at a time so that one transposing reduction replaces
    /// eight horizontal sums; the last group repeats its final key in the unused lanes, so every key is scored by
    /// the same arithmetic wherever it falls. Returns the largest score.
    /// </summary>
    private static float ScoreKeys(float* q, float* keys, int stride, int headDim, int length, float scale, float* scores)
    {
        if (!Avx.IsSupported)
        {
            float best = float.NegativeInfinity;
            for (int t = 0; t < length; t++) best = MathF.Max(best, scores[t] = Dot(q, keys + (long)t * stride, headDim) * scale);
            return best;
        }

        var maxima = Vector256.Create(float.NegativeInfinity);
        var scales = Vector256.Create(scale);
        int vectorDims = headDim & ~7;
        for (int t = 0; t < length; t += KeyGroup)
        {
            float* k0 = keys + (long)t * stride;
            long last = length - 1 - t;
            // Offsets of the group's keys from k0, clamped to the last key.
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
                dots += Vector256.Create(TailDot(q, k0, vectorDims, headDim), TailDot(q, k0 + s1, vectorDims, headDim),
                    TailDot(q, k0 + s2, vectorDims, headDim), TailDot(q, k0 + s3, vectorDims, headDim),
                    TailDot(q, k0 + s4, vectorDims, headDim), TailDot(q, k0 + s5, vectorDims, headDim),
                    TailDot(q, k0 + s6, vectorDims, headDim), TailDot(q, k0 + s7, vectorDims, headDim));
            var scaled = dots * scales;
            scaled.Store(scores + t);
            maxima = Vector256.Max(maxima, scaled);
        }
        // Repeated lanes hold copies of real scores, so they cannot change the maximum.
        var m = Vector128.Max(maxima.GetLower(), maxima.GetUpper());
        m = Vector128.Max(m, Vector128.Shuffle(m, Vector128.Create(2, 3, 0, 1)));
        m = Vector128.Max(m, Vector128.Shuffle(m, Vector128.Create(1, 0, 3, 2)));
        return m.ToScalar();
    }

    /// <summary>scores[t] = exp(scores[t] - max) for t &lt; length, and returns their sum.</summary>
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
            var e = Vector256.Exp(Vector256.Load(scores + t) - maxima);
            // The last group's repeated lanes must not count.
            if (t + KeyGroup > length) e = Vector256.ConditionalSelect(Vector256.LessThan(lanes, Vector256.Create(length - t)).AsSingle(), e, default);
            e.Store(scores + t);
            sums += e;
        }
        return Vector256.Sum(sums);
    }

    private static float Dot(float* a, float* b, int n) => TailDot(a, b, 0, n);

    private static float TailDot(float* a, float* b, int from, int to)
    {
        float sum = 0;
        for (int i = from; i < to; i++) sum += a[i] * b[i];
        return sum;
    }

    /// <summary>
    /// output = norm · Σ_t weights[t] · values[t], the value rows <paramref name="stride"/> floats apart; 64 output
    /// floats stay in registers across all t, which are summed in order.
    /// </summary>
    private static void WeightedSum(float* weights, int length, float* values, int stride, float* output, int n, float norm)
    {
        int d = 0;
        if (Vector256.IsHardwareAccelerated)
        {
            var norms = Vector256.Create(norm);
            for (; d + 64 <= n; d += 64)
            {
                Vector256<float> o0 = default, o1 = default, o2 = default, o3 = default, o4 = default, o5 = default, o6 = default, o7 = default;
                float* v = values + d;
                for (int t = 0; t < length; t++, v += stride)
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
                (o0 * norms).Store(output + d);
                (o1 * norms).Store(output + d + 8);
                (o2 * norms).Store(output + d + 16);
                (o3 * norms).Store(output + d + 24);
                (o4 * norms).Store(output + d + 32);
                (o5 * norms).Store(output + d + 40);
                (o6 * norms).Store(output + d + 48);
                (o7 * norms).Store(output + d + 56);
            }
            for (; d + 8 <= n; d += 8)
            {
                Vector256<float> o = default;
                float* v = values + d;
                for (int t = 0; t < length; t++, v += stride)
                    o = Vector256.FusedMultiplyAdd(Vector256.Create(weights[t]), Vector256.Load(v), o);
                (o * norms).Store(output + d);
            }
        }
        for (; d < n; d++)
        {
            float acc = 0;
            for (int t = 0; t < length; t++) acc += weights[t] * values[(long)t * stride + d];
            output[d] = acc * norm;
        }
    }
}
