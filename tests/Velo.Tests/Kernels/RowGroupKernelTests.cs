using System.Runtime.Intrinsics.X86;
using Velo.Kernels;
using Velo.Tensors;
using Velo.Threading;

namespace Velo.Tests.Kernels;

/// <summary>
/// Q4_0 and Q8_0 weights repacked into 16-row groups (<see cref="RowGroups"/>): every path and every batch size gives, bit for
/// bit, the scalar definition below, for row counts that fill whole groups and that do not, and for slices of a
/// fused matrix that start inside a group.
/// </summary>
public unsafe class RowGroupKernelTests
{
    private static readonly MatMulPath[] Paths = [MatMulPath.Fastest, MatMulPath.Avx2, MatMulPath.Avx256, MatMulPath.Portable];

    /// <summary>
    /// The definition: activations quantized to 32-blocks, then per row and token over the blocks in order
    /// <c>acc = fma((float)isum, d_w · d_x, acc)</c> with <c>isum = Σ q·x − 8·Σx</c> (Q4_0) or <c>Σ w·x</c> (Q8_0).
    /// </summary>
    private static float[] Reference(in WeightMatrix w, float[] x, int tokens)
    {
        int cols = w.Cols, blocks = cols / 32;
        var quants = new sbyte[cols];
        var scales = new float[blocks];
        var sums = new int[blocks];
        var y = new float[tokens * w.Rows];
        for (int t = 0; t < tokens; t++)
        {
            fixed (float* xt = &x[t * cols])
            fixed (sbyte* q = quants)
            fixed (float* d = scales)
            fixed (int* s = sums)
                ActivationQuantizer.QuantizeExact32Portable(xt, cols, q, d, s);
            for (int r = 0; r < w.Rows; r++)
            {
                byte* row = w.Row(r);
                float acc = 0;
                for (int b = 0; b < blocks; b++)
                {
                    int isum = 0;
                    byte* block;
                    if (w.Type == GgmlType.Q8_0)
                    {
                        block = row + b * 34;
                        for (int i = 0; i < 32; i++)
                            isum += ((sbyte*)block)[2 + i] * quants[b * 32 + i];
                    }
                    else
                    {
                        block = row + b * 18;
                        for (int i = 0; i < 16; i++)
                            isum += (block[2 + i] & 15) * quants[b * 32 + i] + (block[2 + i] >> 4) * quants[b * 32 + 16 + i];
                        isum -= 8 * sums[b];
                    }
                    acc = MathF.FusedMultiplyAdd(isum, (float)BitConverter.UInt16BitsToHalf(*(ushort*)block) * scales[b], acc);
                }
                y[t * w.Rows + r] = acc;
            }
        }
        return y;
    }

    /// <summary>A copy of <paramref name="w"/> repacked into row groups, as the loader makes it, and the matrix reading it.</summary>
    internal static NativeBuffer Repack(WeightMatrix w, out WeightMatrix packed)
    {
        var buffer = new NativeBuffer(RowGroups.Bytes(w.Type, w.Rows, w.Cols), zero: false);
        RowGroups.Repack(w, (byte*)buffer.Pointer, 0, RowGroups.GroupCount(w.Rows));
        packed = w.WithPacked((byte*)buffer.Pointer);
        return buffer;
    }

