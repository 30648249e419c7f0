using System.Runtime.InteropServices;
using System.Runtime.Intrinsics.X86;
using Velo.Kernels;
using Velo.Tensors;
using Velo.Threading;

namespace Velo.Tests.Kernels;

public unsafe class MatMulTests
{
    public static TheoryData<GgmlType> AllTypes => new()
    {
        GgmlType.F32, GgmlType.F16, GgmlType.BF16,
        GgmlType.Q8_0, GgmlType.Q4_0, GgmlType.Q4_1, GgmlType.Q5_0, GgmlType.Q5_1,
        GgmlType.Q2_K, GgmlType.Q3_K, GgmlType.Q4_K, GgmlType.Q5_K, GgmlType.Q6_K,
    };

    public static TheoryData<GgmlType> QuantizedTypes => new()
    {
        GgmlType.Q8_0, GgmlType.Q4_0, GgmlType.Q4_1, GgmlType.Q5_0, GgmlType.Q5_1,
        GgmlType.Q2_K, GgmlType.Q3_K, GgmlType.Q4_K, GgmlType.Q5_K, GgmlType.Q6_K,
    };

    private static bool IsKQuant(GgmlType type) => GgmlTypeInfo.BlockSize(type) == GgmlTypeInfo.QK_K;

    /// <summary>Column counts: one block, a few blocks, and enough blocks for whole and partial batches of 8.</summary>
    private static int[] ColumnCounts(GgmlType type) => GgmlTypeInfo.BlockSize(type) switch
    {
        1 => [1, 37, 64, 300],
        32 => [32, 96, 256, 32 * 21],
        _ => [256, 768],
    };

    [Theory]
    [MemberData(nameof(AllTypes))]
    public void FastMatchesReferenceWithinActivationQuantizationError(GgmlType type) =>
        CompareWithReference(type, MatMulPath.Fastest);

    [Theory]
    [MemberData(nameof(AllTypes))]
    public void PortableMatchesReference(GgmlType type) => CompareWithReference(type, MatMulPath.Portable);

    /// <summary>On AVX-VNNI machines the fastest path is not the AVX2 one, which the reference machine runs.</summary>
    [Theory]
    [MemberData(nameof(QuantizedTypes))]
    public void Avx2MatchesReferenceWithinActivationQuantizationError(GgmlType type) => CompareWithReference(type, MatMulPath.Avx2);

    [VnniTheory]
    [MemberData(nameof(QuantizedTypes))]
    public void VnniEqualsAvx2BitForBit(GgmlType type)
    {
        // Both sum the same exact integers into the same lanes and the same floats in the same order, so a machine's
        // results must not depend on whether it has AVX-VNNI.
        var random = new Random((int)type * 104729);
        using var pool = new WorkerPool(3);
        foreach (int cols in ColumnCounts(type))
        foreach (int rows in new[] { 1, 7, 33, 70 })
        {
            using var weights = RandomWeights(type, rows, cols, random);
            using var repacked = Repacked(new WeightMatrix((byte*)weights.Pointer, type, rows, cols), out var w);
            foreach (int tokens in new[] { 1, 2, 3, 4, 5, 6, 7, 8, 9, 13, 17 })
            {
                float[] x = RandomActivations(tokens * cols, random);
                float[] vnni = new float[tokens * rows], avx2 = new float[tokens * rows];
                fixed (float* px = x, pv = vnni, pa = avx2)
                {
                    MatMul.Multiply(w, px, tokens, pv, pool, MatMulPath.Avx256);
                    MatMul.Multiply(w, px, tokens, pa, pool, MatMulPath.Avx2);
                }
                Assert.True(MemoryMarshal.Cast<float, int>(vnni).SequenceEqual(MemoryMarshal.Cast<float, int>(avx2)),
                    $"{type} rows={rows} cols={cols} tokens={tokens}: VNNI and AVX2 results differ");
            }
        }
    }

