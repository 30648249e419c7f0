using System.Runtime.CompilerServices;
using Velo.Tensors;

namespace Velo.Tests.Tensors;

public class EdgeCaseTests
{
    private const int Elements = 2 * GgmlTypeInfo.QK_K;

    private static readonly GgmlType[] Quantized =
    [
        GgmlType.Q4_0, GgmlType.Q4_1, GgmlType.Q5_0, GgmlType.Q5_1, GgmlType.Q8_0,
        GgmlType.Q2_K, GgmlType.Q3_K, GgmlType.Q4_K, GgmlType.Q5_K, GgmlType.Q6_K,
    ];

    public static TheoryData<GgmlType> QuantizedTypes => new(Quantized);

    public static TheoryData<GgmlType> AllTypes => new([GgmlType.F32, GgmlType.F16, GgmlType.BF16, .. Quantized]);

    [Theory]
    [MemberData(nameof(AllTypes))]
    public void AllZerosStayExactlyZero(GgmlType type)
    {
        float[] y = RoundTripTests.RoundTrip(type, new float[Elements]);
        Assert.All(y, v => Assert.Equal(0f, v));
    }

    [Theory]
    [MemberData(nameof(AllTypes))]
    public void ConstantRowsComeBackClose(GgmlType type)
    {
        foreach (float constant in new[] { 0.3f, -7f, 1000f })
        {
            float[] y = RoundTripTests.RoundTrip(type, Enumerable.Repeat(constant, Elements).ToArray());
            // A constant is the easy case for every format; allow 1/32 relative for Q2_K's 2-bit levels and 4-bit scales.
            Assert.All(y, v => Assert.InRange(v, constant - MathF.Abs(constant) / 32, constant + MathF.Abs(constant) / 32));
        }
    }

    /// <summary>
    /// Rows that stress the scale search: a lone spike among zeros, values too small for an fp16 scale (which must
    /// collapse to zeros, not NaN), magnitudes up to fp16's range, and mixes of the two.
    /// </summary>
    [Theory]
    [MemberData(nameof(AllTypes))]
    public void ExtremeRowsNeverProduceNaNOrInfinity(GgmlType type)
    {
        var rows = new List<float[]>();
        var spike = new float[Elements];
        spike[77] = 5f;
        rows.Add(spike);
        rows.Add(RoundTripTests.Gaussian(Elements, 11, sigma: 1e-30f));
        rows.Add(RoundTripTests.Gaussian(Elements, 12, sigma: 1e-9f));
        rows.Add(RoundTripTests.Gaussian(Elements, 13, sigma: 1e4f).Select(v => Math.Clamp(v, -6e4f, 6e4f)).ToArray());
        float[] mixed = RoundTripTests.Gaussian(Elements, 14, sigma: 1e-6f);
        for (int i = 0; i < Elements; i += 50) mixed[i] = 3e4f;
        rows.Add(mixed);

        foreach (float[] row in rows)
            Assert.All(RoundTripTests.RoundTrip(type, row), v => Assert.True(float.IsFinite(v), $"{type} produced {v}"));
    }

    [Theory]
    [MemberData(nameof(QuantizedTypes))]
    public void ValuesTooSmallForAnFp16ScaleBecomeZero(GgmlType type)
    {
        float[] y = RoundTripTests.RoundTrip(type, RoundTripTests.Gaussian(Elements, 15, sigma: 1e-30f));
        Assert.All(y, v => Assert.Equal(0f, v));
    }

