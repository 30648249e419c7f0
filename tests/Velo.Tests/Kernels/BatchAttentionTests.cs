using Velo.Kernels;
using Velo.Threading;

namespace Velo.Tests.Kernels;

public unsafe class BatchAttentionTests
{
    /// <summary>
    /// The vector kernel against the double-precision definition: sequences interleaved in the batch, of one row to
    /// many, head sizes the kernel vectorizes and one it leaves to the reference.
    /// </summary>
    [Theory]
    [InlineData(16, 3)]
    [InlineData(32, 12)]
    [InlineData(64, 2)]
    [InlineData(8, 4)]
    public void MatchesTheReference(int headDim, int heads)
    {
        var random = new Random(headDim * 31 + heads);
        using var pool = new WorkerPool(3);
        foreach (int rows in new[] { 1, 2, 5, 37, 130 })
        {
            int width = heads * headDim;
            float[] Random(float scale) => Enumerable.Range(0, rows * width).Select(_ => (float)(random.NextDouble() * 2 - 1) * scale).ToArray();
            float[] q = Random(2), k = Random(2), v = Random(1), fast = new float[rows * width], reference = new float[rows * width];
            // Three sequences, their rows interleaved; sequence 7 holds a single row when there are enough.
            int[] sequences = Enumerable.Range(0, rows).Select(i => i == rows / 2 && rows > 4 ? 7 : i % 3 == 1 ? 4 : 0).ToArray();
            fixed (float* pq = q, pk = k, pv = v, pf = fast, pr = reference)
            fixed (int* ps = sequences)
            {
                var args = new BatchAttention.Arguments
                {
                    Queries = pq, Keys = pk, Values = pv, Output = pf, Sequences = ps, Rows = rows, Heads = heads, HeadDim = headDim,
                    Scale = 1 / MathF.Sqrt(headDim),
                };
                BatchAttention.Compute(args, pool);
                BatchAttention.Reference(args with { Output = pr });
            }
            for (int i = 0; i < fast.Length; i++)
                Assert.True(Math.Abs(fast[i] - reference[i]) <= 2e-6 + 1e-5 * Math.Abs(reference[i]),
                    $"headDim={headDim} rows={rows} element {i}: {fast[i]} vs reference {reference[i]}");
        }
    }

    /// <summary>
    /// Both vector kernels (AVX-512 with its fused softmax, and AVX2) against the definition, so the AVX2 path that
    /// <c>DOTNET_EnableAVX512=0</c> leaves stays checked on an AVX-512 machine: sequence lengths that fill whole
    /// 16-key vectors and ones that leave a masked tail, query tiles full and short.
    /// </summary>
    [Avx512Theory]
    [InlineData(32, 12, true)]
    [InlineData(32, 12, false)]
    [InlineData(64, 2, true)]
    [InlineData(64, 2, false)]
    public void EachPathMatchesTheReference(int headDim, int heads, bool avx512)
    {
        var random = new Random(headDim * 17 + heads);
        using var pool = new WorkerPool(2);
        foreach (int rows in new[] { 1, 5, 16, 37, 128, 130 })
        {
            int width = heads * headDim;
            float[] Random(float scale) => Enumerable.Range(0, rows * width).Select(_ => (float)(random.NextDouble() * 2 - 1) * scale).ToArray();
            float[] q = Random(3), k = Random(3), v = Random(1), fast = new float[rows * width], reference = new float[rows * width];
            int[] sequences = Enumerable.Range(0, rows).Select(i => i % 3 == 1 ? 4 : 0).ToArray();
            fixed (float* pq = q, pk = k, pv = v, pf = fast, pr = reference)
            fixed (int* ps = sequences)
            {
                var args = new BatchAttention.Arguments
                {
                    Queries = pq, Keys = pk, Values = pv, Output = pf, Sequences = ps, Rows = rows, Heads = heads, HeadDim = headDim,
                    Scale = 1 / MathF.Sqrt(headDim),
                };
                BatchAttention.Compute(args, pool, avx512);
                BatchAttention.Reference(args with { Output = pr });
            }
            for (int i = 0; i < fast.Length; i++)
                Assert.True(Math.Abs(fast[i] - reference[i]) <= 2e-6 + 1e-5 * Math.Abs(reference[i]),
                    $"avx512={avx512} headDim={headDim} rows={rows} element {i}: {fast[i]} vs reference {reference[i]}");
        }
    }
}