    /// <summary>
    /// The AVX-512 GEMM (F32, F16 and BF16 prefill) sums each token exactly as the AVX2 tiles and a token alone do:
    /// every tile shape and remainder of rows and pairs, odd token counts, rows split into column blocks (1096 and
    /// 2048 columns), bit for bit.
    /// </summary>
    [Avx512Theory]
    [InlineData(GgmlType.F32)]
    [InlineData(GgmlType.F16)]
    [InlineData(GgmlType.BF16)]
    public void PairedTilesEqualAvx2AndATokenAloneBitForBit(GgmlType type)
    {
        var random = new Random((int)type * 7);
        using var pool = new WorkerPool(3);
        foreach (int cols in new[] { 8, 64, 384, 1096, 2048 })
        foreach (int rows in new[] { 1, 7, 33, 70 })
        {
            using var weights = RandomWeights(type, rows, cols, random);
            var w = new WeightMatrix((byte*)weights.Pointer, type, rows, cols);
            foreach (int tokens in new[] { 8, 9, 10, 15, 16, 17, 23, 40 })
            {
                Assert.True(FloatGemm.Handles(type, tokens, cols));
                float[] x = RandomActivations(tokens * cols, random);
                float[] paired = new float[tokens * rows], avx2 = new float[tokens * rows], alone = new float[rows];
                fixed (float* px = x, pp = paired, pa = avx2, p1 = alone)
                {
                    MatMul.Multiply(w, px, tokens, pp, pool, MatMulPath.Fastest);
                    MatMul.Multiply(w, px, tokens, pa, pool, MatMulPath.Avx2);
                    Assert.True(MemoryMarshal.Cast<float, int>(paired).SequenceEqual(MemoryMarshal.Cast<float, int>(avx2)),
                        $"{type} rows={rows} cols={cols} tokens={tokens}: paired tiles and AVX2 differ");
                    int t = random.Next(tokens);
                    MatMul.Multiply(w, px + t * cols, 1, p1, pool, MatMulPath.Fastest);
                    Assert.True(MemoryMarshal.Cast<float, int>(alone).SequenceEqual(MemoryMarshal.Cast<float, int>(paired.AsSpan(t * rows, rows))),
                        $"{type} rows={rows} cols={cols} tokens={tokens}: token {t} alone differs from it in the batch");
                }
            }
        }
    }

    /// <summary>
    /// The AVX-512 K-quant tiles (prefill of 16 tokens or more, 4 or more for Q2_K and Q3_K) sum each token exactly as
    /// the 256-bit kernels (AVX-VNNI and AVX2) and a token alone do: odd row counts, whose last pair repeats its row,
    /// odd pair counts, whose last tile repeats its pair, every remainder of four tokens, and rows long enough to
    /// go in column blocks of unequal size (9 super-blocks: 5 and 4), bit for bit.
    /// </summary>
    [Avx512Theory]
    [InlineData(GgmlType.Q2_K)]
    [InlineData(GgmlType.Q3_K)]
    [InlineData(GgmlType.Q4_K)]
    [InlineData(GgmlType.Q5_K)]
    [InlineData(GgmlType.Q6_K)]
    public void KQuantWideTilesEqual256BitKernelsAndATokenAloneBitForBit(GgmlType type)
    {
        var random = new Random((int)type * 13);
        using var pool = new WorkerPool(3);
        foreach (int cols in new[] { 256, 768, 2304 })
        foreach (int rows in new[] { 1, 2, 7, 33, 70 })
        {
            using var weights = RandomWeights(type, rows, cols, random);
            var w = new WeightMatrix((byte*)weights.Pointer, type, rows, cols);
            foreach (int tokens in new[] { 4, 7, 16, 17, 18, 19, 24 })
            {
                float[] x = RandomActivations(tokens * cols, random);
                float[] wide = new float[tokens * rows], narrow = new float[tokens * rows], avx2 = new float[tokens * rows], alone = new float[rows];
                fixed (float* px = x, pw = wide, pn = narrow, pa = avx2, p1 = alone)
                {
                    MatMul.Multiply(w, px, tokens, pw, pool, MatMulPath.Fastest);
                    MatMul.Multiply(w, px, tokens, pn, pool, MatMulPath.Avx256);
                    MatMul.Multiply(w, px, tokens, pa, pool, MatMulPath.Avx2);
                    Assert.True(MemoryMarshal.Cast<float, int>(wide).SequenceEqual(MemoryMarshal.Cast<float, int>(narrow)),
                        $"{type} rows={rows} cols={cols} tokens={tokens}: AVX-512 and 256-bit results differ");
                    Assert.True(MemoryMarshal.Cast<float, int>(wide).SequenceEqual(MemoryMarshal.Cast<float, int>(avx2)),
                        $"{type} rows={rows} cols={cols} tokens={tokens}: AVX-512 and AVX2 results differ");
                    int t = random.Next(tokens);
                    MatMul.Multiply(w, px + t * cols, 1, p1, pool, MatMulPath.Fastest);
                    Assert.True(MemoryMarshal.Cast<float, int>(alone).SequenceEqual(MemoryMarshal.Cast<float, int>(wide.AsSpan(t * rows, rows))),
                        $"{type} rows={rows} cols={cols} tokens={tokens}: token {t} alone differs from it in the batch");
                }
            }
        }
    }

