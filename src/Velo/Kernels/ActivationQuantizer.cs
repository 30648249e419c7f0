using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Velo.Kernels;

/// <summary>
/// Quantizes activation rows to 8 bits so quantized weights can be multiplied with integer instructions. Two
/// layouts, each kept as separate arrays so the kernels load them with aligned vector reads:
/// <list type="bullet">
/// <item>32-blocks (for Q4_1, Q5_0, Q5_1): per block a float scale and the float <c>scale * Σq</c>, which is
/// what the weight's offset or min multiplies; or, for the repacked Q4_0 and Q8_0 (<see cref="QuantizeExact32"/>),
/// in element order with the integer <c>Σq</c>.</item>
/// <item>256-blocks (for the K-quants, llama.cpp's Q8_K): per block a float scale and, per 16 values, the integer
/// <c>Σq</c> as int16, which the K-quants' sub-block mins and offsets multiply.</item>
/// </list>
/// Scales are symmetric, <c>max|x| / 127</c>, so q is in [-127, 127]: <c>maddubs</c> products then stay clear of
/// int16 saturation for every weight type.
/// </summary>
internal static unsafe class ActivationQuantizer
{
    public const int Block32 = 32;
    public const int Block256 = 256;

    /// <summary>Bytes of the 32-block layout for <paramref name="tokens"/> rows of <paramref name="cols"/>.</summary>
    public static long Bytes32(int cols, int tokens) => (long)tokens * (cols + cols / Block32 * 2 * sizeof(float));

    /// <summary>Bytes of the 256-block layout for <paramref name="tokens"/> rows of <paramref name="cols"/>.</summary>
    public static long Bytes256(int cols, int tokens) =>
        (long)tokens * (cols + cols / Block256 * sizeof(float) + cols / 16 * sizeof(short));

    /// <summary>Where each array of the 32-block layout starts inside a buffer of <see cref="Bytes32"/> bytes.</summary>
    public static void Layout32(byte* buffer, int cols, int tokens, out sbyte* quants, out float* scales, out float* sums)
    {
        quants = (sbyte*)buffer;
        scales = (float*)(buffer + (long)tokens * cols);
        sums = scales + (long)tokens * (cols / Block32);
    }

    /// <summary>Where each array of the 256-block layout starts inside a buffer of <see cref="Bytes256"/> bytes.</summary>
    public static void Layout256(byte* buffer, int cols, int tokens, out sbyte* quants, out float* scales, out short* groupSums)
    {
        quants = (sbyte*)buffer;
        scales = (float*)(buffer + (long)tokens * cols);
        groupSums = (short*)(scales + (long)tokens * (cols / Block256));
    }

    /// <summary>
    /// Quantizes one row of <paramref name="cols"/> floats into 32-blocks, the quants of each pair of blocks
    /// interleaved by halves — first halves of both blocks, then second halves — the order in which one 256-bit
    /// register of two blocks' nibbles unpacks (an odd last block stays as it is).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Quantize32(float* x, int cols, sbyte* quants, float* scales, float* sums)
    {
        int blocks = cols / Block32;
        for (int b = 0; b < blocks; b++)
        {
            var packed = QuantizeBlock32(x + b * Block32, out float amax, out int quantSum);
            float scale = amax / 127f;
            if ((b | 1) < blocks)
            {
                sbyte* pair = quants + (b & ~1) * Block32 + (b & 1) * 16;
                Sse2.Store(pair, packed.GetLower());
                Sse2.Store(pair + 32, packed.GetUpper());
            }
            else
            {
                Avx.Store(quants + b * Block32, packed);
            }
            scales[b] = scale;
            sums[b] = scale * quantSum;
        }
    }

    /// <summary>
    /// Where each array of the exact 32-block layout (<see cref="QuantizeExact32"/>) starts inside a buffer of
    /// <see cref="Bytes32"/> bytes: quants, scales, then each block's integer Σq.
    /// </summary>
    public static void LayoutExact32(byte* buffer, int cols, int tokens, out sbyte* quants, out float* scales, out int* sums)
    {
        Layout32(buffer, cols, tokens, out quants, out scales, out float* floatSums);
        sums = (int*)floatSums;
    }

    /// <summary>
    /// Quantizes one row into 32-blocks in element order with each block's integer <c>Σq</c>, for kernels whose
    /// offset terms stay integers. Without AVX2 a scalar loop gives the same quants: the same scale, the same
    /// product by its inverse, rounded half to even as the vector conversion rounds. <paramref name="biased"/>
    /// stores each quant plus 128 (its sign bit flipped), the unsigned operand that <c>vpdpbusd</c> takes.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void QuantizeExact32(float* x, int cols, sbyte* quants, float* scales, int* sums, bool biased = false)
    {
        int blocks = cols / Block32;
        if (Avx2.IsSupported)
        {
            for (int b = 0; b < blocks; b++)
            {
                var packed = QuantizeBlock32(x + b * Block32, out float amax, out sums[b]);
                Avx.Store(quants + b * Block32, biased ? packed ^ Vector256.Create(unchecked((sbyte)0x80)) : packed);
                scales[b] = amax / 127f;
            }
            return;
        }
        QuantizeExact32Portable(x, cols, quants, scales, sums, biased);
    }

