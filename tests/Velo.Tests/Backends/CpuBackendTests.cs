using Velo.Backends;
using Velo.Backends.Cpu;
using Velo.Kernels;
using Velo.Threading;

namespace Velo.Tests.Backends;

/// <summary>The backend shares row-wise and element-wise ops of large batches out over its pool; the results must not change.</summary>
public unsafe class CpuBackendTests
{
    private static float[] Random(Random rng, int n) => Enumerable.Range(0, n).Select(_ => (float)(rng.NextDouble() * 4 - 2)).ToArray();

    /// <summary>Runs <paramref name="op"/> on two threads and on one, over copies of the same data, and compares the bits.</summary>
    private static void SameOnTwoThreadsAsOnOne(int floats, Action<CpuBackend, float[]> op)
    {
        var data = Random(new Random(floats), floats);
        float[] shared = (float[])data.Clone(), alone = (float[])data.Clone();
        using (var pool = new WorkerPool(2)) op(new CpuBackend(pool), shared);
        using (var pool = new WorkerPool(1)) op(new CpuBackend(pool), alone);
        Assert.True(shared.AsSpan().SequenceEqual(alone));
    }

    [Theory]
    [InlineData(3)]     // below the threshold: one thread
    [InlineData(100)]   // chunks of rows over the pool, a short last chunk
    public void RowWiseOpsGiveTheSameBitsSharedOutAsOnOneThread(int rows)
    {
        const int width = 72, headDim = 24, pairs = headDim / 2;
        var weight = Random(new Random(1), width);
        var angles = Random(new Random(2), 2 * rows * pairs);
        SameOnTwoThreadsAsOnOne(rows * width, (backend, x) =>
        {
            fixed (float* px = x, pw = weight, pa = angles)
            {
                backend.RmsNorm(px, pw, px, rows, width, 1e-5f);
                backend.Rope(px, rows, width, headDim, pa, pa + rows * pairs, pairs, RopeLayout.Interleaved);
                backend.Rope(px, rows, width, headDim, pa, pa + rows * pairs, pairs, RopeLayout.NeoX);
                backend.LayerNorm(px, pw, pw, px, rows, width, 1e-5f);
            }
        });
    }

    [Theory]
    [InlineData(1003)]        // below the threshold
    [InlineData(3 * 8192 + 8197)] // chunks over the pool, a last chunk with a tail short of a vector
    public void ElementWiseOpsGiveTheSameBitsSharedOutAsOnOneThread(int count)
    {
        var other = Random(new Random(3), count);
        SameOnTwoThreadsAsOnOne(count, (backend, x) =>
        {
            fixed (float* px = x, po = other)
            {
                backend.Add(px, po, count);
                backend.GatedActivation(GatedActivation.SiLU, px, po, count);
                backend.GatedActivation(GatedActivation.GeluTanh, px, po, count);
            }
        });
    }

    [Theory]
    [InlineData(5)]   // below the threshold: one thread
    [InlineData(100)] // chunks of rows over the pool, a short last chunk
    public void EmbeddingLookupSharedOutGivesEachTokensRow(int tokens)
    {
        const int vocab = 50, width = 40;
        var rng = new Random(tokens);
        var table = Enumerable.Range(0, vocab * width).Select(_ => (Half)(rng.NextDouble() * 4 - 2)).ToArray();
        var ids = Enumerable.Range(0, tokens).Select(_ => rng.Next(vocab)).ToArray();
        var rows = new float[tokens * width];
        using var pool = new WorkerPool(2);
        fixed (Half* pt = table)
        fixed (float* pr = rows)
            new CpuBackend(pool).EmbeddingLookup(new Velo.Tensors.WeightMatrix((byte*)pt, Velo.Tensors.GgmlType.F16, vocab, width), ids, pr);
        for (int t = 0; t < tokens; t++)
            for (int c = 0; c < width; c++)
                Assert.Equal((float)table[ids[t] * width + c], rows[t * width + c]);
    }

    [Fact]
    public void SharedOutOpsMatchTheirReferences()
    {
        const int rows = 80, width = 64;
        var rng = new Random(4);
        float[] x = Random(rng, rows * width), weight = Random(rng, width), up = Random(rng, rows * width);
        float[] norm = new float[x.Length], expectedNorm = new float[x.Length], gated = (float[])x.Clone(), expectedGated = new float[x.Length];
        using var pool = new WorkerPool(2);
        var backend = new CpuBackend(pool);
        fixed (float* px = x, pw = weight, pn = norm, pg = gated, pu = up)
        {
            backend.RmsNorm(px, pw, pn, rows, width, 1e-5f);
            backend.GatedActivation(GatedActivation.SiLU, pg, pu, x.Length);
        }
        for (int i = 0; i < rows; i++)
            RmsNorm.Reference(x.AsSpan(i * width, width), weight, expectedNorm.AsSpan(i * width, width), 1e-5f);
        Activations.SwiGLUReference(x, up, expectedGated);
        for (int i = 0; i < x.Length; i++)
        {
            Assert.Equal(expectedNorm[i], norm[i], 1e-5f * Math.Max(1, Math.Abs(expectedNorm[i])));
            Assert.Equal(expectedGated[i], gated[i], 1e-5f * Math.Max(1, Math.Abs(expectedGated[i])));
        }
    }
}