    private static void CompareWithReference(GgmlType type, MatMulPath path)
    {
        var random = new Random((int)type * 7919 + (int)path);
        using var pool = new WorkerPool(3);
        foreach (int cols in ColumnCounts(type))
        foreach (int rows in new[] { 1, 7, 33, 70 })
        {
            using var weights = RandomWeights(type, rows, cols, random);
            using var repacked = Repacked(new WeightMatrix((byte*)weights.Pointer, type, rows, cols), out var w);
            foreach (int tokens in new[] { 1, 2, 3, 4, 5, 6, 7, 8, 9, 13, 17 })
            {
                float[] x = RandomActivations(tokens * cols, random);
                float[] fast = new float[tokens * rows], reference = new float[tokens * rows];
                fixed (float* px = x, pf = fast, pr = reference)
                {
                    MatMul.Multiply(w, px, tokens, pf, pool, path);
                    MatMul.Reference(w, px, tokens, pr);
                }

                // The portable path quantizes activations too for the repacked types, so all their paths agree bit for bit.
                bool quantizedActivations = (path != MatMulPath.Portable || RowGroups.Repacks(type)) && GgmlTypeInfo.BlockSize(type) > 1;
                for (int t = 0; t < tokens; t++)
                for (int r = 0; r < rows; r++)
                {
                    var (magnitude, quantizationBound) = ErrorScales(type, w, r, x.AsSpan(t * cols, cols));
                    // Float sums in a different order than the double reference: a few ulps of the magnitude.
                    double bound = 1e-5 * magnitude + 1e-6 + (quantizedActivations ? quantizationBound : 0);
                    double error = Math.Abs(fast[t * rows + r] - reference[t * rows + r]);
                    Assert.True(error <= bound,
                        $"{type} {path} rows={rows} cols={cols} tokens={tokens} t={t} r={r}: fast {fast[t * rows + r]} vs reference {reference[t * rows + r]}, error {error} > bound {bound}");
                }
            }
        }
    }

    /// <summary>
    /// Σ|w·x|, the scale of the float rounding error, and the most that rounding the activations to 8 bits can move
    /// the dot: each x is off by at most half a step, <c>max|x| / 127 / 2</c> over its activation block, so the
    /// dot is off by at most Σ|w| times that.
    /// </summary>
    private static (double Magnitude, double QuantizationBound) ErrorScales(GgmlType type, in WeightMatrix w, int r, ReadOnlySpan<float> x)
    {
        var row = new float[w.Cols];
        Dequantize.Row(type, w.RowSpan(r), row);
        int block = IsKQuant(type) ? 256 : 32;
        double magnitude = 0, bound = 0;
        for (int b0 = 0; b0 < w.Cols; b0 += block)
        {
            int n = Math.Min(block, w.Cols - b0);
            double amax = 0, absWeights = 0;
            for (int i = b0; i < b0 + n; i++)
            {
                amax = Math.Max(amax, Math.Abs(x[i]));
                absWeights += Math.Abs(row[i]);
                magnitude += Math.Abs((double)row[i] * x[i]);
            }
            bound += absWeights * amax / 127 / 2;
        }
        return (magnitude, bound);
    }

