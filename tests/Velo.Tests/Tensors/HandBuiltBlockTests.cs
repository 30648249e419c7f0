using Velo.Tensors;

namespace Velo.Tests.Tensors;

/// <summary>
/// Blocks assembled byte by byte from the documented ggml layouts (offsets written out here, not taken from Velo's
/// structs), with the expected floats worked out from the format's formula. Scales and levels are chosen so every
/// expected value is an exact small binary fraction, so no rounding question arises.
/// </summary>
public class HandBuiltBlockTests
{
    private static void PutHalf(byte[] block, int offset, float value) =>
        BitConverter.TryWriteBytes(block.AsSpan(offset), (Half)value);

    private static float[] Dequantized(GgmlType type, byte[] bytes, int elements)
    {
        var result = new float[elements];
        Dequantize.Row(type, bytes, result);
        return result;
    }

    [Fact]
    public void F32IsCopied()
    {
        float[] values = [1.5f, -0.0f, float.PositiveInfinity, 1e-40f];
        byte[] bytes = values.SelectMany(BitConverter.GetBytes).ToArray();
        Assert.Equal(values, Dequantized(GgmlType.F32, bytes, 4));
    }

    [Fact]
    public void F16BitPatternsDecode()
    {
        ushort[] bits = [0x3C00, 0xC000, 0x7BFF, 0x0001, 0x7C00, 0x3555];
        float[] expected = [1f, -2f, 65504f, MathF.Pow(2, -24), float.PositiveInfinity, 0.333251953125f];
        byte[] bytes = bits.SelectMany(BitConverter.GetBytes).ToArray();
        Assert.Equal(expected, Dequantized(GgmlType.F16, bytes, bits.Length));
    }

    [Fact]
    public void BF16BitPatternsDecode()
    {
        ushort[] bits = [0x3F80, 0xC040, 0x7F80, 0x0001, 0x4049];
        float[] expected = [1f, -3f, float.PositiveInfinity, BitConverter.UInt32BitsToSingle(0x0001_0000), 3.140625f];
        byte[] bytes = bits.SelectMany(BitConverter.GetBytes).ToArray();
        Assert.Equal(expected, Dequantized(GgmlType.BF16, bytes, bits.Length));
    }

    [Fact]
    public void Q4_0IsNibbleMinusEightTimesScale()
    {
        var block = new byte[18];
        PutHalf(block, 0, 0.5f);
        for (int j = 0; j < 16; j++) block[2 + j] = (byte)(j | ((15 - j) << 4));

        float[] y = Dequantized(GgmlType.Q4_0, block, 32);
        for (int j = 0; j < 16; j++)
        {
            Assert.Equal((j - 8) * 0.5f, y[j]);
            Assert.Equal((7 - j) * 0.5f, y[j + 16]);
        }
    }

    [Fact]
    public void Q4_1IsNibbleTimesScalePlusMin()
    {
        var block = new byte[20];
        PutHalf(block, 0, 0.25f);
        PutHalf(block, 2, -1f);
        for (int j = 0; j < 16; j++) block[4 + j] = (byte)((15 - j) | (j << 4));

        float[] y = Dequantized(GgmlType.Q4_1, block, 32);
        for (int j = 0; j < 16; j++)
        {
            Assert.Equal((15 - j) * 0.25f - 1, y[j]);
            Assert.Equal(j * 0.25f - 1, y[j + 16]);
        }
    }

    /// <summary>Fifth bits 0xAAAA5555: set for the even elements of the first half and the odd ones of the second.</summary>
    private static byte[] Q5Block(int qhOffset, float d, float? m)
    {
        var block = new byte[qhOffset + 4 + 16];
        PutHalf(block, 0, d);
        if (m is float min) PutHalf(block, 2, min);
        byte[] qh = [0x55, 0x55, 0xAA, 0xAA];
        qh.CopyTo(block, qhOffset);
        for (int j = 0; j < 16; j++) block[qhOffset + 4 + j] = (byte)(j | ((15 - j) << 4));
        return block;
    }

    private static int Q5Level(int element) =>
        element < 16 ? element + (element % 2 == 0 ? 16 : 0) : (31 - element) + (element % 2 == 1 ? 16 : 0);

