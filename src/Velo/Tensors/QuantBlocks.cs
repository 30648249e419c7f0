using System.Runtime.InteropServices;

namespace Velo.Tensors;

// Byte layouts of ggml's quantized blocks (ggml-common.h), field for field, so a row of a GGUF tensor can be viewed as
// a span of these structs with MemoryMarshal.Cast. Sizes match GgmlTypeInfo.BlockBytes (checked by the tests).
// "Half" fields are IEEE binary16; every multi-byte field is little-endian, as GGUF stores it.

/// <summary>32 weights: <c>(q - 8) * D</c>, q a 4-bit nibble. Byte j holds element j (low nibble) and j + 16 (high).</summary>
[StructLayout(LayoutKind.Sequential, Pack = 1)]
internal unsafe struct BlockQ4_0
{
    public const int Elements = 32;
    public Half D;
    public fixed byte Qs[16];
}

/// <summary>32 weights: <c>q * D + M</c>, nibbles packed as in <see cref="BlockQ4_0"/>.</summary>
[StructLayout(LayoutKind.Sequential, Pack = 1)]
internal unsafe struct BlockQ4_1
{
    public const int Elements = 32;
    public Half D;
    public Half M;
    public fixed byte Qs[16];
}

/// <summary>
/// 32 weights: <c>(q - 16) * D</c>, q 5 bits: low nibble packed as in <see cref="BlockQ4_0"/>, fifth bit of element j
/// is bit j of the little-endian 32-bit <see cref="Qh"/>.
/// </summary>
[StructLayout(LayoutKind.Sequential, Pack = 1)]
internal unsafe struct BlockQ5_0
{
    public const int Elements = 32;
    public Half D;
    public fixed byte Qh[4];
    public fixed byte Qs[16];
}

/// <summary>32 weights: <c>q * D + M</c>, q 5 bits packed as in <see cref="BlockQ5_0"/>.</summary>
[StructLayout(LayoutKind.Sequential, Pack = 1)]
internal unsafe struct BlockQ5_1
{
    public const int Elements = 32;
    public Half D;
    public Half M;
    public fixed byte Qh[4];
    public fixed byte Qs[16];
}

/// <summary>32 weights: <c>q * D</c>, q a signed byte.</summary>
[StructLayout(LayoutKind.Sequential, Pack = 1)]
internal unsafe struct BlockQ8_0
{
    public const int Elements = 32;
    public Half D;
    public fixed sbyte Qs[32];
}

/// <summary>
/// 256 weights in 16 groups of 16: <c>D * (Scales[g] &amp; 15) * q - DMin * (Scales[g] &gt;&gt; 4)</c>, q 2 bits.
/// Each 128-element half uses 32 bytes of <see cref="Qs"/>: element 32*s + l of the half is bits 2s..2s+1 of byte l.
/// </summary>
[StructLayout(LayoutKind.Sequential, Pack = 1)]
internal unsafe struct BlockQ2_K
{
    public const int Elements = GgmlTypeInfo.QK_K;
    public fixed byte Scales[16];
    public fixed byte Qs[64];
    public Half D;
    public Half DMin;
}

/// <summary>
/// 256 weights in 16 groups of 16: <c>D * (scale[g] - 32) * (q - 4)</c>. The low two bits of q are packed as in
/// <see cref="BlockQ2_K"/>; the third bit of element i is bit i / 32 of <c>HMask[i % 32]</c>. The 6-bit group scales
/// are packed into 12 bytes: see <see cref="UnpackScales"/>.
/// </summary>
[StructLayout(LayoutKind.Sequential, Pack = 1)]
internal unsafe struct BlockQ3_K
{
    public const int Elements = GgmlTypeInfo.QK_K;
    public fixed byte HMask[32];
    public fixed byte Qs[64];
    public fixed byte Scales[12];
    public Half D;

    /// <summary>
    /// The 16 group scales, already offset by -32. Bytes 0..7 hold the low nibbles (groups 0..7 in the low nibble,
    /// 8..15 in the high); bytes 8..11 hold the top two bits, group g at bit 2 * (g / 4) of byte 8 + g % 4.
    /// </summary>
    public readonly void UnpackScales(Span<sbyte> scales)
    {
        if (scales.Length < 16) throw new ArgumentException("Q3_K has 16 group scales.", nameof(scales));
        for (int g = 0; g < 16; g++)
        {
            int low = g < 8 ? Scales[g] & 0xF : Scales[g - 8] >> 4;
            int high = (Scales[8 + g % 4] >> (2 * (g / 4))) & 3;
            scales[g] = (sbyte)((low | (high << 4)) - 32);
        }
    }
}

