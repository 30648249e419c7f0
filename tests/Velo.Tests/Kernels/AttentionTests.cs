using System.Runtime.Intrinsics;
using Velo.Runtime;
using Velo.Inference;
using Velo.Kernels;
using Velo.Tensors;
using Velo.Threading;

namespace Velo.Tests.Kernels;

public unsafe class AttentionTests
{
    [Theory]
    [InlineData(1, 4, 4, 64, 1, 2)]     // decode, no GQA
    [InlineData(7, 8, 2, 64, 2, 2)]     // prefill rows of two sequences, GQA 4:1
    [InlineData(5, 4, 4, 12, 1, 1)]     // head dim not a multiple of the vector width
    [InlineData(9, 6, 3, 128, 3, 2)]    // long heads, three sequences
    [InlineData(3, 2, 1, 40, 1, 2)]     // head dim with a 32-float block and a tail
    [InlineData(44, 4, 2, 72, 2, 2)]    // prefill: blocks of rows share keys
    public void MatchesTheDoublePrecisionReference(int rows, int heads, int kvHeads, int headDim, int sequences, int threads)
    {
        const int context = 48;
        var rng = new Random(rows * 31 + headDim);
        float[] Random(long n) => Enumerable.Range(0, (int)n).Select(_ => (float)(rng.NextDouble() * 2 - 1)).ToArray();
        int kvDim = kvHeads * headDim;
        float[] q = Random((long)rows * heads * headDim);
        float[] keys = Random((long)sequences * context * kvDim);
        float[] values = Random((long)sequences * context * kvDim);
        int[] positions = Enumerable.Range(0, rows).Select(i => (i * 13 + 3) % context).ToArray();
        int[] seqs = Enumerable.Range(0, rows).Select(i => i % sequences).ToArray();
        using var pool = new WorkerPool(threads);
        // Q8_0 blocks of 32 must not straddle heads.
        GgmlType[] types = headDim % 32 == 0 ? [GgmlType.F32, GgmlType.F16, GgmlType.Q8_0] : [GgmlType.F32, GgmlType.F16];
        foreach (var keyType in types)
        foreach (var valueType in types)
        {
            var fast = new float[q.Length];
            var reference = new float[q.Length];
            using var cache = Filled(keys, values, sequences, context, kvHeads, headDim, keyType, valueType);
            fixed (float* pq = q, pf = fast, pr = reference)
            fixed (int* pp = positions, ps = seqs)
            {
                var args = new Attention.Arguments
                {
                    Queries = pq, Output = pf, Positions = pp, Sequences = ps, Rows = rows, Heads = heads, Cache = cache.Layer(0), Scale = 1f / MathF.Sqrt(headDim),
                };
                Attention.Compute(args, pool);
                args.Output = pr;
                Attention.Reference(args);
            }
            for (int i = 0; i < fast.Length; i++) Assert.Equal(reference[i], fast[i], 1e-5);
        }
    }

