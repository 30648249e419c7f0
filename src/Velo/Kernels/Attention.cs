using System.Numerics.Tensors;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using Velo.Runtime;
using Velo.Tensors;
using Velo.Threading;

namespace Velo.Kernels;

/// <summary>
/// Causal multi-head attention of a batch of query rows against per-sequence KV caches, with grouped-query heads
/// (each KV head serves <c>heads / kvHeads</c> query heads). Row i attends to positions 0..positions[i] of
/// sequence sequences[i] in one layer of the KV memory, which it reads through a <see cref="KvLayerView"/>; with a
/// sliding window of W it sees only the last W of them (llama.cpp's <c>is_masked_swa</c>: key position p0 is
/// masked when p − p0 ≥ W), so the masked keys are never read. Scores are <c>scale · q·k</c>, soft-capped to
/// <c>cap · tanh(score / cap)</c> when a cap is set (Gemma 2). Cached
/// keys and values are F32, F16 or Q8_0 (each its own choice); both F16 halves and Q8_0 elements (an F16 scale
/// times an 8-bit integer, a product float holds exactly) are multiplied exactly, as if widened to float, so a
/// smaller cache changes results only by the rounding of what it stores.
/// </summary>
internal static unsafe class Attention
{
    public struct Arguments
    {
        public float* Queries;       // rows × heads × headDim
        public float* Output;        // rows × heads × headDim
        public int* Positions;
        public int* Sequences;
        public int Rows;
        public int Heads;            // a multiple of Cache.KvHeads; queries and outputs have rows of Cache.HeadDim
        public KvLayerView Cache;
        public float Scale;          // multiplies every q·k: 1/√headDim for most models
        public float SoftCap;        // 0: none
        public int Window;           // keys a row sees, its own included; 0: all before it
        public bool Bidirectional;   // every position the sequence holds (an encoder), not only those up to the row's
    }

    /// <summary>The first position row <paramref name="i"/> sees: the window's start, or 0.</summary>
    private static int FirstVisible(in Arguments a, int i) => a.Window > 0 ? Math.Max(0, a.Positions[i] - a.Window + 1) : 0;

    /// <summary>One past the last position row <paramref name="i"/> sees.</summary>
    private static int VisibleEnd(in Arguments a, int i) => a.Bidirectional ? a.Cache.Length(a.Sequences[i]) : a.Positions[i] + 1;

    public static void Compute(in Arguments args, WorkerPool pool)
    {
        Check(args);
        int stride = ScoreStride(args.Cache.ContextLength);
        var job = new Job { Args = args, ScoreStride = stride, RowsPerBlock = RowsPerBlock(args.Rows, stride) };
        job.Scores = (float*)pool.SharedScratch((long)pool.ThreadCount * job.RowsPerBlock * stride * sizeof(float));
        pool.Run(ref job);
    }

    /// <summary>The element types attention reads cached keys and values in.</summary>
    public static bool SupportsCacheType(GgmlType type) => type is GgmlType.F32 or GgmlType.F16 or GgmlType.Q8_0;

    /// <summary>Refuses what the kernels would misread: a cache type they do not know, or a row whose position its sequence does not hold.</summary>
    private static void Check(in Arguments a)
    {
        if (!SupportsCacheType(a.Cache.KeyType) || !SupportsCacheType(a.Cache.ValueType))
            throw new NotSupportedException($"A KV cache of {a.Cache.KeyType}/{a.Cache.ValueType} is not supported; use F32, F16 or Q8_0.");
        if (a.Heads % a.Cache.KvHeads != 0)
            throw new ArgumentException($"{a.Heads} query heads cannot share {a.Cache.KvHeads} KV heads evenly");
        if (!(a.Scale > 0) || !(a.SoftCap >= 0) || a.Window < 0)
            throw new ArgumentException($"attention needs a positive scale ({a.Scale}), a soft cap of 0 or more ({a.SoftCap}) and a window of 0 or more ({a.Window})");
        for (int i = 0; i < a.Rows; i++)
        {
            int sequence = a.Sequences[i];
            if ((uint)sequence >= (uint)a.Cache.Sequences || (uint)a.Positions[i] >= (uint)a.Cache.Length(sequence))
                throw new ArgumentException($"row {i} attends to position {a.Positions[i]} of sequence {sequence}, which the KV memory does not hold");
        }
    }