    /// <summary>The scalar form of <see cref="QuantizeExact32"/>, for machines without AVX2; it gives the same quants.</summary>
    internal static void QuantizeExact32Portable(float* x, int cols, sbyte* quants, float* scales, int* sums, bool biased = false)
    {
        int blocks = cols / Block32;
        for (int b = 0; b < blocks; b++)
        {
            float* src = x + b * Block32;
            float amax = 0;
            for (int i = 0; i < Block32; i++) amax = MathF.Max(amax, MathF.Abs(src[i]));
            float inverse = amax != 0 ? 127f / amax : 0f;
            int sum = 0;
            for (int i = 0; i < Block32; i++)
            {
                int q = Math.Clamp((int)MathF.Round(src[i] * inverse, MidpointRounding.ToEven), -128, 127);
                quants[b * Block32 + i] = (sbyte)(biased ? q ^ 0x80 : q);
                sum += q;
            }
            scales[b] = amax / 127f;
            sums[b] = sum;
        }
    }

    /// <summary>Quantizes one row of <paramref name="cols"/> floats into 256-blocks.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Quantize256(float* x, int cols, sbyte* quants, float* scales, short* groupSums)
    {
        for (int b = 0; b < cols / Block256; b++)
        {
            float* src = x + b * Block256;
            var max = Vector256<float>.Zero;
            for (int i = 0; i < Block256; i += 8)
                max = Vector256.Max(max, Vector256.Abs(Avx.LoadVector256(src + i)));
            float amax = HorizontalMax(max);
            scales[b] = amax / 127f;
            var inverse = Vector256.Create(amax != 0 ? 127f / amax : 0f);
            for (int i = 0; i < Block256; i += 32)
            {
                var q0 = Avx.ConvertToVector256Int32(Avx.LoadVector256(src + i) * inverse);
                var q1 = Avx.ConvertToVector256Int32(Avx.LoadVector256(src + i + 8) * inverse);
                var q2 = Avx.ConvertToVector256Int32(Avx.LoadVector256(src + i + 16) * inverse);
                var q3 = Avx.ConvertToVector256Int32(Avx.LoadVector256(src + i + 24) * inverse);
                Avx.Store(quants + b * Block256 + i, PackToBytes(q0, q1, q2, q3));
                groupSums[(b * Block256 + i) / 16] = (short)Vector256.Sum(q0 + q1);
                groupSums[(b * Block256 + i) / 16 + 1] = (short)Vector256.Sum(q2 + q3);
            }
        }
    }

    /// <summary>
    /// One 32-block's quants, round(x · 127 / amax) packed in element order, with its largest magnitude and the
    /// quants' integer sum: the step both 32-block layouts share.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<sbyte> QuantizeBlock32(float* src, out float amax, out int quantSum)
    {
        Vector256<float> v0 = Avx.LoadVector256(src), v1 = Avx.LoadVector256(src + 8);
        Vector256<float> v2 = Avx.LoadVector256(src + 16), v3 = Avx.LoadVector256(src + 24);
        amax = HorizontalMax(Vector256.Max(Vector256.Max(Vector256.Abs(v0), Vector256.Abs(v1)),
                                           Vector256.Max(Vector256.Abs(v2), Vector256.Abs(v3))));
        var inverse = Vector256.Create(amax != 0 ? 127f / amax : 0f);
        var q0 = Avx.ConvertToVector256Int32(v0 * inverse);
        var q1 = Avx.ConvertToVector256Int32(v1 * inverse);
        var q2 = Avx.ConvertToVector256Int32(v2 * inverse);
        var q3 = Avx.ConvertToVector256Int32(v3 * inverse);
        quantSum = Vector256.Sum(q0 + q1 + q2 + q3);
        return PackToBytes(q0, q1, q2, q3);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float HorizontalMax(Vector256<float> v)
    {
        var m = Sse.Max(v.GetLower(), v.GetUpper());
        m = Sse.Max(m, Sse.MoveHighToLow(m, m));
        m = Sse.Max(m, Sse.Shuffle(m, m, 0b01));
        return m.ToScalar();
    }

    /// <summary>Packs 32 int32 (each in [-127, 127]) to bytes in their original order.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<sbyte> PackToBytes(Vector256<int> q0, Vector256<int> q1, Vector256<int> q2, Vector256<int> q3)
    {
        // The packs work within 128-bit lanes, leaving 4-byte groups in the order 0 2 4 6 1 3 5 7.
        var packed = Avx2.PackSignedSaturate(Avx2.PackSignedSaturate(q0, q1), Avx2.PackSignedSaturate(q2, q3));
        return Avx2.PermuteVar8x32(packed.AsInt32(), Vector256.Create(0, 4, 1, 5, 2, 6, 3, 7)).AsSByte();
    }
}
