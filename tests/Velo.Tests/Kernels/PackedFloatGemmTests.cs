using System.Runtime.InteropServices;
using Velo.Kernels;
using Velo.Tensors;
using Velo.Threading;

namespace Velo.Tests.Kernels;

public unsafe class PackedFloatGemmTests
{
    /// <summary>
    /// The encoders' packed GEMM gives its reference's fused multiply-add chains bit for bit, with every epilogue,
    /// for token counts that fill whole tiles and items, leave tails, or come alone; several matrices in one call.
    /// </summary>
    [Avx512Theory]
    [InlineData(GgmlType.F32)]
    [InlineData(GgmlType.F16)]
    [InlineData(GgmlType.Q8_0)]
    public void MatchesTheReferenceBitForBit(GgmlType type)
    {
        var random = new Random(17 + (int)type);
        using var pool = new WorkerPool(3);
        foreach (int cols in type == GgmlType.Q8_0 ? new[] { 32, 384 } : new[] { 1, 37, 384 })
        foreach (int rows in new[] { 64, 192 })
        {
            using var weights = MatMulTests.RandomWeights(type, rows, cols, random);
            var w = new WeightMatrix((byte*)weights.Pointer, type, rows, cols);
            Assert.True(PackedFloatMatrix.CanPack(w));
            using var packed = new PackedFloatMatrix(w);
            float[] bias = MatMulTests.RandomActivations(rows, random);
            foreach (int tokens in new[] { 1, 6, 13, 16, 96, 101 })
            {
                float[] x = MatMulTests.RandomActivations(tokens * cols, random), residual = MatMulTests.RandomActivations(tokens * rows, random);
                float[] plain = new float[tokens * rows], gelu = new float[tokens * rows], added = (float[])residual.Clone();
                float[] expectPlain = new float[tokens * rows], expectGelu = new float[tokens * rows], expectAdded = (float[])residual.Clone();
                fixed (float* px = x, pb = bias, pp = plain, pg = gelu, pa = added, ep = expectPlain, eg = expectGelu, ea = expectAdded)
                {
                    PackedFloatGemm.Multiply([new(packed, pp), new(packed, pg, pb, MatMulOutput.GeluErf), new(packed, pa, pb, MatMulOutput.AddToOutput)],
                        px, tokens, pool);
                    PackedFloatGemm.Reference(w, px, tokens, ep, new MatMulEpilogue(null, MatMulOutput.Store));
                    PackedFloatGemm.Reference(w, px, tokens, eg, new MatMulEpilogue(pb, MatMulOutput.GeluErf));
                    PackedFloatGemm.Reference(w, px, tokens, ea, new MatMulEpilogue(pb, MatMulOutput.AddToOutput));
                }
                string where = $"{type} rows={rows} cols={cols} tokens={tokens}";
                Assert.True(Bits(plain).SequenceEqual(Bits(expectPlain)), $"{where}: plain");
                Assert.True(Bits(gelu).SequenceEqual(Bits(expectGelu)), $"{where}: bias + GELU");
                Assert.True(Bits(added).SequenceEqual(Bits(expectAdded)), $"{where}: bias + residual");
            }
        }
    }

    /// <summary>The reference is a float product: within float rounding of the double-precision MatMul reference.</summary>
    [Fact]
    public void ReferenceAgreesWithTheMatMulReference()
    {
        var random = new Random(3);
        const int rows = 32, cols = 300, tokens = 5;
        using var weights = MatMulTests.RandomWeights(GgmlType.F32, rows, cols, random);
        var w = new WeightMatrix((byte*)weights.Pointer, GgmlType.F32, rows, cols);
        float[] x = MatMulTests.RandomActivations(tokens * cols, random), y = new float[tokens * rows], expect = new float[tokens * rows];
        fixed (float* px = x, py = y, pe = expect)
        {
            PackedFloatGemm.Reference(w, px, tokens, py, default);
            MatMul.Reference(w, px, tokens, pe);
        }
        for (int i = 0; i < y.Length; i++) Assert.Equal(expect[i], y[i], 1e-4f);
    }

    [Fact]
    public void RefusesMatricesItCannotPack()
    {
        using var weights = new NativeBuffer(96 * 8 * sizeof(float));
        Assert.False(PackedFloatMatrix.CanPack(new WeightMatrix((byte*)weights.Pointer, GgmlType.F32, 96, 8)));
        Assert.False(PackedFloatMatrix.CanPack(new WeightMatrix((byte*)weights.Pointer, GgmlType.Q4_0, 64, 32)));
    }

    private static ReadOnlySpan<int> Bits(float[] values) => MemoryMarshal.Cast<float, int>(values);
}