    /// <summary>Element <paramref name="index"/> of a cached head row as a float: the plain formula of each type.</summary>
    private static float CachedElement(byte* row, GgmlType type, int index) => type switch
    {
        GgmlType.F16 => (float)((Half*)row)[index],
        GgmlType.Q8_0 => (float)*(Half*)(row + index / 32 * Q8_0Row.BlockBytes) * ((sbyte*)row)[index / 32 * Q8_0Row.BlockBytes + 2 + index % 32],
        _ => ((float*)row)[index],
    };

    /// <summary>Plain loops in double precision, for tests.</summary>
    public static void Reference(in Arguments a)
    {
        Check(a);
        ref readonly var cache = ref a.Cache;
        int headDim = cache.HeadDim;
        for (int i = 0; i < a.Rows; i++)
        for (int h = 0; h < a.Heads; h++)
        {
            int first = FirstVisible(a, i), end = VisibleEnd(a, i);
            float* q = a.Queries + ((long)i * a.Heads + h) * headDim;
            var head = cache.Head(a.Sequences[i], h / (a.Heads / cache.KvHeads));
            var scores = new double[end];
            double max = double.NegativeInfinity;
            for (int t = first; t < end; t++)
            {
                double dot = 0;
                for (int d = 0; d < headDim; d++) dot += (double)q[d] * CachedElement(head.Keys + (long)t * cache.KeyRowBytes, cache.KeyType, d);
                scores[t] = dot * a.Scale;
                if (a.SoftCap > 0) scores[t] = a.SoftCap * Math.Tanh(scores[t] / a.SoftCap);
                max = Math.Max(max, scores[t]);
            }
            double sum = 0;
            for (int t = first; t < end; t++) sum += scores[t] = Math.Exp(scores[t] - max);
            float* o = a.Output + ((long)i * a.Heads + h) * headDim;
            for (int d = 0; d < headDim; d++)
            {
                double acc = 0;
                for (int t = first; t < end; t++) acc += scores[t] / sum * CachedElement(head.Values + (long)t * cache.ValueRowBytes, cache.ValueType, d);
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
            switch (Args.Cache.KeyType)
            {
                case GgmlType.F16: ExecuteWithKeys<F16Row>(threadIndex); break;
                case GgmlType.Q8_0: ExecuteWithKeys<Q8_0Row>(threadIndex); break;
                default: ExecuteWithKeys<F32Row>(threadIndex); break;
            }
        }

        private void ExecuteWithKeys<TKey>(int threadIndex) where TKey : IFloatRow
        {
            switch (Args.Cache.ValueType)
            {
                case GgmlType.F16: Execute<TKey, F16Row>(threadIndex); break;
                case GgmlType.Q8_0: Execute<TKey, Q8_0Row>(threadIndex); break;
                default: Execute<TKey, F32Row>(threadIndex); break;
            }
        }

        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        private void Execute<TKey, TValue>(int threadIndex) where TKey : IFloatRow where TValue : IFloatRow
        {
            ref readonly var a = ref Args;
            ref readonly var cache = ref a.Cache;
            int headDim = cache.HeadDim;
            float* scores = Scores + (long)threadIndex * RowsPerBlock * ScoreStride;
            int blocks = (a.Rows + RowsPerBlock - 1) / RowsPerBlock, items = blocks * a.Heads;
            float** pointers = stackalloc float*[2 * MaxBlockRows];
            byte** cached = stackalloc byte*[2 * MaxBlockRows];
            int* lengths = stackalloc int[MaxBlockRows];
            var rows = new BlockRows
            {
                Queries = pointers, Outputs = pointers + MaxBlockRows, Keys = cached, Values = cached + MaxBlockRows, Lengths = lengths,
            };
            while (true)
            {
                int item = Interlocked.Increment(ref NextItem) - 1;
                if (item >= items) return;
                int h = item / blocks, first = item % blocks * RowsPerBlock, count = Math.Min(RowsPerBlock, a.Rows - first);
                int kvHead = h / (a.Heads / cache.KvHeads);
                for (int r = 0; r < count; r++)
                {
                    int i = first + r;
                    var stored = cache.Head(a.Sequences[i], kvHead);
                    long head = (long)i * a.Heads + h;
                    // A sliding window only moves where the row's keys and values start: the masked ones are skipped, not read.
                    int start = FirstVisible(a, i);
                    rows.Queries[r] = a.Queries + head * headDim;
                    rows.Outputs[r] = a.Output + head * headDim;
                    rows.Keys[r] = stored.Keys + (long)start * cache.KeyRowBytes;
                    rows.Values[r] = stored.Values + (long)start * cache.ValueRowBytes;
                    rows.Lengths[r] = VisibleEnd(a, i) - start;
                }
                Block<TKey, TValue>(rows, count, headDim, cache.KeyRowBytes, a.Scale, a.SoftCap, scores, ScoreStride);
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
        public float** Queries, Outputs;
        public byte** Keys, Values;
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
    /// The rows of a block against their cached keys and values, one head's positions <paramref name="headDim"/>
    /// elements (<paramref name="keyRowBytes"/> bytes of keys) apart. A row's scores are computed group by group and
    /// its outputs tile by tile, in the same order as for a block of one.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Block<TKey, TValue>(in BlockRows rows, int count, int headDim, int keyRowBytes, float scale, float softCap, float* scores,
        int scoreStride)
        where TKey : IFloatRow where TValue : IFloatRow
    {
        // F16 keys are read as 2^-112 times their value, three integer operations per 8, against queries scaled by
        // 2^112: every product, and so every rounding, is that of the widened key. A query too large to scale
        // takes the exact widening instead, with the same result.
        bool* scaledKeys = stackalloc bool[MaxBlockRows];
        for (int r = 0; r < count; r++)
            scaledKeys[r] = typeof(TKey) == typeof(F16Row) && MaxMagnitude(rows.Queries[r], headDim) < F16ScaledRow.LargestScalable;
        int longest = 0;
        for (int r = 0; r < count; r++) longest = Math.Max(longest, rows.Lengths[r]);

        // Two rows reading the same keys (neighbours of one sequence) score each group together: a key loaded once
        // serves both, with each row's arithmetic that of the single-row kernel.
        bool pairs = Avx2.IsSupported && headDim % 8 == 0;
        for (int t = 0; t < longest; t += KeyGroup)
            for (int r = 0; r < count; r++)
                if (t < rows.Lengths[r])
                {
                    byte* keys = rows.Keys[r] + (long)t * keyRowBytes;
                    if (pairs && r + 1 < count && t < rows.Lengths[r + 1] && rows.Keys[r + 1] == rows.Keys[r] && scaledKeys[r + 1] == scaledKeys[r])
                    {
                        // The pair scores the longer row's keys: the shorter one's extra lanes are past its length, never read.
                        int remaining = Math.Max(rows.Lengths[r], rows.Lengths[r + 1]) - t;
                        float* scores0 = scores + (long)r * scoreStride + t, scores1 = scores0 + scoreStride;
                        if (scaledKeys[r])
                            ScoreGroupPair<F16ScaledRow>(rows.Queries[r], rows.Queries[r + 1], keys, headDim, remaining, scale, scores0, scores1);
                        else
                            ScoreGroupPair<TKey>(rows.Queries[r], rows.Queries[r + 1], keys, headDim, remaining, scale, scores0, scores1);
                        r++;
                    }
                    else if (scaledKeys[r])
                        ScoreGroup<F16ScaledRow>(rows.Queries[r], keys, headDim, rows.Lengths[r] - t, scale, scores + (long)r * scoreStride + t);
                    else
                        ScoreGroup<TKey>(rows.Queries[r], keys, headDim, rows.Lengths[r] - t, scale, scores + (long)r * scoreStride + t);
                }

        if (softCap > 0)
            for (int r = 0; r < count; r++)
                Elementwise.SoftCap(new Span<float>(scores + (long)r * scoreStride, rows.Lengths[r]), softCap);

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
        // Pairs of rows weigh the values they share together, each loaded value feeding both rows' FMAs; the longer
        // row's last keys of a tile follow alone, in the same order of t.
        bool valuePairs = Avx2.IsSupported && headDim % PairedValueDims == 0;
        for (int t = 0; t < longest; t += tile)
            for (int r = 0; r < count; r++)
                if (t < rows.Lengths[r])
                {
                    float* weights = scores + (long)r * scoreStride;
                    int end = Math.Min(t + tile, rows.Lengths[r]);
                    if (valuePairs && r + 1 < count && t < rows.Lengths[r + 1] && rows.Values[r + 1] == rows.Values[r])
                    {
                        int nextEnd = Math.Min(t + tile, rows.Lengths[r + 1]), shared = Math.Min(end, nextEnd);
                        AddWeightedValuesPair<TValue>(weights, weights + scoreStride, t, shared, rows.Values[r], rows.Outputs[r], rows.Outputs[r + 1], headDim);
                        AddWeighted<TValue>(weights, shared, end, rows.Values[r], rows.Outputs[r], headDim);
                        AddWeighted<TValue>(weights + scoreStride, shared, nextEnd, rows.Values[r], rows.Outputs[r + 1], headDim);
                        r++;
                    }
                    else
                        AddWeighted<TValue>(weights, t, end, rows.Values[r], rows.Outputs[r], headDim);
                }
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
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void ScoreGroup<TKey>(float* q, byte* k0, int headDim, int remaining, float scale, float* scores)
        where TKey : IFloatRow
    {
        if (!Avx2.IsSupported)
        {
            for (int j = 0; j < Math.Min(KeyGroup, remaining); j++) scores[j] = Dot<TKey>(q, k0, j * headDim, 0, headDim) * scale;
            return;
        }
        var prescale = Vector256.Create(TKey.Prescale);
        int vectorDims = headDim & ~7;
        int last = remaining - 1;
        int s1 = Math.Min(1, last) * headDim, s2 = Math.Min(2, last) * headDim, s3 = Math.Min(3, last) * headDim;
        int s4 = Math.Min(4, last) * headDim, s5 = Math.Min(5, last) * headDim, s6 = Math.Min(6, last) * headDim, s7 = Math.Min(7, last) * headDim;
        Vector256<float> a0 = default, a1 = default, a2 = default, a3 = default, a4 = default, a5 = default, a6 = default, a7 = default;
        for (int d = 0; d < vectorDims; d += 8)
        {
            var qv = typeof(TKey) == typeof(F16ScaledRow) ? Vector256.Load(q + d) * prescale : Vector256.Load(q + d);
            a0 = Vector256.FusedMultiplyAdd(qv, TKey.Load8(k0, d), a0);
            a1 = Vector256.FusedMultiplyAdd(qv, TKey.Load8(k0, s1 + d), a1);
            a2 = Vector256.FusedMultiplyAdd(qv, TKey.Load8(k0, s2 + d), a2);
            a3 = Vector256.FusedMultiplyAdd(qv, TKey.Load8(k0, s3 + d), a3);
            a4 = Vector256.FusedMultiplyAdd(qv, TKey.Load8(k0, s4 + d), a4);
            a5 = Vector256.FusedMultiplyAdd(qv, TKey.Load8(k0, s5 + d), a5);
            a6 = Vector256.FusedMultiplyAdd(qv, TKey.Load8(k0, s6 + d), a6);
            a7 = Vector256.FusedMultiplyAdd(qv, TKey.Load8(k0, s7 + d), a7);
        }
        var dots = KeySums(Pairwise(a0, a1, a2, a3), Pairwise(a4, a5, a6, a7));
        if (vectorDims < headDim)
            dots += Vector256.Create(Dot<TKey>(q, k0, 0, vectorDims, headDim), Dot<TKey>(q, k0, s1, vectorDims, headDim),
                Dot<TKey>(q, k0, s2, vectorDims, headDim), Dot<TKey>(q, k0, s3, vectorDims, headDim),
                Dot<TKey>(q, k0, s4, vectorDims, headDim), Dot<TKey>(q, k0, s5, vectorDims, headDim),
                Dot<TKey>(q, k0, s6, vectorDims, headDim), Dot<TKey>(q, k0, s7, vectorDims, headDim));
        (dots * Vector256.Create(scale)).Store(scores);
    }

    /// <summary>Pairwise sums of four keys' accumulators: key j's four partial sums in lane j of each 128-bit half.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> Pairwise(Vector256<float> a0, Vector256<float> a1, Vector256<float> a2, Vector256<float> a3) =>
        Avx.HorizontalAdd(Avx.HorizontalAdd(a0, a1), Avx.HorizontalAdd(a2, a3));

    /// <summary>The dot products of eight keys from the <see cref="Pairwise"/> sums of keys 0–3 and 4–7.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> KeySums(Vector256<float> lo, Vector256<float> hi) => Avx.Permute2x128(lo, hi, 0x20) + Avx.Permute2x128(lo, hi, 0x31);

    /// <summary>
    /// <see cref="ScoreGroup{TKey}"/> for two queries against the same keys (heads a multiple of 8 long, AVX2): each
    /// loaded key feeds both queries' FMAs, and each query's scores come out bit for bit as the single kernel's. Keys
    /// go four at a time, so that two queries' accumulators fit in the 16 AVX2 registers.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void ScoreGroupPair<TKey>(float* q0, float* q1, byte* k0, int headDim, int remaining, float scale, float* scores0, float* scores1)
        where TKey : IFloatRow
    {
        int last = remaining - 1;
        int s1 = Math.Min(1, last) * headDim, s2 = Math.Min(2, last) * headDim, s3 = Math.Min(3, last) * headDim;
        int s4 = Math.Min(4, last) * headDim, s5 = Math.Min(5, last) * headDim, s6 = Math.Min(6, last) * headDim, s7 = Math.Min(7, last) * headDim;
        FourKeys<TKey>(q0, q1, k0, 0, s1, s2, s3, headDim, out var lo0, out var lo1);
        FourKeys<TKey>(q0, q1, k0, s4, s5, s6, s7, headDim, out var hi0, out var hi1);
        var scaling = Vector256.Create(scale);
        (KeySums(lo0, hi0) * scaling).Store(scores0);
        (KeySums(lo1, hi1) * scaling).Store(scores1);
    }

    /// <summary>Two queries against the keys at element offsets <paramref name="s0"/>–<paramref name="s3"/>: each query's <see cref="Pairwise"/> sums.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void FourKeys<TKey>(float* q0, float* q1, byte* k0, int s0, int s1, int s2, int s3, int headDim,
        out Vector256<float> sums0, out Vector256<float> sums1)
        where TKey : IFloatRow
    {
        var prescale = Vector256.Create(TKey.Prescale);
        Vector256<float> a0 = default, a1 = default, a2 = default, a3 = default, b0 = default, b1 = default, b2 = default, b3 = default;
        for (int d = 0; d < headDim; d += 8)
        {
            var x = typeof(TKey) == typeof(F16ScaledRow) ? Vector256.Load(q0 + d) * prescale : Vector256.Load(q0 + d);
            var y = typeof(TKey) == typeof(F16ScaledRow) ? Vector256.Load(q1 + d) * prescale : Vector256.Load(q1 + d);
            var k = TKey.Load8(k0, s0 + d);
            a0 = Vector256.FusedMultiplyAdd(x, k, a0);
            b0 = Vector256.FusedMultiplyAdd(y, k, b0);
            k = TKey.Load8(k0, s1 + d);
            a1 = Vector256.FusedMultiplyAdd(x, k, a1);
            b1 = Vector256.FusedMultiplyAdd(y, k, b1);
            k = TKey.Load8(k0, s2 + d);
            a2 = Vector256.FusedMultiplyAdd(x, k, a2);
            b2 = Vector256.FusedMultiplyAdd(y, k, b2);
            k = TKey.Load8(k0, s3 + d);
            a3 = Vector256.FusedMultiplyAdd(x, k, a3);
            b3 = Vector256.FusedMultiplyAdd(y, k, b3);
        }
        sums0 = Pairwise(a0, a1, a2, a3);
        sums1 = Pairwise(b0, b1, b2, b3);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static float Dot<TKey>(float* q, byte* keys, int offset, int from, int to) where TKey : IFloatRow
    {
        float sum = 0;
        for (int i = from; i < to; i++) sum += q[i] * TKey.Prescale * TKey.Load1(keys, offset + i);
        return sum;
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static float MaxMagnitude(float* x, int n)
    {
        float max = 0;
        for (int i = 0; i < n; i++) max = MathF.Max(max, MathF.Abs(x[i]));
        return max;
    }

    // Rows are short (a few hundred scores while decoding): one inline loop beats a chain of library calls, each
    // with its own setup.
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
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
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static float Exponentiate(float* scores, int length, float max)
    {
        if (!Vector256.IsHardwareAccelerated)
        {
            float total = 0;
            for (int i = 0; i < length; i++) total += scores[i] = MathF.Exp(scores[i] - max);
            return total;
        }
        var maxima = Vector256.Create(max);
        var sums = Vector256<float>.Zero;
        var lanes = Vector256.Create(0, 1, 2, 3, 4, 5, 6, 7);
        int t = 0;
        // Two groups per call of the out-of-line exponential where AVX-512 runs it: it computes each lane alone, the
        // same as eight wide (AttentionTests), and the groups add to the sums in the same order.
        if (Vector512.IsHardwareAccelerated)
        {
            var wideMaxima = Vector512.Create(max);
            for (; t + 2 * KeyGroup <= length; t += 2 * KeyGroup)
            {
                var e = Vector512.Exp(Vector512.Load(scores + t) - wideMaxima);
                e.Store(scores + t);
                sums += e.GetLower();
                sums += e.GetUpper();
            }
        }
        for (; t < length; t += KeyGroup)
        {
            // The scratch holds whole groups; lanes past the end must not count.
            var e = Vector256.Exp(Vector256.Load(scores + t) - maxima);
            if (t + KeyGroup > length) e = Vector256.ConditionalSelect(Vector256.LessThan(lanes, Vector256.Create(length - t)).AsSingle(), e, default);
            e.Store(scores + t);
            sums += e;
        }
        return Vector256.Sum(sums);
    }

    /// <summary><see cref="AddWeightedValues{TValue}"/> for the cache's value type (nothing when the range is empty).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void AddWeighted<TValue>(float* weights, int from, int to, byte* values, float* output, int n) where TValue : IFloatRow
    {
        if (from >= to) return;
        // F16 values likewise: the weights, at most 1, scale by 2^112 without overflow.
        if (typeof(TValue) == typeof(F16Row)) AddWeightedValues<F16ScaledRow>(weights, from, to, values, output, n);
        else AddWeightedValues<TValue>(weights, from, to, values, output, n);
    }

    /// <summary>Output floats per pass of <see cref="AddWeightedValuesPair{TValue}"/>: two rows' 32 fill 8 registers.</summary>
    private const int PairedValueDims = 32;

    /// <summary>
    /// <see cref="AddWeighted{TValue}"/> for two rows weighing the same values (AVX2, rows a multiple of 32 long):
    /// each loaded value feeds both rows' FMAs, and every output float sums the same products in the same order of t
    /// as the single-row kernel.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void AddWeightedValuesPair<TValue>(float* weights0, float* weights1, int from, int to, byte* values, float* output0, float* output1, int n)
        where TValue : IFloatRow
    {
        if (from >= to) return;
        if (typeof(TValue) == typeof(F16Row)) AddWeightedValuesPair<F16ScaledRow>(weights0, weights1, from, to, values, output0, output1, n);
        else
        {
            float prescale = TValue.Prescale;
            for (int d = 0; d < n; d += PairedValueDims)
            {
                float* o = output0 + d, p = output1 + d;
                Vector256<float> a0 = Vector256.Load(o), a1 = Vector256.Load(o + 8), a2 = Vector256.Load(o + 16), a3 = Vector256.Load(o + 24);
                Vector256<float> b0 = Vector256.Load(p), b1 = Vector256.Load(p + 8), b2 = Vector256.Load(p + 16), b3 = Vector256.Load(p + 24);
                int v = from * n + d;
                for (int t = from; t < to; t++, v += n)
                {
                    var x = Vector256.Create(typeof(TValue) == typeof(F16ScaledRow) ? weights0[t] * prescale : weights0[t]);
                    var y = Vector256.Create(typeof(TValue) == typeof(F16ScaledRow) ? weights1[t] * prescale : weights1[t]);
                    var value = TValue.Load8(values, v);
                    a0 = Vector256.FusedMultiplyAdd(x, value, a0);
                    b0 = Vector256.FusedMultiplyAdd(y, value, b0);
                    value = TValue.Load8(values, v + 8);
                    a1 = Vector256.FusedMultiplyAdd(x, value, a1);
                    b1 = Vector256.FusedMultiplyAdd(y, value, b1);
                    value = TValue.Load8(values, v + 16);
                    a2 = Vector256.FusedMultiplyAdd(x, value, a2);
                    b2 = Vector256.FusedMultiplyAdd(y, value, b2);
                    value = TValue.Load8(values, v + 24);
                    a3 = Vector256.FusedMultiplyAdd(x, value, a3);
                    b3 = Vector256.FusedMultiplyAdd(y, value, b3);
                }
                a0.Store(o);
                a1.Store(o + 8);
                a2.Store(o + 16);
                a3.Store(o + 24);
                b0.Store(p);
                b1.Store(p + 8);
                b2.Store(p + 16);
                b3.Store(p + 24);
            }
        }
    }

    /// <summary>
    /// output += Σ_{t in [from, to)} weights[t] · values[t], the value rows of <paramref name="n"/> elements one after
    /// another; 64 output floats stay in registers across the tile, and every output float sums its terms in order of t.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void AddWeightedValues<TValue>(float* weights, int from, int to, byte* values, float* output, int n)
        where TValue : IFloatRow
    {
        int d = 0;
        float prescale = TValue.Prescale;
        if (Avx2.IsSupported)
        {
            for (; d + 64 <= n; d += 64)
            {
                float* o = output + d;
                Vector256<float> o0 = Vector256.Load(o), o1 = Vector256.Load(o + 8), o2 = Vector256.Load(o + 16), o3 = Vector256.Load(o + 24);
                Vector256<float> o4 = Vector256.Load(o + 32), o5 = Vector256.Load(o + 40), o6 = Vector256.Load(o + 48), o7 = Vector256.Load(o + 56);
                int v = from * n + d;
                for (int t = from; t < to; t++, v += n)
                {
                    var w = Vector256.Create(typeof(TValue) == typeof(F16ScaledRow) ? weights[t] * prescale : weights[t]);
                    o0 = Vector256.FusedMultiplyAdd(w, TValue.Load8(values, v), o0);
                    o1 = Vector256.FusedMultiplyAdd(w, TValue.Load8(values, v + 8), o1);
                    o2 = Vector256.FusedMultiplyAdd(w, TValue.Load8(values, v + 16), o2);
                    o3 = Vector256.FusedMultiplyAdd(w, TValue.Load8(values, v + 24), o3);
                    o4 = Vector256.FusedMultiplyAdd(w, TValue.Load8(values, v + 32), o4);
                    o5 = Vector256.FusedMultiplyAdd(w, TValue.Load8(values, v + 40), o5);
                    o6 = Vector256.FusedMultiplyAdd(w, TValue.Load8(values, v + 48), o6);
                    o7 = Vector256.FusedMultiplyAdd(w, TValue.Load8(values, v + 56), o7);
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
                int v = from * n + d;
                for (int t = from; t < to; t++, v += n)
                    o = Vector256.FusedMultiplyAdd(Vector256.Create(typeof(TValue) == typeof(F16ScaledRow) ? weights[t] * prescale : weights[t]), TValue.Load8(values, v), o);
                o.Store(output + d);
            }
        }
        for (; d < n; d++)
        {
            float acc = output[d];
            for (int t = from; t < to; t++) acc += weights[t] * prescale * TValue.Load1(values, t * n + d);
            output[d] = acc;
        }
    }
}

/// <summary>
/// Q8_0 blocks of a KV cache: 32 elements in 34 bytes, an F16 scale then 32 signed bytes. Element i of a row of
/// whole blocks is scale × quant, a product of at most 11 and 7 significant bits that float holds exactly, so
/// every element reads as exactly its dequantized value, vector or scalar. Loads of 8 never straddle a block, since
/// callers load at multiples of 8.
/// </summary>
internal unsafe struct Q8_0Row : IFloatRow
{
    public const int BlockBytes = 34;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> Load8(byte* row, int index)
    {
        byte* block = row + (index >> 5) * BlockBytes;
        var quants = Avx.ConvertToVector256Single(Avx2.ConvertToVector256Int32((sbyte*)block + 2 + (index & 31)));
        return quants * Vector256.Create(F16Row.ToSingle(*(ushort*)block));
    }

    public static float Load1(byte* row, int index)
    {
        byte* block = row + (index >> 5) * BlockBytes;
        return (float)*(Half*)block * ((sbyte*)block)[2 + (index & 31)];
    }
}