    [Theory]
    [MemberData(nameof(AllTypes))]
    public void ResultsDoNotDependOnTheThreadCount(GgmlType type)
    {
        // Chunk sizes, and so which rows share a tile, change with the thread count; the sums must not.
        var random = new Random(31);
        int cols = ColumnCounts(type)[^1];
        const int rows = 75;
        using var weights = RandomWeights(type, rows, cols, random);
        using var repacked = Repacked(new WeightMatrix((byte*)weights.Pointer, type, rows, cols), out var w);
        foreach (int tokens in new[] { 1, 6 })
        {
            float[] x = RandomActivations(tokens * cols, random);
            float[]? first = null;
            foreach (int threads in new[] { 1, 2, 3 })
            {
                using var pool = new WorkerPool(threads);
                float[] y = new float[tokens * rows];
                fixed (float* px = x, py = y)
                    MatMul.Multiply(w, px, tokens, py, pool);
                if (first == null) first = y;
                else Assert.Equal(first, y);
            }
        }
    }

    /// <summary>
    /// Passes of 2 to 7 tokens (a decode step with drafts to verify) read each float row once for all tokens; every
    /// token must still come out bit for bit as it does alone, on every path, with odd rows and column tails.
    /// </summary>
    [Theory]
    [InlineData(GgmlType.F32)]
    [InlineData(GgmlType.F16)]
    [InlineData(GgmlType.BF16)]
    public void SmallBatchesEqualEachTokenAloneBitForBit(GgmlType type)
    {
        var random = new Random((int)type * 13);
        using var pool = new WorkerPool(2);
        // 150 rows make work items of 9 rows on 2 threads: groups of four rows and a row left over.
        foreach (int cols in new[] { 13, 64, 200, 2048 })
        foreach (int rows in new[] { 1, 7, 33, 150 })
        {
            using var weights = RandomWeights(type, rows, cols, random);
            var w = new WeightMatrix((byte*)weights.Pointer, type, rows, cols);
            foreach (var path in new[] { MatMulPath.Fastest, MatMulPath.Avx2 })
            foreach (int tokens in new[] { 2, 3, 4, 5, 6, 7, 8 })
            {
                float[] x = RandomActivations(tokens * cols, random);
                float[] batch = new float[tokens * rows], alone = new float[rows];
                fixed (float* px = x, pb = batch, pa = alone)
                {
                    MatMul.Multiply(w, px, tokens, pb, pool, path);
                    for (int t = 0; t < tokens; t++)
                    {
                        MatMul.Multiply(w, px + t * cols, 1, pa, pool, path);
                        Assert.True(MemoryMarshal.Cast<float, int>(alone).SequenceEqual(MemoryMarshal.Cast<float, int>(batch.AsSpan(t * rows, rows))),
                            $"{type} {path} rows={rows} cols={cols} tokens={tokens}: token {t} alone differs from it in the batch");
                    }
                }
            }
        }
    }

