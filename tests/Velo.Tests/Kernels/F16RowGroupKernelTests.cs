using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using Velo.Kernels;
using Velo.Tensors;
using Velo.Threading;

namespace Velo.Tests.Kernels;

/// <summary>
/// F16 weights repacked into 16-row groups (<see cref="RowGroups"/>, <see cref="F16RowGroupKernels"/>): every
/// path and every batch size gives, bit for bit, the scalar definition below (the one every F16 path keeps), for
/// row counts that fill whole groups and that do not, slices of a fused matrix, activations too large to scale,
/// and halves at the ends of fp16's range.
/// </summary>
public unsafe class F16RowGroupKernelTests
{
    /// <summary>The portable path sums with TensorPrimitives.Dot, in its own order; every other path keeps the definition.</summary>
    private static readonly MatMulPath[] Paths = [MatMulPath.Fastest, MatMulPath.Avx2, MatMulPath.Avx256];

    /// <summary>
    /// The definition: per row and token, lane l of 8 sums <c>w[c]·x[c]</c> for c = l, l+8, … in order with FMA,
    /// then the lanes are added as <see cref="Vector256.Sum{T}(Vector256{T})"/> adds them. Read from the file's rows.
    /// </summary>
    private static float[] Reference(in WeightMatrix w, float[] x, int tokens)
    {
        int cols = w.Cols;
        var y = new float[tokens * w.Rows];
        var lanes = new float[8];
        for (int t = 0; t < tokens; t++)
        for (int r = 0; r < w.Rows; r++)
        {
            Array.Clear(lanes);
            Half* row = (Half*)w.Row(r);
            for (int c = 0; c < cols; c++)
                lanes[c % 8] = MathF.FusedMultiplyAdd((float)row[c], x[t * cols + c], lanes[c % 8]);
            y[t * w.Rows + r] = Vector256.Sum(Vector256.Create(lanes));
        }
        return y;
    }

    private static void AssertEveryPathGives(float[] expected, in WeightMatrix w, float[] x, int tokens, WorkerPool pool, string what)
    {
        // Without AVX2 and FMA every path is the portable one, which sums each row in TensorPrimitives.Dot's order.
        if (!Avx2.IsSupported || !Fma.IsSupported) return;
        var y = new float[tokens * w.Rows];
        foreach (var path in Paths)
        {
            Array.Fill(y, float.NaN);
            fixed (float* px = x)
            fixed (float* py = y)
                MatMul.Multiply(w, px, tokens, py, pool, path);
            for (int i = 0; i < y.Length; i++)
                if (BitConverter.SingleToInt32Bits(y[i]) != BitConverter.SingleToInt32Bits(expected[i]))
                    Assert.Fail($"{what}, {path}: token {i / w.Rows} row {i % w.Rows} is {y[i]:R}, the definition {expected[i]:R}");
        }
    }

    [Fact]
    public void EveryPathAndBatchSizeGivesTheDefinitionBitForBit()
    {
        var random = new Random(41);
        using var pool = new WorkerPool(3);
        foreach (var (rows, cols) in new[] { (37, 256), (16, 32), (48, 96), (5, 672), (70, 64), (8, 8) })
        {
            using var file = MatMulTests.RandomWeights(GgmlType.F16, rows, cols, random);
            var plain = new WeightMatrix((byte*)file.Pointer, GgmlType.F16, rows, cols);
            using var packedCopy = RowGroupKernelTests.Repack(plain, out var w);
            int mostTokens = rows == 37 ? 20 : 9;
            var x = MatMulTests.RandomActivations(mostTokens * cols, random);
            // A token's row of results is the definition's, whichever batch it comes in: every prefix of the batch.
            var expected = Reference(plain, x, mostTokens);
            for (int tokens = 1; tokens <= mostTokens; tokens++)
            {
                AssertEveryPathGives(expected[..(tokens * rows)], w, x, tokens, pool, $"{rows}×{cols}, {tokens} tokens");
                AssertEveryPathGives(expected[..(tokens * rows)], plain, x, tokens, pool, $"{rows}×{cols} not repacked, {tokens} tokens");
            }
        }
    }