    /// <summary>
    /// A sliding window (the last W positions, a row's own included) and soft-capped scores, with a scale other than
    /// 1/√headDim, against the reference: decode and prefill rows, windows shorter and longer than the positions,
    /// every cache type.
    /// </summary>
    [Theory]
    [InlineData(1, 4, 4, 64, 1, 5, 0f)]       // decode, window only
    [InlineData(44, 4, 2, 64, 2, 8, 0f)]      // prefill blocks, window only
    [InlineData(44, 4, 2, 64, 2, 0, 0.5f)]    // soft cap only
    [InlineData(9, 6, 3, 32, 3, 3, 1.5f)]     // both, three sequences
    [InlineData(7, 2, 1, 40, 1, 1, 2f)]       // a window of one: each row sees only itself
    [InlineData(5, 2, 2, 64, 1, 100, 0f)]     // a window longer than the context masks nothing
    public void WindowedAndSoftCappedAttentionMatchesTheReference(int rows, int heads, int kvHeads, int headDim, int sequences, int window, float softCap)
    {
        const int context = 48;
        var rng = new Random(rows * 7 + window);
        float[] Random(long n, float scale) => Enumerable.Range(0, (int)n).Select(_ => (float)(rng.NextDouble() * 2 - 1) * scale).ToArray();
        int kvDim = kvHeads * headDim;
        float[] q = Random((long)rows * heads * headDim, 2);
        float[] keys = Random((long)sequences * context * kvDim, 2);
        float[] values = Random((long)sequences * context * kvDim, 1);
        int[] positions = Enumerable.Range(0, rows).Select(i => (i * 13 + 3) % context).ToArray();
        int[] seqs = Enumerable.Range(0, rows).Select(i => i % sequences).ToArray();
        using var pool = new WorkerPool(2);
        GgmlType[] types = headDim % 32 == 0 ? [GgmlType.F32, GgmlType.F16, GgmlType.Q8_0] : [GgmlType.F32, GgmlType.F16];
        foreach (var type in types)
        {
            var fast = new float[q.Length];
            var reference = new float[q.Length];
            var alone = new float[q.Length];
            using var cache = Filled(keys, values, sequences, context, kvHeads, headDim, type, type);
            fixed (float* pq = q, pf = fast, pr = reference, pa = alone)
            fixed (int* pp = positions, ps = seqs)
            {
                var args = new Attention.Arguments
                {
                    Queries = pq, Output = pf, Positions = pp, Sequences = ps, Rows = rows, Heads = heads, Cache = cache.Layer(0),
                    Scale = 0.3f, SoftCap = softCap, Window = window,
                };
                Attention.Compute(args, pool);
                Attention.Reference(args with { Output = pr });
                for (int i = 0; i < rows; i++)
                {
                    long offset = (long)i * heads * headDim;
                    Attention.Compute(args with { Queries = pq + offset, Output = pa + offset, Positions = pp + i, Sequences = ps + i, Rows = 1 }, pool);
                }
            }
            for (int i = 0; i < fast.Length; i++) Assert.Equal(reference[i], fast[i], 1e-5);
            Assert.True(fast.AsSpan().SequenceEqual(alone), $"{type}: a row's result depends on its block");
        }
    }

    /// <summary>The window masks: a row's output equals plain attention over a memory that holds only its window.</summary>
    [Fact]
    public void A_window_sees_exactly_the_last_W_positions()
    {
        const int heads = 2, headDim = 32, context = 40, window = 6, position = 30;
        var rng = new Random(3);
        float[] Random(long n) => Enumerable.Range(0, (int)n).Select(_ => (float)(rng.NextDouble() * 2 - 1)).ToArray();
        float[] q = Random(heads * headDim), keys = Random(context * headDim), values = Random(context * headDim);
        int first = position - window + 1;
        using var full = Filled(keys, values, 1, context, 1, headDim, GgmlType.F32, GgmlType.F32);
        using var part = Filled(keys[(first * headDim)..], values[(first * headDim)..], 1, context - first, 1, headDim, GgmlType.F32, GgmlType.F32);
        var windowed = new float[q.Length];
        var truncated = new float[q.Length];
        int[] pos = [position], posInPart = [position - first], seq = [0];
        using var pool = new WorkerPool(1);
        fixed (float* pq = q, pw = windowed, pt = truncated)
        fixed (int* pp = pos, ppp = posInPart, ps = seq)
        {
            var args = new Attention.Arguments
            {
                Queries = pq, Output = pw, Positions = pp, Sequences = ps, Rows = 1, Heads = heads, Cache = full.Layer(0), Scale = 0.2f, Window = window,
            };
            Attention.Compute(args, pool);
            Attention.Compute(args with { Output = pt, Positions = ppp, Cache = part.Layer(0), Window = 0 }, pool);
        }
        Assert.True(windowed.AsSpan().SequenceEqual(truncated));
    }