    [Fact]
    public void Q5_0TakesTheFifthBitFromQh()
    {
        float[] y = Dequantized(GgmlType.Q5_0, Q5Block(2, 2f, null), 32);
        for (int i = 0; i < 32; i++) Assert.Equal((Q5Level(i) - 16) * 2f, y[i]);
    }

    [Fact]
    public void Q5_1TakesTheFifthBitFromQh()
    {
        float[] y = Dequantized(GgmlType.Q5_1, Q5Block(4, 0.5f, 3f), 32);
        for (int i = 0; i < 32; i++) Assert.Equal(Q5Level(i) * 0.5f + 3f, y[i]);
    }

    [Fact]
    public void Q8_0IsSignedByteTimesScale()
    {
        var block = new byte[34];
        PutHalf(block, 0, 0.125f);
        for (int j = 0; j < 32; j++) block[2 + j] = (byte)(sbyte)(j * 8 - 128);

        float[] y = Dequantized(GgmlType.Q8_0, block, 32);
        for (int j = 0; j < 32; j++) Assert.Equal(j - 16f, y[j]);
    }

    /// <summary>Q2_K/Q3_K: element 128*h + 32*s + l is bits 2s..2s+1 of byte l of the h-th run of 32 bytes.</summary>
    private static void PutTwoBits(byte[] block, int qsOffset, int element, int value)
    {
        int half = element / 128, s = element % 128 / 32, l = element % 32;
        block[qsOffset + 32 * half + l] |= (byte)(value << (2 * s));
    }

    [Fact]
    public void Q2_KAppliesFourBitScaleAndMinPerSixteen()
    {
        var block = new byte[84]; // scales[16] qs[64] d dmin
        for (int g = 0; g < 16; g++) block[g] = (byte)(g | ((15 - g) << 4));
        PutHalf(block, 80, 0.5f);
        PutHalf(block, 82, 0.25f);
        static int Level(int i) => (i * 3 + i / 7) % 4;
        for (int i = 0; i < 256; i++) PutTwoBits(block, 16, i, Level(i));

        float[] y = Dequantized(GgmlType.Q2_K, block, 256);
        for (int i = 0; i < 256; i++)
        {
            int g = i / 16;
            Assert.Equal(0.5f * g * Level(i) - 0.25f * (15 - g), y[i]);
        }
    }

    [Fact]
    public void Q3_KUnpacksSixBitScalesFromTwelveBytes()
    {
        // Code 63 for group 0 (low nibble 0xF in byte 0, top bits 3 in byte 8 at bit 0) and code 37 for group 13
        // (low nibble 5 in the high half of byte 5, top bits 2 in byte 9 at bit 6); every other code is 0.
        var block = new BlockQ3_K();
        byte[] packed = [0x0F, 0, 0, 0, 0, 0x50, 0, 0, 0x03, 0x80, 0, 0];
        unsafe { for (int i = 0; i < 12; i++) block.Scales[i] = packed[i]; }

        var scales = new sbyte[16];
        block.UnpackScales(scales);

        sbyte[] expected = Enumerable.Repeat((sbyte)-32, 16).ToArray();
        expected[0] = 31;
        expected[13] = 5;
        Assert.Equal(expected, scales);
    }

    [Fact]
    public void Q3_KIsSignedScaleTimesThreeBitLevelMinusFour()
    {
        var block = new byte[110]; // hmask[32] qs[64] scales[12] d
        static int Code(int g) => (g * 7 + 3) % 64;
        for (int g = 0; g < 16; g++)
        {
            int code = Code(g);
            block[96 + g % 8] |= (byte)((code & 0xF) << (g < 8 ? 0 : 4));
            block[96 + 8 + g % 4] |= (byte)((code >> 4) << (2 * (g / 4)));
        }
        PutHalf(block, 108, 0.25f);
        static int Level(int i) => (i * 5 + i / 9) % 8;
        for (int i = 0; i < 256; i++)
        {
            PutTwoBits(block, 32, i, Level(i) & 3);
            if (Level(i) >= 4) block[i % 32] |= (byte)(1 << (i / 32));
        }

        float[] y = Dequantized(GgmlType.Q3_K, block, 256);
        for (int i = 0; i < 256; i++)
            Assert.Equal(0.25f * (Code(i / 16) - 32) * (Level(i) - 4), y[i]);
    }

