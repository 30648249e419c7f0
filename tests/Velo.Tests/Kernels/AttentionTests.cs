using Velo.Kernels;
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
        var fast = new float[q.Length];
        var reference = new float[q.Length];
        using var pool = new WorkerPool(threads);
        fixed (float* pq = q, pk = keys, pv = values, pf = fast, pr = reference)
        fixed (int* pp = positions, ps = seqs)
        {
            var args = new Attention.Arguments
            {
                Queries = pq, Output = pf, Positions = pp, Sequences = ps, Rows = rows, Heads = heads, KvHeads = kvHeads,
                HeadDim = headDim, KeyCache = pk, ValueCache = pv, ContextLength = context,
            };
            Attention.Compute(args, pool);
            args.Output = pr;
            Attention.Reference(args);
        }
        for (int i = 0; i < fast.Length; i++) Assert.Equal(reference[i], fast[i], 1e-5);
    }

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
        fixed (float* pq = q, pk = keys, pv = values, pt = together, pa = alone)
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