/// <summary>
/// 256 weights in 8 groups of 32: <c>D * scale[g] * q - DMin * min[g]</c>, q a nibble. Each 64-element pair of groups
/// uses 32 bytes of <see cref="Qs"/>: the first group in the low nibbles, the second in the high. The 6-bit scales and
/// mins are packed into 12 bytes: see <see cref="GetScaleMin"/>.
/// </summary>
[StructLayout(LayoutKind.Sequential, Pack = 1)]
internal unsafe struct BlockQ4_K
{
    public const int Elements = GgmlTypeInfo.QK_K;
    public Half D;
    public Half DMin;
    public fixed byte Scales[12];
    public fixed byte Qs[128];

    /// <summary>Scale and min of group <paramref name="group"/> (0..7) in the shared 12-byte K-quant packing.</summary>
    public readonly void GetScaleMin(int group, out byte scale, out byte min)
    {
        fixed (byte* packed = Scales)
            KQuantScales.GetScaleMin(group, packed, out scale, out min);
    }
}

/// <summary>
/// 256 weights in 8 groups of 32: <c>D * scale[g] * q - DMin * min[g]</c>, q 5 bits: the low nibble packed as in
/// <see cref="BlockQ4_K"/>, the fifth bit of element 32*g + l is bit g of <c>Qh[l]</c>.
/// </summary>
[StructLayout(LayoutKind.Sequential, Pack = 1)]
internal unsafe struct BlockQ5_K
{
    public const int Elements = GgmlTypeInfo.QK_K;
    public Half D;
    public Half DMin;
    public fixed byte Scales[12];
    public fixed byte Qh[32];
    public fixed byte Qs[128];

    /// <inheritdoc cref="BlockQ4_K.GetScaleMin"/>
    public readonly void GetScaleMin(int group, out byte scale, out byte min)
    {
        fixed (byte* packed = Scales)
            KQuantScales.GetScaleMin(group, packed, out scale, out min);
    }
}

/// <summary>
/// 256 weights in 16 groups of 16: <c>D * Scales[g] * (q - 32)</c>, q 6 bits. Each 128-element half uses 64 bytes of
/// <see cref="Ql"/> and 32 of <see cref="Qh"/>: element 32*s + l of the half takes its low nibble from
/// <c>Ql[l + 32 * (s &amp; 1)]</c> (low nibble for s &lt; 2, high for s ≥ 2) and its top two bits from bits 2s..2s+1 of
/// <c>Qh[l]</c>.
/// </summary>
[StructLayout(LayoutKind.Sequential, Pack = 1)]
internal unsafe struct BlockQ6_K
{
    public const int Elements = GgmlTypeInfo.QK_K;
    public fixed byte Ql[128];
    public fixed byte Qh[64];
    public fixed sbyte Scales[16];
    public Half D;

    /// <summary>Element <paramref name="i"/>'s 6-bit quant (0..63): its low nibble from <see cref="Ql"/>, its top two bits from <see cref="Qh"/>.</summary>
    public int Quant(int i)
    {
        int half = i / 128, quarter = i % 128 / 32, l = i % 32;
        int lowByte = Ql[64 * half + 32 * (quarter & 1) + l];
        int low = quarter < 2 ? lowByte & 0xF : lowByte >> 4;
        return low | ((Qh[32 * half + l] >> (2 * quarter)) & 3) << 4;
    }
}

/// <summary>The 12-byte packing of eight 6-bit scales and eight 6-bit mins shared by Q4_K and Q5_K.</summary>
internal static unsafe class KQuantScales
{
    /// <summary>
    /// Groups 0..3 keep scale and min whole in the low 6 bits of bytes 0..3 and 4..7; groups 4..7 keep their low
    /// nibbles in bytes 8..11 (scale low, min high) and their top two bits in the spare top bits of bytes 0..7.
    /// </summary>
    public static void GetScaleMin(int group, byte* packed, out byte scale, out byte min)
    {
        if (group < 4)
        {
            scale = (byte)(packed[group] & 63);
            min = (byte)(packed[group + 4] & 63);
        }
        else
        {
            scale = (byte)((packed[group + 4] & 0xF) | ((packed[group - 4] >> 6) << 4));
            min = (byte)((packed[group + 4] >> 4) | ((packed[group] >> 6) << 4));
        }
    }

    /// <summary>Inverse of <see cref="GetScaleMin"/> for all eight groups; values must be below 64.</summary>
    public static void Pack(ReadOnlySpan<byte> scales, ReadOnlySpan<byte> mins, byte* packed)
    {
        for (int g = 0; g < 8; g++)
        {
            byte scale = scales[g], min = mins[g];
            if (g < 4)
            {
                packed[g] = scale;
                packed[g + 4] = min;
            }
            else
            {
                packed[g + 4] = (byte)((scale & 0xF) | ((min & 0xF) << 4));
                packed[g - 4] |= (byte)((scale >> 4) << 6);
                packed[g] |= (byte)((min >> 4) << 6);
            }
        }
    }
}
