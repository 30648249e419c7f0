using Velo.Tensors;

namespace Velo.Tests.Tensors;

public class ScalarConversionTests
{
    [Theory]
    [InlineData(0x3F80_0000u, (ushort)0x3F80)] // 1.0 exactly
    [InlineData(0x3F80_8000u, (ushort)0x3F80)] // halfway, even below: down
    [InlineData(0x3F81_8000u, (ushort)0x3F82)] // halfway, odd below: up to even
    [InlineData(0x3F80_8001u, (ushort)0x3F81)] // just above halfway: up
    [InlineData(0xBF80_7FFFu, (ushort)0xBF80)] // just below halfway, negative: down in magnitude
    [InlineData(0x7F7F_FFFFu, (ushort)0x7F80)] // float.MaxValue rounds up to infinity
    [InlineData(0xFF80_0000u, (ushort)0xFF80)] // -infinity
    [InlineData(0x0000_8000u, (ushort)0x0000)] // subnormal, halfway: to even
    [InlineData(0x7F80_0001u, (ushort)0x7FC0)] // signalling NaN whose payload would be lost: quiet NaN, not infinity
    [InlineData(0xFFC1_2345u, (ushort)0xFFC1)] // quiet NaN keeps sign and top payload
    public void BFloat16RoundsToNearestEvenAndKeepsNaN(uint floatBits, ushort expected)
    {
        Assert.Equal(expected, BFloat16.FromSingle(BitConverter.UInt32BitsToSingle(floatBits)));
    }

    [Fact]
    public void BFloat16IsTheTopHalfOfAFloat()
    {
        Assert.Equal(-2.5f, BFloat16.ToSingle(0xC020));
        Assert.Equal(BitConverter.UInt32BitsToSingle(0x1234_0000), BFloat16.ToSingle(0x1234));
    }

    [Theory]
    [InlineData(2.5f, 2)]
    [InlineData(3.5f, 4)]
    [InlineData(-2.5f, -2)]
    [InlineData(-0.49f, 0)]
    [InlineData(0.51f, 1)]
    [InlineData(4194303f, 4194303)]
    [InlineData(-4194303f, -4194303)]
    public void NearestIntRoundsHalfToEven(float value, int expected)
    {
        Assert.Equal(expected, KQuantSolver.NearestInt(value));
    }
}
