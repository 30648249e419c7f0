using System.Runtime.InteropServices;
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
        foreach (var keyType in new[] { GgmlType.F32, GgmlType.F16 })
        foreach (var valueType in new[] { GgmlType.F32, GgmlType.F16 })
        {
            var fast = new float[q.Length];
            var reference = new float[q.Length];
            byte[] keyCache = Cache(keys, keyType), valueCache = Cache(values, valueType);
            fixed (float* pq = q, pf = fast, pr = reference)
            fixed (byte* pk = keyCache, pv = valueCache)
            fixed (int* pp = positions, ps = seqs)
            {
                var args = new Attention.Arguments
                {
                    Queries = pq, Output = pf, Positions = pp, Sequences = ps, Rows = rows, Heads = heads, KvHeads = kvHeads,
                    HeadDim = headDim, KeyCache = pk, ValueCache = pv, ContextLength = context, KeyType = keyType, ValueType = valueType,
                };
                Attention.Compute(args, pool);
                args.Output = pr;
                Attention.Reference(args);
            }
            for (int i = 0; i < fast.Length; i++) Assert.Equal(reference[i], fast[i], 1e-5);
        }
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
        byte[] halfKeys = Cache(keys, GgmlType.F16), halfValues = Cache(values, GgmlType.F16);
        byte[] floatKeys = Cache(widenedKeys, GgmlType.F32), floatValues = Cache(widenedValues, GgmlType.F32);
        fixed (float* pq = q, p16 = f16, p32 = f32)
        fixed (byte* hk = halfKeys, hv = halfValues, fk = floatKeys, fv = floatValues)
        fixed (int* pp = positions, ps = seqs)
        {
            var args = new Attention.Arguments
            {
                Queries = pq, Output = p16, Positions = pp, Sequences = ps, Rows = rows, Heads = heads, KvHeads = kvHeads,
                HeadDim = headDim, KeyCache = hk, ValueCache = hv, ContextLength = context, KeyType = GgmlType.F16, ValueType = GgmlType.F16,
            };
            Attention.Compute(args, pool);
            Attention.Compute(args with { Output = p32, KeyCache = fk, ValueCache = fv, KeyType = GgmlType.F32, ValueType = GgmlType.F32 }, pool);
        }
        Assert.All(f16, x => Assert.True(float.IsFinite(x)));
        Assert.True(f16.AsSpan().SequenceEqual(f32));
    }

    private static byte[] Cache(float[] values, GgmlType type) => type == GgmlType.F16
        ? MemoryMarshal.AsBytes(values.Select(x => (Half)x).ToArray().AsSpan()).ToArray()
        : MemoryMarshal.AsBytes(values.AsSpan()).ToArray();

    /// <summary>Prefill processes rows in blocks; a row's output must be bit-identical to computing it alone.</summary>
    [Fact]
    public void RowsComputedInBlocksMatchRowsComputedAlone()
    {
        const int rows = 260, heads = 4, kvHeads = 2, headDim = 68, context = 270; // blocks of 16 rows and a short last block
        var rng = new Random(5);
        float[] Random(long n) => Enumerable.Range(0, (int)n).Select(_ => (float)(rng.NextDouble() * 2 - 1)).ToArray();
        int kvDim = kvHeads * headDim;
        float[] q = Random((long)rows * heads * headDim), keys = Random((long)context * kvDim), values = Random((long)context * kvDim);
        int[] positions = Enumerable.Range(3, rows).ToArray(), seqs = new int[rows];
        var together = new float[q.Length];
        var alone = new float[q.Length];
        using var pool = new WorkerPool(2);
        byte[] keyCache = Cache(keys, GgmlType.F32), valueCache = Cache(values, GgmlType.F32);
        fixed (float* pq = q, pt = together, pa = alone)
        fixed (byte* pk = keyCache, pv = valueCache)
        fixed (int* pp = positions, ps = seqs)
        {
            var args = new Attention.Arguments
            {
                Queries = pq, Output = pt, Positions = pp, Sequences = ps, Rows = rows, Heads = heads, KvHeads = kvHeads,
                HeadDim = headDim, KeyCache = pk, ValueCache = pv, ContextLength = context,
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