    [Theory]
    [MemberData(nameof(AllTypes))]
    public void RowsThatAreNotWholeBlocksThrow(GgmlType type)
    {
        int blockSize = GgmlTypeInfo.BlockSize(type), blockBytes = GgmlTypeInfo.BlockBytes(type);
        if (blockSize > 1)
        {
            Assert.Throws<ArgumentException>(() => Dequantize.Row(type, new byte[blockBytes], new float[blockSize + 1]));
            Assert.Throws<ArgumentException>(() => Quantize.Row(type, new float[blockSize - 1], new byte[blockBytes]));
        }
        Assert.Throws<ArgumentException>(() => Dequantize.Row(type, new byte[blockBytes * 2 - 1], new float[blockSize * 2]));
        Assert.Throws<ArgumentException>(() => Dequantize.Row(type, new byte[blockBytes * 3], new float[blockSize * 2]));
        Assert.Throws<ArgumentException>(() => Quantize.Row(type, new float[blockSize * 2], new byte[blockBytes]));
        Assert.Throws<ArgumentException>(() => Quantize.Row(type, new float[blockSize * 2], new byte[blockBytes * 2 + 1]));
    }

    [Theory]
    [MemberData(nameof(AllTypes))]
    public void EmptyRowsAreAllowed(GgmlType type)
    {
        Dequantize.Row(type, [], []);
        Quantize.Row(type, [], []);
    }

    [Theory]
    [InlineData(GgmlType.Q8_1)]
    [InlineData(GgmlType.Q8_K)]
    [InlineData(GgmlType.IQ2_XXS)]
    [InlineData(GgmlType.IQ4_NL)]
    [InlineData(GgmlType.I32)]
    [InlineData(GgmlType.F64)]
    [InlineData((GgmlType)99)]
    public void UnsupportedTypesThrowNamingTheType(GgmlType type)
    {
        var dequantize = Assert.Throws<NotSupportedException>(() => Dequantize.Row(type, new byte[1024], new float[256]));
        Assert.Contains(type.ToString(), dequantize.Message);
        var quantize = Assert.Throws<NotSupportedException>(() => Quantize.Row(type, new float[256], new byte[1024]));
        Assert.Contains(type.ToString(), quantize.Message);
    }

    [Theory]
    [MemberData(nameof(AllTypes))]
    public void RowConversionsDoNotAllocate(GgmlType type)
    {
        float[] x = RoundTripTests.Gaussian(Elements, 16);
        var bytes = new byte[GgmlTypeInfo.RowBytes(type, Elements)];
        var y = new float[Elements];
        Quantize.Row(type, x, bytes); // warm up: JIT and static initialisation may allocate once
        Dequantize.Row(type, bytes, y);

        long before = GC.GetAllocatedBytesForCurrentThread();
        Quantize.Row(type, x, bytes);
        Dequantize.Row(type, bytes, y);
        Assert.Equal(0, GC.GetAllocatedBytesForCurrentThread() - before);
    }

    [Fact]
    public void BlockStructsHaveGgmlSizes()
    {
        Assert.Equal(GgmlTypeInfo.BlockBytes(GgmlType.Q4_0), Unsafe.SizeOf<BlockQ4_0>());
        Assert.Equal(GgmlTypeInfo.BlockBytes(GgmlType.Q4_1), Unsafe.SizeOf<BlockQ4_1>());
        Assert.Equal(GgmlTypeInfo.BlockBytes(GgmlType.Q5_0), Unsafe.SizeOf<BlockQ5_0>());
        Assert.Equal(GgmlTypeInfo.BlockBytes(GgmlType.Q5_1), Unsafe.SizeOf<BlockQ5_1>());
        Assert.Equal(GgmlTypeInfo.BlockBytes(GgmlType.Q8_0), Unsafe.SizeOf<BlockQ8_0>());
        Assert.Equal(GgmlTypeInfo.BlockBytes(GgmlType.Q2_K), Unsafe.SizeOf<BlockQ2_K>());
        Assert.Equal(GgmlTypeInfo.BlockBytes(GgmlType.Q3_K), Unsafe.SizeOf<BlockQ3_K>());
        Assert.Equal(GgmlTypeInfo.BlockBytes(GgmlType.Q4_K), Unsafe.SizeOf<BlockQ4_K>());
        Assert.Equal(GgmlTypeInfo.BlockBytes(GgmlType.Q5_K), Unsafe.SizeOf<BlockQ5_K>());
        Assert.Equal(GgmlTypeInfo.BlockBytes(GgmlType.Q6_K), Unsafe.SizeOf<BlockQ6_K>());
    }
}