    [Theory]
    [InlineData(1, 256)]
    [InlineData(2, 256)]
    [InlineData(3, 200)]
    [InlineData(5, 200)]
    [InlineData(7, 13)]
    [InlineData(1, 13)]
    public void F16DecodeEqualsTheExactlyWidenedWeightsBitForBit(int tokens, int cols)
    {
        // Decode reads halves as 2^-112 times their value against activations scaled by 2^112; this must round
        // exactly as the widened weights do, including zeros, subnormal halves and subnormal activations, and fall
        // back to exact widening where an activation cannot be scaled.
        var random = new Random(37);
        const int rows = 75; // work items of 4 rows on 2 threads, the last of 3
        using var halves = RandomWeights(GgmlType.F16, rows, cols, random);
        var h = (ushort*)halves.Pointer;
        for (int i = 0; i < rows * cols; i += random.Next(1, 6))
            h[i] = random.Next(3) switch
            {
                0 => (ushort)(random.Next(2) << 15),
                1 => (ushort)(random.Next(1, 0x400) | (random.Next(2) << 15)),
                _ => (ushort)(random.Next(0x3800, 0x4400) | (random.Next(2) << 15)),
            };
        using var widened = new NativeBuffer((long)rows * cols * sizeof(float));
        for (int i = 0; i < rows * cols; i++)
            ((float*)widened.Pointer)[i] = (float)BitConverter.UInt16BitsToHalf(h[i]);
        var f16 = new WeightMatrix((byte*)halves.Pointer, GgmlType.F16, rows, cols);
        var f32 = new WeightMatrix((byte*)widened.Pointer, GgmlType.F32, rows, cols);
        using var pool = new WorkerPool(2);
        foreach (string kind in new[] { "plain", "subnormal activations", "too large to scale" })
        {
            float[] x = RandomActivations(tokens * cols, random);
            if (kind == "subnormal activations")
                for (int i = 0; i < x.Length; i += 3)
                    x[i] = BitConverter.Int32BitsToSingle(random.Next(1, 0x800000)) * (random.Next(2) * 2 - 1);
            if (kind == "too large to scale")
                x[random.Next(x.Length)] = 70000f;
            float[] fromHalves = new float[tokens * rows], fromFloats = new float[tokens * rows], reference = new float[tokens * rows];
            fixed (float* px = x, ph = fromHalves, pf = fromFloats, pr = reference)
            {
                MatMul.Multiply(f16, px, tokens, ph, pool);
                MatMul.Multiply(f32, px, tokens, pf, pool);
                MatMul.Reference(f16, px, tokens, pr);
            }
            Assert.Equal(fromFloats, fromHalves);
            for (int i = 0; i < reference.Length; i++)
                Assert.True(Math.Abs(reference[i] - fromHalves[i]) <= 1e-4f * (1 + Math.Abs(reference[i])), $"{kind}: {fromHalves[i]} vs {reference[i]}");
        }
    }

    [Fact]
    public void ScalingForF16RefusesWhatWouldOverflow()
    {
        float* scaled = stackalloc float[20];
        float* x = stackalloc float[20];
        foreach (float bad in new[] { 65536f, -65536f, float.PositiveInfinity, float.NaN })
        {
            for (int i = 0; i < 20; i++) x[i] = i - 10;
            Assert.True(FloatKernels.ScaleForF16(x, 20, scaled));
            Assert.Equal(-10 * FloatKernels.F16ActivationScale, scaled[0]);
            x[3] = bad;
            Assert.False(FloatKernels.ScaleForF16(x, 20, scaled));
            x[3] = 0;
            x[18] = bad; // the scalar tail
            Assert.False(FloatKernels.ScaleForF16(x, 20, scaled));
        }
        float largest = 65535.99f;
        Assert.True(FloatKernels.ScaleForF16(&largest, 1, scaled));
        Assert.True(float.IsFinite(scaled[0]));
    }

    [Fact]
    public void QuantizationBoundIsNotVacuous()
    {
        // The quantized paths must land well inside the bound on average, or the bound would hide real errors.
        var random = new Random(5);
        using var pool = new WorkerPool(2);
        const int rows = 64, cols = 1024;
        foreach (var type in new[] { GgmlType.Q8_0, GgmlType.Q4_0, GgmlType.Q4_K, GgmlType.Q6_K })
        {
            using var weights = RandomWeights(type, rows, cols, random);
            var w = new WeightMatrix((byte*)weights.Pointer, type, rows, cols);
            float[] x = RandomActivations(cols, random);
            float[] fast = new float[rows], reference = new float[rows];
            fixed (float* px = x, pf = fast, pr = reference)
            {
                MatMul.Multiply(w, px, 1, pf, pool);
                MatMul.Reference(w, px, 1, pr);
            }
            double errorSum = 0, boundSum = 0;
            for (int r = 0; r < rows; r++)
            {
                errorSum += Math.Abs(fast[r] - reference[r]);
                boundSum += ErrorScales(type, w, r, x).QuantizationBound;
            }
            Assert.True(errorSum < 0.2 * boundSum, $"{type}: mean error {errorSum / rows} vs mean bound {boundSum / rows}");
            Assert.True(errorSum > 0, $"{type}: no activation rounding error at all: are activations really quantized?");
        }
    }

