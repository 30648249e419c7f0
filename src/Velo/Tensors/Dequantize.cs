using System.Runtime.InteropServices;

namespace Velo.Tensors;

/// <summary>
/// Scalar reference conversion of a row of stored elements to float, bit-exact to ggml's <c>dequantize_row_*</c>
/// (products and sums in the same order, unfused, so every float rounds as there).
/// </summary>
internal static partial class Dequantize
{
    /// <summary>
    /// Converts <paramref name="dst"/>.Length elements (a whole number of blocks) stored as <paramref name="type"/> in
    /// <paramref name="src"/>, which must be exactly their size in bytes.
    /// </summary>
    /// <exception cref="NotSupportedException">Velo cannot compute with <paramref name="type"/>.</exception>
    /// <exception cref="ArgumentException">The lengths are not a whole number of blocks or do not agree.</exception>
    public static void Row(GgmlType type, ReadOnlySpan<byte> src, Span<float> dst)
    {
        if (!GgmlTypeInfo.IsSupported(type))
            throw new NotSupportedException($"Dequantizing {type} is not supported.");
        RowLength.Check(type, dst.Length, src.Length, nameof(dst), nameof(src));

        switch (type)
        {
            case GgmlType.F32: MemoryMarshal.Cast<byte, float>(src).CopyTo(dst); break;
            case GgmlType.F16: F16(MemoryMarshal.Cast<byte, Half>(src), dst); break;
            case GgmlType.BF16: BF16(MemoryMarshal.Cast<byte, ushort>(src), dst); break;
            case GgmlType.Q4_0: Q4_0(MemoryMarshal.Cast<byte, BlockQ4_0>(src), dst); break;
            case GgmlType.Q4_1: Q4_1(MemoryMarshal.Cast<byte, BlockQ4_1>(src), dst); break;
            case GgmlType.Q5_0: Q5_0(MemoryMarshal.Cast<byte, BlockQ5_0>(src), dst); break;
            case GgmlType.Q5_1: Q5_1(MemoryMarshal.Cast<byte, BlockQ5_1>(src), dst); break;
            case GgmlType.Q8_0: Q8_0(MemoryMarshal.Cast<byte, BlockQ8_0>(src), dst); break;
            case GgmlType.Q2_K: Q2_K(MemoryMarshal.Cast<byte, BlockQ2_K>(src), dst); break;
            case GgmlType.Q3_K: Q3_K(MemoryMarshal.Cast<byte, BlockQ3_K>(src), dst); break;
            case GgmlType.Q4_K: Q4_K(MemoryMarshal.Cast<byte, BlockQ4_K>(src), dst); break;
            case GgmlType.Q5_K: Q5_K(MemoryMarshal.Cast<byte, BlockQ5_K>(src), dst); break;
            case GgmlType.Q6_K: Q6_K(MemoryMarshal.Cast<byte, BlockQ6_K>(src), dst); break;
            default: throw new NotSupportedException($"Dequantizing {type} is not supported.");
        }
    }

    private static void F16(ReadOnlySpan<Half> src, Span<float> dst)
    {
        for (int i = 0; i < dst.Length; i++)
            dst[i] = (float)src[i];
    }

    private static void BF16(ReadOnlySpan<ushort> src, Span<float> dst)
    {
        for (int i = 0; i < dst.Length; i++)
            dst[i] = BFloat16.ToSingle(src[i]);
    }

    private static unsafe void Q4_0(ReadOnlySpan<BlockQ4_0> blocks, Span<float> dst)
    {
        for (int b = 0; b < blocks.Length; b++)
        {
            BlockQ4_0 block = blocks[b];
            float d = (float)block.D;
            Span<float> y = dst.Slice(b * BlockQ4_0.Elements, BlockQ4_0.Elements);
            for (int j = 0; j < 16; j++)
            {
                y[j] = ((block.Qs[j] & 0xF) - 8) * d;
                y[j + 16] = ((block.Qs[j] >> 4) - 8) * d;
            }
        }
    }

    private static unsafe void Q4_1(ReadOnlySpan<BlockQ4_1> blocks, Span<float> dst)
    {
        for (int b = 0; b < blocks.Length; b++)
        {
            BlockQ4_1 block = blocks[b];
            float d = (float)block.D, m = (float)block.M;
            Span<float> y = dst.Slice(b * BlockQ4_1.Elements, BlockQ4_1.Elements);
            for (int j = 0; j < 16; j++)
            {
                y[j] = (block.Qs[j] & 0xF) * d + m;
                y[j + 16] = (block.Qs[j] >> 4) * d + m;
            }
        }
    }

    private static unsafe void Q5_0(ReadOnlySpan<BlockQ5_0> blocks, Span<float> dst)
    {
        for (int b = 0; b < blocks.Length; b++)
        {
            BlockQ5_0 block = blocks[b];
            float d = (float)block.D;
            uint qh = FifthBits(block.Qh);
            Span<float> y = dst.Slice(b * BlockQ5_0.Elements, BlockQ5_0.Elements);
            for (int j = 0; j < 16; j++)
            {
                int q0 = (block.Qs[j] & 0xF) | (int)(((qh >> j) & 1) << 4);
                int q1 = (block.Qs[j] >> 4) | (int)(((qh >> (j + 16)) & 1) << 4);
                y[j] = (q0 - 16) * d;
                y[j + 16] = (q1 - 16) * d;
            }
        }
    }

    private static unsafe void Q5_1(ReadOnlySpan<BlockQ5_1> blocks, Span<float> dst)
    {
        for (int b = 0; b < blocks.Length; b++)
        {
            BlockQ5_1 block = blocks[b];
            float d = (float)block.D, m = (float)block.M;
            uint qh = FifthBits(block.Qh);
            Span<float> y = dst.Slice(b * BlockQ5_1.Elements, BlockQ5_1.Elements);
            for (int j = 0; j < 16; j++)
            {
                int q0 = (block.Qs[j] & 0xF) | (int)(((qh >> j) & 1) << 4);
                int q1 = (block.Qs[j] >> 4) | (int)(((qh >> (j + 16)) & 1) << 4);
                y[j] = q0 * d + m;
                y[j + 16] = q1 * d + m;
            }
        }
    }

    private static unsafe void Q8_0(ReadOnlySpan<BlockQ8_0> blocks, Span<float> dst)
    {
        for (int b = 0; b < blocks.Length; b++)
        {
            BlockQ8_0 block = blocks[b];
            float d = (float)block.D;
            Span<float> y = dst.Slice(b * BlockQ8_0.Elements, BlockQ8_0.Elements);
            for (int j = 0; j < BlockQ8_0.Elements; j++)
                y[j] = block.Qs[j] * d;
        }
    }

    /// <summary>The little-endian 32-bit word of fifth bits of a Q5_0/Q5_1 block.</summary>
    private static unsafe uint FifthBits(byte* qh) =>
        qh[0] | (uint)qh[1] << 8 | (uint)qh[2] << 16 | (uint)qh[3] << 24;
}