    /// <summary>Work items of many groups, rows of many blocks: the prefetches run ahead of the stream.</summary>
    [Fact]
    public void LargeMatricesGiveTheDefinitionBitForBit()
    {
        var random = new Random(43);
        using var pool = new WorkerPool(2);
        const int Rows = 520, Cols = 2048;
        using var file = MatMulTests.RandomWeights(GgmlType.F16, Rows, Cols, random);
        var plain = new WeightMatrix((byte*)file.Pointer, GgmlType.F16, Rows, Cols);
        using var packedCopy = RowGroupKernelTests.Repack(plain, out var w);
        foreach (int tokens in new[] { 1, 3, 19 })
        {
            var x = MatMulTests.RandomActivations(tokens * Cols, random);
            AssertEveryPathGives(Reference(plain, x, tokens), w, x, tokens, pool, $"{Rows}×{Cols}, {tokens} tokens");
        }
    }

    /// <summary>
    /// Halves at the ends of fp16's range — zeros of both signs, subnormals, the smallest normal, the largest finite —
    /// against activations that scale (the kernels read the halves as 2^-112 times their value) and activations of
    /// 2^16 and more, which do not (then the halves are widened exactly).
    /// </summary>
    [Fact]
    public void ExtremeHalvesAndLargeActivationsGiveTheDefinitionBitForBit()
    {
        ushort[] halves = [0x0000, 0x8000, 0x0001, 0x8001, 0x03FF, 0x83FF, 0x0400, 0x8400, 0x7BFF, 0xFBFF, 0x3C00, 0x1234];
        var random = new Random(47);
        using var pool = new WorkerPool(2);
        const int Rows = 40, Cols = 128;
        using var file = MatMulTests.RandomWeights(GgmlType.F16, Rows, Cols, random);
        var plain = new WeightMatrix((byte*)file.Pointer, GgmlType.F16, Rows, Cols);
        for (int r = 0; r < Rows; r++)
            for (int c = r % 3; c < Cols; c += 3)
                ((ushort*)plain.Row(r))[c] = halves[(r * 7 + c) % halves.Length];
        using var packedCopy = RowGroupKernelTests.Repack(plain, out var w);
        foreach (int tokens in new[] { 1, 2, 5, 11 })
        {
            var x = MatMulTests.RandomActivations(tokens * Cols, random);
            AssertEveryPathGives(Reference(plain, x, tokens), w, x, tokens, pool, $"extreme halves, {tokens} tokens");
            x[Cols / 2] = 70000f;
            AssertEveryPathGives(Reference(plain, x, tokens), w, x, tokens, pool, $"extreme halves, unscalable activations, {tokens} tokens");
        }
    }

    [Fact]
    public void SlicesOfAFusedMatrixGiveTheirRowsOfTheDefinition()
    {
        var random = new Random(53);
        using var pool = new WorkerPool(2);
        const int Rows = 75, Cols = 96;
        using var file = MatMulTests.RandomWeights(GgmlType.F16, Rows, Cols, random);
        var plain = new WeightMatrix((byte*)file.Pointer, GgmlType.F16, Rows, Cols);
        using var packedCopy = RowGroupKernelTests.Repack(plain, out var w);
        foreach (var (first, count) in new[] { (0, 16), (5, 30), (16, 21), (35, 40), (74, 1), (3, 7) })
        {
            // A slice of a slice, too: its lanes count from the first slice's.
            var slice = first == 3 ? w.Slice(1, 40).Slice(2, 7) : w.Slice(first, count);
            var plainSlice = plain.Slice(first, count);
            foreach (int tokens in new[] { 1, 3, 8, 13 })
            {
                var x = MatMulTests.RandomActivations(tokens * Cols, random);
                AssertEveryPathGives(Reference(plainSlice, x, tokens), slice, x, tokens, pool, $"rows {first}..{first + count - 1}, {tokens} tokens");
            }
        }
    }

    [Fact]
    public void RowsOfWholeBlocksOnlyAreRepacked()
    {
        Assert.True(RowGroups.CanRepack(GgmlType.F16, 64));
        Assert.False(RowGroups.CanRepack(GgmlType.F16, 13));
        Assert.False(RowGroups.CanRepack(GgmlType.BF16, 64));
        Assert.Throws<ArgumentException>(() => RowGroups.Bytes(GgmlType.F16, 4, 13));
    }
}