    [Theory]
    [InlineData(GgmlType.Q4_0)]
    [InlineData(GgmlType.Q8_0)]
    [InlineData(GgmlType.Q4_K)]
    [InlineData(GgmlType.Q6_K)]
    [InlineData(GgmlType.F16)]
    public void SeveralMatricesInOneCallMatchEachAlone(GgmlType type)
    {
        var random = new Random(23);
        using var pool = new WorkerPool(2);
        int cols = GgmlTypeInfo.BlockSize(type) == 1 ? 96 : 512;
        int[] rows = [64, 9, 33];
        var weights = rows.Select(r => RandomWeights(type, r, cols, random)).ToArray();
        var matrices = Enumerable.Range(0, 3).Select(i => new WeightMatrix((byte*)weights[i].Pointer, type, rows[i], cols)).ToArray();
        var repacked = new NativeBuffer?[3];
        for (int i = 0; i < 3; i++) repacked[i] = Repacked(matrices[i], out matrices[i]);
        MatMulTarget* targets = stackalloc MatMulTarget[3];
        try
        {
            foreach (int tokens in new[] { 1, 6 })
            {
                float[] x = RandomActivations(tokens * cols, random);
                var together = rows.Select(r => new float[tokens * r]).ToArray();
                var alone = rows.Select(r => new float[tokens * r]).ToArray();
                fixed (float* px = x, y0 = together[0], y1 = together[1], y2 = together[2])
                {
                    targets[0] = new(matrices[0], y0);
                    targets[1] = new(matrices[1], y1);
                    targets[2] = new(matrices[2], y2);
                    MatMul.Multiply(new ReadOnlySpan<MatMulTarget>(targets, 3), px, tokens, pool);
                    for (int i = 0; i < 3; i++)
                        fixed (float* y = alone[i])
                            MatMul.Multiply(matrices[i], px, tokens, y, pool);
                }
                for (int i = 0; i < 3; i++)
                    Assert.Equal(alone[i], together[i]);
            }
        }
        finally
        {
            foreach (var w in weights) w.Dispose();
            foreach (var copy in repacked) copy?.Dispose();
        }
    }

