using System.Runtime.InteropServices;
using System.Runtime.Intrinsics.X86;
using Velo.Kernels;
using Velo.Tensors;
using Velo.Threading;

namespace Velo.Tests.Kernels;

/// <summary>
/// Q4_K prefill with the rows in the lanes (<see cref="KQuantRowGroupKernels"/>) against its scalar reference, the
/// 256-bit kernels and a token alone, bit for bit: row counts that leave a partial group, token counts that leave a
/// partial tile, and rows of 1, 3 and 9 super-blocks.
/// </summary>
public unsafe class KQuantRowGroupKernelTests
{
    private static readonly int[] ColumnCounts = [256, 768, 2304];
    private static readonly int[] RowCounts = [1, 7, 16, 33, 70];
    private static readonly int[] TokenCounts = [16, 17, 23, 24, 40];

    /// <summary>The scalar reference sums as the AVX2 kernels do, so it holds on every machine with AVX2.</summary>
    [Fact]
    public void ReferenceEqualsAvx2KernelsBitForBit()
    {
        if (!Avx2.IsSupported || !Fma.IsSupported) return;
        Compare(MatMulPath.Avx2, seed: 3);
    }

    /// <summary>The AVX-512 row-group tiles, and the 256-bit kernels (AVX-VNNI's where the CPU has it) on the same machine.</summary>
    [Avx512Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void RowGroupTilesEqualReferenceBitForBit(bool avx256) => Compare(avx256 ? MatMulPath.Avx256 : MatMulPath.Fastest, seed: avx256 ? 7 : 5);

    [Avx512Theory]
    [InlineData(17)]
    public void RowGroupTilesEqualATokenAloneBitForBit(int seed)
    {
        Assert.True(KQuantRowGroupKernels.IsSupported && KQuantRowGroupKernels.Handles(16));
        var random = new Random(seed);
        using var pool = new WorkerPool(3);
        foreach (int cols in ColumnCounts)
        foreach (int rows in RowCounts)
        {
            using var weights = MatMulTests.RandomWeights(GgmlType.Q4_K, rows, cols, random);
            var w = new WeightMatrix((byte*)weights.Pointer, GgmlType.Q4_K, rows, cols);
            foreach (int tokens in TokenCounts)
            {
                float[] x = MatMulTests.RandomActivations(tokens * cols, random);
                float[] batch = new float[tokens * rows], alone = new float[rows];
                fixed (float* px = x, pb = batch, p1 = alone)
                {
                    MatMul.Multiply(w, px, tokens, pb, pool, MatMulPath.Fastest);
                    int t = random.Next(tokens);
                    MatMul.Multiply(w, px + t * cols, 1, p1, pool, MatMulPath.Fastest);
                    Assert.True(MemoryMarshal.Cast<float, int>(alone).SequenceEqual(MemoryMarshal.Cast<float, int>(batch.AsSpan(t * rows, rows))),
                        $"rows={rows} cols={cols} tokens={tokens}: token {t} alone differs from it in the batch");
                }
            }
        }
    }

    private static void Compare(MatMulPath path, int seed)
    {
        var random = new Random(seed);
        using var pool = new WorkerPool(3);
        foreach (int cols in ColumnCounts)
        foreach (int rows in RowCounts)
        {
            using var weights = MatMulTests.RandomWeights(GgmlType.Q4_K, rows, cols, random);
            var w = new WeightMatrix((byte*)weights.Pointer, GgmlType.Q4_K, rows, cols);
            foreach (int tokens in TokenCounts)
            {
                float[] x = MatMulTests.RandomActivations(tokens * cols, random);
                float[] kernel = new float[tokens * rows], reference = new float[tokens * rows];
                var activations = new byte[ActivationQuantizer.Bytes256(cols, tokens)];
                fixed (float* px = x, pk = kernel, pr = reference)
                fixed (byte* pa = activations)
                {
                    MatMul.Multiply(w, px, tokens, pk, pool, path);
                    ActivationQuantizer.Layout256(pa, cols, tokens, out var quants, out var scales, out var groupSums);
                    for (int t = 0; t < tokens; t++)
                        ActivationQuantizer.Quantize256(px + t * cols, cols, quants + t * cols, scales + t * (cols / 256), groupSums + t * (cols / 16));
                    KQuantRowGroupKernels.Reference(w, quants, scales, groupSums, tokens, pr);
                }
                Assert.True(MemoryMarshal.Cast<float, int>(kernel).SequenceEqual(MemoryMarshal.Cast<float, int>(reference)),
                    $"{path} rows={rows} cols={cols} tokens={tokens}: kernel and scalar reference differ");
            }
        }
    }
}
