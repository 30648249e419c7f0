namespace Velo.Tensors;

/// <summary>
/// bfloat16 conversions: the top 16 bits of an IEEE binary32. Float to bf16 rounds to nearest, ties to even, and keeps
/// NaN a quiet NaN, bit for bit as ggml's <c>ggml_compute_fp32_to_bf16</c> does.
/// </summary>
internal static class BFloat16
{
    public static float ToSingle(ushort bits) => BitConverter.UInt32BitsToSingle((uint)bits << 16);

    public static ushort FromSingle(float value)
    {
        uint bits = BitConverter.SingleToUInt32Bits(value);
        if ((bits & 0x7FFF_FFFF) > 0x7F80_0000)
            return (ushort)((bits >> 16) | 0x40); // rounding could carry a NaN into infinity; set the quiet bit instead
        uint roundingBias = 0x7FFF + ((bits >> 16) & 1);
        return (ushort)((bits + roundingBias) >> 16);
    }
}