    /// <summary>
    /// F16 keys and values are read scaled by 2^-112 against queries and weights scaled by 2^112, or widened exactly
    /// when a query is too large to scale: either way every product, so every result, equals that of an F32 cache
    /// holding the widened halves.
    /// </summary>
    [Fact]
    public void An_F16_cache_gives_the_results_of_an_F32_cache_of_the_same_halves_bit_for_bit()
    {
        const int rows = 6, heads = 4, kvHeads = 2, headDim = 72, context = 40;
        var rng = new Random(9);
        int kvDim = kvHeads * headDim;
        float[] Random(long n, float scale) => Enumerable.Range(0, (int)n).Select(_ => (float)(rng.NextDouble() * 2 - 1) * scale).ToArray();
        float[] q = Random((long)rows * heads * headDim, 3);
        for (int d = 0; d < headDim; d++) q[heads * headDim + d] *= 40000; // row 1, head 0: too large to scale
        // Halves of every kind: normal, subnormal (below 2^-14) and large.
        float[] keys = Random(context * kvDim, 2).Select((x, i) => i % 7 == 0 ? x * 1e-6f : i % 11 == 0 ? x * 3000 : x).ToArray();
        float[] values = Random(context * kvDim, 2).Select((x, i) => i % 5 == 0 ? x * 1e-6f : x).ToArray();
        float[] widenedKeys = keys.Select(x => (float)(Half)x).ToArray(), widenedValues = values.Select(x => (float)(Half)x).ToArray();
        int[] positions = Enumerable.Range(0, rows).Select(i => 30 + i).ToArray(), seqs = new int[rows];
        var f16 = new float[q.Length];
        var f32 = new float[q.Length];
        using var pool = new WorkerPool(2);
        using var halves = Filled(keys, values, 1, context, kvHeads, headDim, GgmlType.F16, GgmlType.F16);
        using var floats = Filled(widenedKeys, widenedValues, 1, context, kvHeads, headDim, GgmlType.F32, GgmlType.F32);
        fixed (float* pq = q, p16 = f16, p32 = f32)
        fixed (int* pp = positions, ps = seqs)
        {
            var args = new Attention.Arguments
            {
                Queries = pq, Output = p16, Positions = pp, Sequences = ps, Rows = rows, Heads = heads, Cache = halves.Layer(0), Scale = 1f / MathF.Sqrt(headDim),
            };
            Attention.Compute(args, pool);
            Attention.Compute(args with { Output = p32, Cache = floats.Layer(0) }, pool);
        }
        Assert.All(f16, x => Assert.True(float.IsFinite(x)));
        Assert.True(f16.AsSpan().SequenceEqual(f32));
    }

    /// <summary>
    /// Q8_0 elements are read as exactly their dequantized values (an F16 scale times an 8-bit integer, exact in
    /// float), in the vector loads and the scalar tails alike: results equal those of an F32 cache holding the
    /// dequantized blocks, bit for bit, for decode rows and prefill blocks, keys and values each in either type.
    /// </summary>
    [Theory]
    [InlineData(1, 64, GgmlType.Q8_0, GgmlType.Q8_0)]
    [InlineData(40, 64, GgmlType.Q8_0, GgmlType.Q8_0)]
    [InlineData(40, 96, GgmlType.Q8_0, GgmlType.F16)]
    [InlineData(7, 32, GgmlType.F32, GgmlType.Q8_0)]
    public void A_Q8_0_cache_gives_the_results_of_an_F32_cache_of_the_dequantized_blocks_bit_for_bit(int rows, int headDim, GgmlType keyType, GgmlType valueType)
    {
        const int heads = 4, kvHeads = 2, context = 60;
        var rng = new Random(rows + headDim);
        int kvDim = kvHeads * headDim;
        float[] Random(long n, float scale) => Enumerable.Range(0, (int)n).Select(_ => (float)(rng.NextDouble() * 2 - 1) * scale).ToArray();
        float[] q = Random((long)rows * heads * headDim, 3);
        // Scales of every kind: normal, subnormal halves (tiny rows) and large.
        float[] keys = Random(context * kvDim, 2).Select((x, i) => i / headDim % 7 == 0 ? x * 1e-6f : i / headDim % 5 == 0 ? x * 300 : x).ToArray();
        float[] values = Random(context * kvDim, 2).Select((x, i) => i / headDim % 3 == 0 ? x * 1e-6f : x).ToArray();
        float[] StoredAs(float[] x, GgmlType type) => type == GgmlType.F32 ? x : RoundTrip(x, type, headDim);
        int[] positions = Enumerable.Range(0, rows).Select(i => context - rows + i).ToArray(), seqs = new int[rows];
        var quantized = new float[q.Length];
        var dequantized = new float[q.Length];
        using var pool = new WorkerPool(2);
        using var small = Filled(keys, values, 1, context, kvHeads, headDim, keyType, valueType);
        using var floats = Filled(StoredAs(keys, keyType), StoredAs(values, valueType), 1, context, kvHeads, headDim, GgmlType.F32, GgmlType.F32);
        fixed (float* pq = q, pQ = quantized, pD = dequantized)
        fixed (int* pp = positions, ps = seqs)
        {
            var args = new Attention.Arguments
            {
                Queries = pq, Output = pQ, Positions = pp, Sequences = ps, Rows = rows, Heads = heads, Cache = small.Layer(0), Scale = 1f / MathF.Sqrt(headDim),
            };
            Attention.Compute(args, pool);
            Attention.Compute(args with { Output = pD, Cache = floats.Layer(0) }, pool);
        }
        Assert.All(quantized, x => Assert.True(float.IsFinite(x)));
        Assert.True(quantized.AsSpan().SequenceEqual(dequantized));
    }