    /// <summary>
    /// Bias, GELU and residual add applied by the product (fused in the AVX-512 GEMM's stores, or as passes after
    /// each work item elsewhere) give what the separate element-wise passes give, bit for bit, on every path.
    /// </summary>
    [Theory]
    [InlineData(GgmlType.F32, "Fastest", false)]
    [InlineData(GgmlType.F16, "Fastest", false)]
    [InlineData(GgmlType.F16, "Fastest", true)]
    [InlineData(GgmlType.BF16, "Fastest", false)]
    [InlineData(GgmlType.Q8_0, "Fastest", false)]
    [InlineData(GgmlType.Q8_0, "Fastest", true)]
    [InlineData(GgmlType.Q8_0, "Avx256", true)]
    [InlineData(GgmlType.Q8_0, "Avx2", true)]
    [InlineData(GgmlType.Q4_0, "Fastest", true)]
    [InlineData(GgmlType.Q4_0, "Avx2", true)]
    [InlineData(GgmlType.F32, "Avx2", false)]
    [InlineData(GgmlType.F32, "Portable", false)]
    public void EpiloguesEqualTheSeparatePassesBitForBit(GgmlType type, string pathName, bool rowGroups)
    {
        var path = Enum.Parse<MatMulPath>(pathName);
        var random = new Random((int)type * 31 + (int)path);
        using var pool = new WorkerPool(3);
        foreach (int cols in new[] { 64, 1120 })
        foreach (int rows in new[] { 7, 70 })
        {
            using var weights = RandomWeights(type, rows, cols, random);
            var w = new WeightMatrix((byte*)weights.Pointer, type, rows, cols);
            using var repacked = rowGroups ? Repacked(w, out w) : null;
            float[] bias = RandomActivations(rows, random);
            foreach (int tokens in new[] { 1, 5, 9, 17 })
            {
                float[] x = RandomActivations(tokens * cols, random), residual = RandomActivations(tokens * rows, random);
                float[] plain = new float[tokens * rows], biased = new float[tokens * rows], gelu = new float[tokens * rows];
                float[] added = (float[])residual.Clone();
                fixed (float* px = x, pb = bias, pp = plain, pBiased = biased, pGelu = gelu, pAdded = added)
                {
                    MatMul.Multiply(w, px, tokens, pp, pool, path);
                    MatMulTarget[] targets =
                    [
                        new(w, pBiased, pb), new(w, pGelu, pb, MatMulOutput.GeluErf), new(w, pAdded, pb, MatMulOutput.AddToOutput),
                    ];
                    MatMul.Multiply(targets, px, tokens, pool, path);
                }
                float[] expectBiased = new float[tokens * rows], expectGelu = new float[tokens * rows], expectAdded = (float[])residual.Clone();
                for (int t = 0; t < tokens; t++)
                    Elementwise.Add(plain.AsSpan(t * rows, rows), bias, expectBiased.AsSpan(t * rows, rows));
                Activations.GeluErf(expectBiased, expectGelu);
                Elementwise.Add(expectAdded, expectBiased, expectAdded);
                string where = $"{type} {path} rows={rows} cols={cols} tokens={tokens}";
                Assert.True(MemoryMarshal.Cast<float, int>(biased).SequenceEqual(MemoryMarshal.Cast<float, int>(expectBiased)), $"{where}: bias");
                Assert.True(MemoryMarshal.Cast<float, int>(gelu).SequenceEqual(MemoryMarshal.Cast<float, int>(expectGelu)), $"{where}: GELU");
                Assert.True(MemoryMarshal.Cast<float, int>(added).SequenceEqual(MemoryMarshal.Cast<float, int>(expectAdded)), $"{where}: residual");
            }
        }
    }

    [Fact]
    public void MatricesOfDifferentTypesInOneCallGiveWhatSeparateCallsGive()
    {
        const int cols = 256, rows = 8, tokens = 3;
        using var pool = new WorkerPool(2);
        var rng = new Random(5);
        var types = new[] { GgmlType.Q4_K, GgmlType.Q4_K, GgmlType.Q6_K };
        var buffers = types.Select(t => new NativeBuffer(GgmlTypeInfo.RowBytes(t, cols) * rows)).ToArray();
        try
        {
            var row = new float[cols];
            for (int m = 0; m < types.Length; m++)
                for (int r = 0; r < rows; r++)
                {
                    for (int c = 0; c < cols; c++) row[c] = (float)(rng.NextDouble() * 2 - 1);
                    long bytes = GgmlTypeInfo.RowBytes(types[m], cols);
                    Quantize.Row(types[m], row, new Span<byte>((byte*)buffers[m].Pointer + r * bytes, (int)bytes));
                }
            var x = Enumerable.Range(0, cols * tokens).Select(_ => (float)(rng.NextDouble() * 2 - 1)).ToArray();
            var together = new float[types.Length * rows * tokens];
            var separate = new float[together.Length];
            fixed (float* px = x, pt = together, ps = separate)
            {
                var targets = new MatMulTarget[types.Length];
                for (int m = 0; m < types.Length; m++)
                {
                    var w = new WeightMatrix((byte*)buffers[m].Pointer, types[m], rows, cols);
                    targets[m] = new MatMulTarget(w, pt + m * rows * tokens);
                    MatMul.Multiply(w, px, tokens, ps + m * rows * tokens, pool);
                }
                MatMul.Multiply(targets, px, tokens, pool);
            }
            Assert.Equal(separate, together);
        }
        finally
        {
            foreach (var b in buffers) b.Dispose();
        }
    }