    // Eight 6-bit scales and mins, groups 4..7 using the top bits, and their 12-byte packing worked out by hand:
    // bytes 0..3 = scale[g] | (scale[g+4] >> 4) << 6, bytes 4..7 = min[g] | (min[g+4] >> 4) << 6,
    // bytes 8..11 = (scale[g+4] & 15) | (min[g+4] & 15) << 4.
    private static readonly byte[] KScales = [1, 2, 3, 4, 17, 33, 50, 63];
    private static readonly byte[] KMins = [0, 5, 10, 15, 20, 40, 60, 63];
    private static readonly byte[] KPacked = [0x41, 0x82, 0xC3, 0xC4, 0x40, 0x85, 0xCA, 0xCF, 0x41, 0x81, 0xC2, 0xFF];

    [Fact]
    public unsafe void KQuantScalePackingRoundTrips()
    {
        var scales = new byte[8];
        var mins = new byte[8];
        fixed (byte* packed = KPacked)
            for (int g = 0; g < 8; g++)
                KQuantScales.GetScaleMin(g, packed, out scales[g], out mins[g]);
        Assert.Equal(KScales, scales);
        Assert.Equal(KMins, mins);

        var repacked = new byte[12];
        fixed (byte* destination = repacked)
            KQuantScales.Pack(KScales, KMins, destination);
        Assert.Equal(KPacked, repacked);
    }

    [Fact]
    public void Q4_KIsScaleTimesNibbleMinusMinPerThirtyTwo()
    {
        var block = new byte[144]; // d dmin scales[12] qs[128]
        PutHalf(block, 0, 0.5f);
        PutHalf(block, 2, 0.25f);
        KPacked.CopyTo(block, 4);
        static int Level(int i) => (i * 5 + i / 32) % 16;
        for (int i = 0; i < 256; i++)
        {
            int g = i / 32, l = i % 32;
            block[16 + 32 * (g / 2) + l] |= (byte)(Level(i) << (4 * (g % 2)));
        }

        float[] y = Dequantized(GgmlType.Q4_K, block, 256);
        for (int i = 0; i < 256; i++)
            Assert.Equal(0.5f * KScales[i / 32] * Level(i) - 0.25f * KMins[i / 32], y[i]);
    }

    [Fact]
    public void Q5_KAddsTheFifthBitFromQh()
    {
        var block = new byte[176]; // d dmin scales[12] qh[32] qs[128]
        PutHalf(block, 0, 0.5f);
        PutHalf(block, 2, 0.25f);
        KPacked.CopyTo(block, 4);
        static int Level(int i) => (i * 13 + i / 32) % 32;
        for (int i = 0; i < 256; i++)
        {
            int g = i / 32, l = i % 32;
            block[48 + 32 * (g / 2) + l] |= (byte)((Level(i) & 0xF) << (4 * (g % 2)));
            block[16 + l] |= (byte)((Level(i) >> 4) << g);
        }

        float[] y = Dequantized(GgmlType.Q5_K, block, 256);
        for (int i = 0; i < 256; i++)
            Assert.Equal(0.5f * KScales[i / 32] * Level(i) - 0.25f * KMins[i / 32], y[i]);
    }

    [Fact]
    public void Q6_KIsSignedScaleTimesSixBitLevelMinusThirtyTwo()
    {
        var block = new byte[210]; // ql[128] qh[64] scales[16] d
        static int Scale(int g) => g * 17 - 128;
        for (int g = 0; g < 16; g++) block[192 + g] = (byte)(sbyte)Scale(g);
        PutHalf(block, 208, 0.0625f);
        static int Level(int i) => (i * 11 + i / 64) % 64;
        for (int i = 0; i < 256; i++)
        {
            int half = i / 128, quarter = i % 128 / 32, l = i % 32;
            int lowShift = quarter < 2 ? 0 : 4;
            block[64 * half + 32 * (quarter % 2) + l] |= (byte)((Level(i) & 0xF) << lowShift);
            block[128 + 32 * half + l] |= (byte)((Level(i) >> 4) << (2 * quarter));
        }

        float[] y = Dequantized(GgmlType.Q6_K, block, 256);
        for (int i = 0; i < 256; i++)
            Assert.Equal(0.0625f * Scale(i / 16) * (Level(i) - 32), y[i]);
    }
}