    private static void AssertEveryPathGives(float[] expected, in WeightMatrix w, float[] x, int tokens, WorkerPool pool, string what)
    {
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

    [Theory]
    [InlineData(GgmlType.Q4_0)]
    [InlineData(GgmlType.Q8_0)]
    public void EveryPathAndBatchSizeGivesTheDefinitionBitForBit(GgmlType type)
    {
        Assert.True(Avx2.IsSupported || !Avx512BW.IsSupported);
        var random = new Random(17 + (int)type);
        using var pool = new WorkerPool(3);
        foreach (var (rows, cols) in new[] { (37, 256), (16, 32), (48, 96), (5, 672), (70, 64) })
        {
            using var file = MatMulTests.RandomWeights(type, rows, cols, random);
            var plain = new WeightMatrix((byte*)file.Pointer, type, rows, cols);
            // Q8_0 quants of −128, which files may hold: a product pair of two reaches 2·128·127 in int16.
            if (type == GgmlType.Q8_0)
                for (int r = 0; r < rows; r += 2)
                    plain.Row(r)[2] = plain.Row(r)[3] = 0x80;
            using var packedCopy = Repack(plain, out var w);
            int mostTokens = rows == 37 ? 40 : 9;
            var x = MatMulTests.RandomActivations(mostTokens * cols, random);
            // A token's row of results is the definition's, whichever batch it comes in: every prefix of the batch.
            var expected = Reference(plain, x, mostTokens);
            for (int tokens = 1; tokens <= mostTokens; tokens++)
                AssertEveryPathGives(expected[..(tokens * rows)], w, x, tokens, pool, $"{rows}×{cols}, {tokens} tokens");
        }
    }

    /// <summary>
    /// Q8_0 rows whose quants are all 127 or all −128 against blocks of activations all at ±127, or at ±127 with the
    /// sign flipping every two: the extremes of every path's integer sums (the AVX-512 kernel's int16 nibble sums
    /// reach 8·2·15·127 = 30480), still exact.
    /// </summary>
    [Fact]
    public void ExtremeQ8_0QuantsGiveTheDefinitionBitForBit()
    {
        var random = new Random(23);
        using var pool = new WorkerPool(2);
        const int Rows = 35, Cols = 256, Tokens = 21;
        using var file = MatMulTests.RandomWeights(GgmlType.Q8_0, Rows, Cols, random);
        var plain = new WeightMatrix((byte*)file.Pointer, GgmlType.Q8_0, Rows, Cols);
        for (int r = 0; r < Rows; r++)
        {
            if (r % 3 == 2) continue;
            for (int b = 0; b < Cols / 32; b++)
                new Span<byte>(plain.Row(r) + b * 34 + 2, 32).Fill(r % 3 == 0 ? (byte)127 : (byte)0x80);
        }
        using var packedCopy = Repack(plain, out var w);
        var x = new float[Tokens * Cols];
        for (int i = 0; i < x.Length; i += 32)
        {
            int pattern = random.Next(5);
            if (pattern >= 3)
            {
                // ±127 by pairs of quants, the sign flipping every two: each int16 lane of a row sees one sign, the
                // largest spread between a row's two lanes (the AVX-512 kernel's high sums start at −4·Σx in both).
                for (int k = 0; k < 32; k++)
                    x[i + k] = (k / 2 % 2 == 0) == (pattern == 3) ? 1f : -1f;
                continue;
            }
            float value = pattern switch { 0 => 1f, 1 => -1f, _ => (float)(random.NextDouble() * 2 - 1) };
            x.AsSpan(i, 32).Fill(value);
        }
        AssertEveryPathGives(Reference(plain, x, Tokens), w, x, Tokens, pool, "extreme quants");
    }

    /// <summary>
    /// Weight scales at the ends of fp16's range — zeros of both signs, subnormals, the smallest normal, the largest
    /// finite — widen to the same floats on every path (the AVX-512 kernels widen 16 at once their own way).
    /// </summary>
    [Theory]
    [InlineData(GgmlType.Q4_0)]
    [InlineData(GgmlType.Q8_0)]
    public void ExtremeScalesGiveTheDefinitionBitForBit(GgmlType type)
    {
        ushort[] scales = [0x0000, 0x8000, 0x0001, 0x8001, 0x03FF, 0x83FF, 0x0400, 0x8400, 0x7BFF, 0xFBFF, 0x3C00, 0x1234];
        var random = new Random(29 + (int)type);
        using var pool = new WorkerPool(2);
        const int Rows = 40, Cols = 128, Tokens = 11;
        int blockBytes = type == GgmlType.Q8_0 ? 34 : 18;
        using var file = MatMulTests.RandomWeights(type, Rows, Cols, random);
        var plain = new WeightMatrix((byte*)file.Pointer, type, Rows, Cols);
        for (int r = 0; r < Rows; r++)
            for (int b = 0; b < Cols / 32; b++)
                *(ushort*)(plain.Row(r) + b * blockBytes) = scales[(r * 3 + b) % scales.Length];
        using var packedCopy = Repack(plain, out var w);
        var x = MatMulTests.RandomActivations(Tokens * Cols, random);
        AssertEveryPathGives(Reference(plain, x, Tokens), w, x, Tokens, pool, "extreme scales");
    }

    [Theory]
    [InlineData(GgmlType.Q4_0)]
    [InlineData(GgmlType.Q8_0)]
    public void LongBatchesGiveTheDefinitionBitForBit(GgmlType type)
    {
        var random = new Random(5);
        using var pool = new WorkerPool(2);
        const int Rows = 40, Cols = 128;
        using var file = MatMulTests.RandomWeights(type, Rows, Cols, random);
        var plain = new WeightMatrix((byte*)file.Pointer, type, Rows, Cols);
        using var packedCopy = Repack(plain, out var w);
        foreach (int tokens in new[] { 64, 517 })
        {
            var x = MatMulTests.RandomActivations(tokens * Cols, random);
            AssertEveryPathGives(Reference(plain, x, tokens), w, x, tokens, pool, $"{tokens} tokens");
        }

        // Work items of many groups, rows of many blocks.
        const int ManyRows = 520, ManyCols = 2048, Tokens = 19;
        using var largeFile = MatMulTests.RandomWeights(type, ManyRows, ManyCols, random);
        var large = new WeightMatrix((byte*)largeFile.Pointer, type, ManyRows, ManyCols);
        using var largeCopy = Repack(large, out var largePacked);
        var xs = MatMulTests.RandomActivations(Tokens * ManyCols, random);
        AssertEveryPathGives(Reference(large, xs, Tokens), largePacked, xs, Tokens, pool, $"{ManyRows}×{ManyCols}");
    }

    [Theory]
    [InlineData(GgmlType.Q4_0)]
    [InlineData(GgmlType.Q8_0)]
    public void SlicesOfAFusedMatrixGiveTheirRowsOfTheDefinition(GgmlType type)
    {
        var random = new Random(3);
        using var pool = new WorkerPool(2);
        const int Rows = 75, Cols = 96;
        using var file = MatMulTests.RandomWeights(type, Rows, Cols, random);
        var plain = new WeightMatrix((byte*)file.Pointer, type, Rows, Cols);
        using var packedCopy = Repack(plain, out var w);
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

    [Theory]
    [InlineData(GgmlType.Q4_0)]
    [InlineData(GgmlType.Q8_0)]
    public void AMatrixWithoutARepackedCopyGivesTheSameResults(GgmlType type)
    {
        var random = new Random(9);
        using var pool = new WorkerPool(2);
        using var file = MatMulTests.RandomWeights(type, 20, 64, random);
        var plain = new WeightMatrix((byte*)file.Pointer, type, 20, 64);
        var x = MatMulTests.RandomActivations(6 * 64, random);
        AssertEveryPathGives(Reference(plain, x, 6), plain, x, 6, pool, "no repacked copy");
    }

    [Fact]
    public void ThePortableActivationQuantizerGivesTheVectorOnesQuants()
    {
        if (!Avx2.IsSupported) return;
        var random = new Random(11);
        const int Cols = 32 * 40;
        var x = MatMulTests.RandomActivations(Cols, random);
        x[5] = 0;
        for (int i = 64; i < 96; i++) x[i] = 0;
        x[100] = 127.5f / 127f * 3;
        var (q1, d1, s1) = (new sbyte[Cols], new float[Cols / 32], new int[Cols / 32]);
        var (q2, d2, s2) = (new sbyte[Cols], new float[Cols / 32], new int[Cols / 32]);
        fixed (float* px = x)
        fixed (sbyte* pq1 = q1, pq2 = q2)
        fixed (float* pd1 = d1, pd2 = d2)
        fixed (int* ps1 = s1, ps2 = s2)
        {
            ActivationQuantizer.QuantizeExact32(px, Cols, pq1, pd1, ps1);
            ActivationQuantizer.QuantizeExact32Portable(px, Cols, pq2, pd2, ps2);
        }
        Assert.Equal(q1, q2);
        Assert.Equal(d1, d2);
        Assert.Equal(s1, s2);
    }
}