    [Theory]
    [InlineData(GgmlType.F16, 1)]
    [InlineData(GgmlType.Q4_0, 1)]
    [InlineData(GgmlType.Q4_K, 5)]
    [InlineData(GgmlType.Q6_K, 1)]
    public void MultiplyDoesNotAllocate(GgmlType type, int tokens)
    {
        var random = new Random(11);
        using var pool = new WorkerPool(2);
        const int rows = 40, cols = 512;
        using var weights = RandomWeights(type, rows, cols, random);
        using var repacked = Repacked(new WeightMatrix((byte*)weights.Pointer, type, rows, cols), out var w);
        float[] x = RandomActivations(tokens * cols, random);
        float[] y = new float[tokens * rows];
        fixed (float* px = x, py = y)
        {
            float* input = px, output = py; // a lambda may not use fixed locals themselves
            MatMul.Multiply(w, input, tokens, output, pool);
            AllocationCheck.SomeWindowAllocatesNothing(() => MatMul.Multiply(w, input, tokens, output, pool), stepsPerWindow: 20);
        }
    }

    /// <summary>Weights as a model file would hold them: normal floats quantized by the reference quantizer.</summary>
    /// <summary>
    /// <paramref name="w"/> with the repacked copy the loader makes for types the kernels read interleaved, in the
    /// buffer returned (null for other types, which stay as they are).
    /// </summary>
    internal static NativeBuffer? Repacked(WeightMatrix plain, out WeightMatrix w)
    {
        w = plain;
        if (!RowGroups.Repacks(plain.Type) && !F16RowGroupKernels.Reads(plain.Type, plain.Cols)) return null;
        return RowGroupKernelTests.Repack(plain, out w);
    }

    internal static NativeBuffer RandomWeights(GgmlType type, int rows, int cols, Random random)
    {
        long rowBytes = GgmlTypeInfo.RowBytes(type, cols);
        var buffer = new NativeBuffer(rows * rowBytes);
        var values = new float[cols];
        for (int r = 0; r < rows; r++)
        {
            for (int c = 0; c < cols; c++)
                values[c] = (float)(Normal(random) * 0.02);
            Quantize.Row(type, values, new Span<byte>((byte*)buffer.Pointer + r * rowBytes, (int)rowBytes));
        }
        return buffer;
    }

    /// <summary>Normal activations with occasional outliers, as hidden states have.</summary>
    internal static float[] RandomActivations(int count, Random random)
    {
        var x = new float[count];
        for (int i = 0; i < count; i++)
            x[i] = (float)(Normal(random) * (random.Next(50) == 0 ? 20 : 1));
        return x;
    }

    private static double Normal(Random random) =>
        Math.Sqrt(-2 * Math.Log(1 - random.NextDouble())) * Math.Cos(2 * Math.PI * random.NextDouble());
}

/// <summary>A theory that runs only where the CPU has AVX-512 (and the runtime uses it), reported as skipped elsewhere.</summary>
public sealed class Avx512TheoryAttribute : TheoryAttribute
{
    public Avx512TheoryAttribute()
    {
        if (!Avx512F.IsSupported)
            Skip = "This CPU has no AVX-512, or DOTNET_EnableAVX512=0 turned it off (on .NET 10 DOTNET_EnableAVX512F=0 no longer does).";
    }
}

public sealed class VnniTheoryAttribute : TheoryAttribute
{
    public VnniTheoryAttribute()
    {
        if (!AvxVnni.IsSupported)
            Skip = "This CPU has no AVX-VNNI, or DOTNET_EnableAVXVNNI=0 turned it off.";
    }
}