    /// <summary>What a cache of <paramref name="type"/> holds of <paramref name="x"/>, row by row of one head, as floats.</summary>
    private static float[] RoundTrip(float[] x, GgmlType type, int headDim)
    {
        var result = new float[x.Length];
        var bytes = new byte[GgmlTypeInfo.RowBytes(type, headDim)];
        for (int i = 0; i < x.Length; i += headDim)
        {
            Quantize.Row(type, x.AsSpan(i, headDim), bytes);
            Dequantize.Row(type, bytes, result.AsSpan(i, headDim));
        }
        return result;
    }

    [Fact]
    public void Rows_at_positions_the_memory_does_not_hold_are_refused()
    {
        using var cache = new KvCache(1, 2, 16, 1, 32);
        var batch = new ForwardBatch(4);
        batch.Add(0, 0, sequence: 0);
        batch.Add(0, 1, sequence: 0);
        cache.Append(batch);
        float[] q = new float[32], output = new float[32];
        int[] position = [2], sequence = [0];
        using var pool = new WorkerPool(1);
        fixed (float* pq = q, po = output)
        fixed (int* pp = position, ps = sequence)
        {
            var args = new Attention.Arguments { Queries = pq, Output = po, Positions = pp, Sequences = ps, Rows = 1, Heads = 1, Cache = cache.Layer(0), Scale = 1 };
            Assert.Throws<ArgumentException>(() => Attention.Compute(args, pool));
        }
    }

    /// <summary>A one-layer KV memory whose sequences hold every position: keys and values are sequences × context rows of kvHeads × headDim floats.</summary>
    /// <summary>
    /// Bidirectional attention (encoders): every row sees all the positions its sequence holds, whatever its own
    /// position, so it equals causal attention from the last position, and the fast kernel matches the reference.
    /// </summary>
    [Fact]
    public void BidirectionalAttentionSeesTheWholeSequence()
    {
        const int rows = 20, heads = 4, kvHeads = 2, headDim = 32, sequences = 2, context = 24;
        var rng = new Random(11);
        float[] Random(long n) => Enumerable.Range(0, (int)n).Select(_ => (float)(rng.NextDouble() * 2 - 1)).ToArray();
        int kvDim = kvHeads * headDim;
        float[] q = Random((long)rows * heads * headDim), keys = Random((long)sequences * context * kvDim), values = Random((long)sequences * context * kvDim);
        int[] positions = Enumerable.Range(0, rows).Select(i => i % context).ToArray(), seqs = Enumerable.Range(0, rows).Select(i => i % sequences).ToArray();
        int[] lastPositions = Enumerable.Repeat(context - 1, rows).ToArray();
        float[] fast = new float[q.Length], reference = new float[q.Length], causalFromEnd = new float[q.Length];
        using var pool = new WorkerPool(2);
        using var cache = Filled(keys, values, sequences, context, kvHeads, headDim, GgmlType.F32, GgmlType.F32);
        fixed (float* pq = q, pf = fast, pr = reference, pc = causalFromEnd)
        fixed (int* pp = positions, ps = seqs, pl = lastPositions)
        {
            var args = new Attention.Arguments
            {
                Queries = pq, Output = pf, Positions = pp, Sequences = ps, Rows = rows, Heads = heads, Cache = cache.Layer(0),
                Scale = 0.3f, Bidirectional = true,
            };
            Attention.Compute(args, pool);
            Attention.Reference(args with { Output = pr });
            Attention.Reference(args with { Output = pc, Positions = pl, Bidirectional = false });
        }
        for (int i = 0; i < fast.Length; i++)
        {
            Assert.Equal(reference[i], fast[i], 1e-5);
            Assert.Equal(causalFromEnd[i], reference[i], 1e-6);
        }
    }

    internal static KvCache Filled(float[] keys, float[] values, int sequences, int context, int kvHeads, int headDim, GgmlType keyType, GgmlType valueType)
    {
        var cache = new KvCache(1, sequences, context, kvHeads, headDim, keyType, valueType);
        var batch = new ForwardBatch(sequences * context);
        for (int s = 0; s < sequences; s++)
            for (int p = 0; p < context; p++) batch.Add(0, p, s);
        cache.Append(batch);
        fixed (float* k = keys, v = values) cache.Store(0, batch, k, v);
        return cache;
    }

