using System.Runtime.InteropServices;
using System.Runtime.Intrinsics.X86;
using Velo.Kernels;
using Velo.Tensors;
using Velo.Threading;

namespace Velo.Tests.Kernels;

/// <summary>
/// Q4_K and Q6_K prefill in row groups (<see cref="Q4_KRowGroupKernels"/>, <see cref="Q6_KRowGroupKernels"/>) against
/// their scalar reference, the 256-bit kernels and a token alone, bit for bit: row counts that leave a partial group,
/// token counts that leave a partial tile, and rows of 1, 3 and 9 super-blocks. Q4_K's decode kernels (a token alone,
/// tiles of four tokens) against the same reference.
/// </summary>
public unsafe class KQuantRowGroupKernelTests
{
    private static readonly int[] ColumnCounts = [256, 768, 2304];
    private static readonly int[] RowCounts = [1, 7, 16, 33, 70];
    private static readonly int[] TokenCounts = [16, 17, 23, 24, 40];
    private static readonly int[] DecodeTokenCounts = [1, 2, 3, 4, 5, 7, 8, 13];

    /// <summary>The scalar reference sums as the AVX2 kernels do, so it holds on every machine with AVX2.</summary>
    [Theory]
    [InlineData(GgmlType.Q4_K)]
    [InlineData(GgmlType.Q6_K)]
    public void ReferenceEqualsAvx2KernelsBitForBit(GgmlType type)
    {
        if (!Avx2.IsSupported || !Fma.IsSupported) return;
        Compare(type, MatMulPath.Avx2, seed: 3);
    }

    /// <summary>The AVX-512 row-group tiles, and the 256-bit kernels (AVX-VNNI's where the CPU has it) on the same machine.</summary>
    [Avx512Theory]
    [InlineData(GgmlType.Q4_K, false)]
    [InlineData(GgmlType.Q4_K, true)]
    [InlineData(GgmlType.Q6_K, false)]
    [InlineData(GgmlType.Q6_K, true)]
    public void RowGroupTilesEqualReferenceBitForBit(GgmlType type, bool avx256) =>
        Compare(type, avx256 ? MatMulPath.Avx256 : MatMulPath.Fastest, seed: avx256 ? 7 : 5);

    /// <summary>
    /// Q4_K's exact totals make every kernel's result the reference's: decode-sized batches (a token alone, tiles of
    /// four with <see cref="IKBlock.PackedDot4"/>) on the AVX2 path and the fastest one (AVX-512 where the CPU has it).
    /// </summary>
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Q4_KDecodeEqualsReferenceBitForBit(bool avx2)
    {
        if (!Avx2.IsSupported || !Fma.IsSupported) return;
        Compare(GgmlType.Q4_K, avx2 ? MatMulPath.Avx2 : MatMulPath.Fastest, seed: avx2 ? 11 : 13, DecodeTokenCounts);
    }

    [Avx512Theory]
    [InlineData(GgmlType.Q4_K)]
    [InlineData(GgmlType.Q6_K)]
    public void RowGroupTilesEqualATokenAloneBitForBit(GgmlType type)
    {
        Assert.True(type == GgmlType.Q4_K ? Q4_KRowGroupKernels.IsSupported && Q4_KRowGroupKernels.Handles(16)
            : Q6_KRowGroupKernels.IsSupported && Q6_KRowGroupKernels.Handles(16));
        var random = new Random(17);
        using var pool = new WorkerPool(3);
        foreach (int cols in ColumnCounts)
        foreach (int rows in RowCounts)
        {
            using var weights = MatMulTests.RandomWeights(type, rows, cols, random);
            var w = new WeightMatrix((byte*)weights.Pointer, type, rows, cols);
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
                        $"{type} rows={rows} cols={cols} tokens={tokens}: token {t} alone differs from it in the batch");
                }
            }
        }
    }

    private static void Compare(GgmlType type, MatMulPath path, int seed, int[]? tokenCounts = null)
    {
        var random = new Random(seed);
        using var pool = new WorkerPool(3);
        foreach (int cols in ColumnCounts)
        foreach (int rows in RowCounts)
        {
            using var weights = MatMulTests.RandomWeights(type, rows, cols, random);
            var w = new WeightMatrix((byte*)weights.Pointer, type, rows, cols);
            foreach (int tokens in tokenCounts ?? TokenCounts)
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
                    Q6_KRowGroupKernels.Reference(w, quants, scales, groupSums, tokens, pr);
                }
                Assert.True(MemoryMarshal.Cast<float, int>(kernel).SequenceEqual(MemoryMarshal.Cast<float, int>(reference)),
                    $"{type} {path} rows={rows} cols={cols} tokens={tokens}: kernel and scalar reference differ");
            }
        }
    }
}