    /// <summary>Attention exponentiates 16 scores at a time with AVX-512: each lane must round as 8 at a time does.</summary>
    [Fact]
    public void SixteenWideExponentialsEqualEightWideOnes()
    {
        if (!Vector512.IsHardwareAccelerated) return;
        // Every 251st float from -110 (past where exp underflows) to +2 (scores minus their maximum are at most 0), and the edges.
        var inputs = new List<float> { 0f, -0f, float.NegativeInfinity, -87.33655f, -103.97208f, -1e-30f, float.Epsilon };
        for (uint bits = BitConverter.SingleToUInt32Bits(2f); bits > 0; bits = bits >= 251 ? bits - 251 : 0) inputs.Add(BitConverter.UInt32BitsToSingle(bits));
        for (uint bits = 0x80000000u; BitConverter.UInt32BitsToSingle(bits) > -110f; bits += 251) inputs.Add(BitConverter.UInt32BitsToSingle(bits));
        while (inputs.Count % 16 != 0) inputs.Add(0f);
        var x = inputs.ToArray();
        for (int i = 0; i < x.Length; i += 16)
        {
            var wide = Vector512.Exp(Vector512.Create(x, i));
            var lo = Vector256.Exp(Vector256.Create(x, i));
            var hi = Vector256.Exp(Vector256.Create(x, i + 8));
            if (!wide.GetLower().AsUInt32().Equals(lo.AsUInt32()) || !wide.GetUpper().AsUInt32().Equals(hi.AsUInt32()))
                Assert.Fail($"exp differs at inputs {i}..{i + 15} ({x[i]})");
        }
    }

    /// <summary>
    /// Prefill processes rows in blocks, neighbours sharing keys and values in pairs; a row's output must be
    /// bit-identical to computing it alone, whatever the cache types.
    /// </summary>
    [Theory]
    [InlineData(68, GgmlType.F32, GgmlType.F32, 1)]   // blocks of 16 rows and a short last block; heads not a multiple of 8 do not pair
    [InlineData(64, GgmlType.F32, GgmlType.F32, 1)]   // pairs score and weigh together
    [InlineData(64, GgmlType.F16, GgmlType.F16, 1)]
    [InlineData(96, GgmlType.Q8_0, GgmlType.Q8_0, 1)] // values in 32-float halves and a tail of 32
    [InlineData(64, GgmlType.F32, GgmlType.F16, 3)]   // neighbours of different sequences do not pair
    public void RowsComputedInBlocksMatchRowsComputedAlone(int headDim, GgmlType keyType, GgmlType valueType, int sequences)
    {
        const int rows = 260, heads = 4, kvHeads = 2, context = 270;
        var rng = new Random(5);
        float[] Random(long n) => Enumerable.Range(0, (int)n).Select(_ => (float)(rng.NextDouble() * 2 - 1)).ToArray();
        int kvDim = kvHeads * headDim;
        float[] q = Random((long)rows * heads * headDim), keys = Random((long)sequences * context * kvDim), values = Random((long)sequences * context * kvDim);
        // One sequence: positions 3.. in order; several: rows take turns, each sequence's positions rising in steps of one.
        int[] positions = Enumerable.Range(0, rows).Select(i => 3 + i / sequences).ToArray(), seqs = Enumerable.Range(0, rows).Select(i => i % sequences).ToArray();
        var together = new float[q.Length];
        var alone = new float[q.Length];
        using var pool = new WorkerPool(2);
        using var cache = Filled(keys, values, sequences, context, kvHeads, headDim, keyType, valueType);
        fixed (float* pq = q, pt = together, pa = alone)
        fixed (int* pp = positions, ps = seqs)
        {
            var args = new Attention.Arguments
            {
                Queries = pq, Output = pt, Positions = pp, Sequences = ps, Rows = rows, Heads = heads, Cache = cache.Layer(0), Scale = 1f / MathF.Sqrt(headDim),
            };
            Attention.Compute(args, pool);
            for (int i = 0; i < rows; i++)
            {
                long offset = (long)i * heads * headDim;
                Attention.Compute(args with { Queries = pq + offset, Output = pa + offset, Positions = pp + i, Sequences = ps + i, Rows = 1 }, pool);
            }
        }
        Assert.True(together.AsSpan().SequenceEqual(alone));
    }
}
