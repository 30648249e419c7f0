using System.Runtime.InteropServices;

namespace Velo.Tensors;

/// <summary>
/// Scalar reference conversion of a row of floats to a stored element type, following llama.cpp's reference
/// quantizers (<c>quantize_row_*_ref</c>, what its tools use without an importance matrix) operation for operation, so
/// that the bytes come out the same as theirs.
/// </summary>
internal static partial class Quantize
{
    /// <summary>
    /// Converts the <paramref name="src"/>.Length floats (a whole number of blocks) to <paramref name="type"/>, filling
    /// <paramref name="dst"/>, which must be exactly their size in bytes.
    /// </summary>
    /// <exception cref="NotSupportedException">Velo has no quantizer for <paramref name="type"/>.</exception>
    /// <exception cref="ArgumentException">The lengths are not a whole number of blocks or do not agree.</exception>
    public static void Row(GgmlType type, ReadOnlySpan<float> src, Span<byte> dst)
    {
        if (!GgmlTypeInfo.IsSupported(type))
            throw new NotSupportedException($"Quantizing to {type} is not supported.");
        RowLength.Check(type, src.Length, dst.Length, nameof(src), nameof(dst));

        switch (type)
        {
            case GgmlType.F32: src.CopyTo(MemoryMarshal.Cast<byte, float>(dst)); break;
            case GgmlType.F16: F16(src, MemoryMarshal.Cast<byte, Half>(dst)); break;
            case GgmlType.BF16: BF16(src, MemoryMarshal.Cast<byte, ushort>(dst)); break;
            case GgmlType.Q4_0: Q4_0(src, MemoryMarshal.Cast<byte, BlockQ4_0>(dst)); break;
            case GgmlType.Q4_1: Q4_1(src, MemoryMarshal.Cast<byte, BlockQ4_1>(dst)); break;
            case GgmlType.Q5_0: Q5_0(src, MemoryMarshal.Cast<byte, BlockQ5_0>(dst)); break;
            case GgmlType.Q5_1: Q5_1(src, MemoryMarshal.Cast<byte, BlockQ5_1>(dst)); break;
            case GgmlType.Q8_0: Q8_0(src, MemoryMarshal.Cast<byte, BlockQ8_0>(dst)); break;
            case GgmlType.Q2_K: Q2_K(src, MemoryMarshal.Cast<byte, BlockQ2_K>(dst)); break;
            case GgmlType.Q3_K: Q3_K(src, MemoryMarshal.Cast<byte, BlockQ3_K>(dst)); break;
            case GgmlType.Q4_K: Q4_K(src, MemoryMarshal.Cast<byte, BlockQ4_K>(dst)); break;
            case GgmlType.Q5_K: Q5_K(src, MemoryMarshal.Cast<byte, BlockQ5_K>(dst)); break;
            case GgmlType.Q6_K: Q6_K(src, MemoryMarshal.Cast<byte, BlockQ6_K>(dst)); break;
            default: throw new NotSupportedException($"Quantizing to {type} is not supported.");
        }
    }

    private static void F16(ReadOnlySpan<float> src, Span<Half> dst)
    {
        for (int i = 0; i < src.Length; i++)
            dst[i] = (Half)src[i];
    }

    private static void BF16(ReadOnlySpan<float> src, Span<ushort> dst)
    {
        for (int i = 0; i < src.Length; i++)
            dst[i] = BFloat16.FromSingle(src[i]);
    }

    /// <summary>The value of largest magnitude, sign kept; the first one wins a tie, as in ggml.</summary>
    private static float SignedAbsMax(ReadOnlySpan<float> x)
    {
        float amax = 0, max = 0;
        foreach (float v in x)
        {
            if (amax < MathF.Abs(v))
            {
                amax = MathF.Abs(v);
                max = v;
            }
        }
        return max;
    }

    private static void MinMax(ReadOnlySpan<float> x, out float min, out float max)
    {
        min = float.MaxValue;
        max = -float.MaxValue;
        foreach (float v in x)
        {
            if (v < min) min = v;
            if (v > max) max = v;
        }
    }

    // The symmetric formats map the value of largest magnitude to the most negative level (-8 or -16), which is
    // exact, and everything else rounds to nearest (the +0.5 before truncation) with the top level clipped.

    private static unsafe void Q4_0(ReadOnlySpan<float> src, Span<BlockQ4_0> blocks)
    {
        for (int b = 0; b < blocks.Length; b++)
        {
            ReadOnlySpan<float> x = src.Slice(b * BlockQ4_0.Elements, BlockQ4_0.Elements);
            float d = SignedAbsMax(x) / -8;
            float id = d != 0 ? 1.0f / d : 0.0f;

            BlockQ4_0 block = default;
            block.D = (Half)d;
            for (int j = 0; j < 16; j++)
            {
                int q0 = Math.Min(15, (int)(x[j] * id + 8.5f));
                int q1 = Math.Min(15, (int)(x[j + 16] * id + 8.5f));
                block.Qs[j] = (byte)(q0 | (q1 << 4));
            }
            blocks[b] = block;
        }
    }

    private static unsafe void Q4_1(ReadOnlySpan<float> src, Span<BlockQ4_1> blocks)
    {
        for (int b = 0; b < blocks.Length; b++)
        {
            ReadOnlySpan<float> x = src.Slice(b * BlockQ4_1.Elements, BlockQ4_1.Elements);
            MinMax(x, out float min, out float max);
            float d = (max - min) / 15;
            float id = d != 0 ? 1.0f / d : 0.0f;

            BlockQ4_1 block = default;
            block.D = (Half)d;
            block.M = (Half)min;
            for (int j = 0; j < 16; j++)
            {
                int q0 = Math.Min(15, (int)((x[j] - min) * id + 0.5f));
                int q1 = Math.Min(15, (int)((x[j + 16] - min) * id + 0.5f));
                block.Qs[j] = (byte)(q0 | (q1 << 4));
            }
            blocks[b] = block;
        }
    }

    private static unsafe void Q5_0(ReadOnlySpan<float> src, Span<BlockQ5_0> blocks)
    {
        for (int b = 0; b < blocks.Length; b++)
        {
            ReadOnlySpan<float> x = src.Slice(b * BlockQ5_0.Elements, BlockQ5_0.Elements);
            float d = SignedAbsMax(x) / -16;
            float id = d != 0 ? 1.0f / d : 0.0f;

            BlockQ5_0 block = default;
            block.D = (Half)d;
            uint qh = 0;
            for (int j = 0; j < 16; j++)
            {
                int q0 = Math.Min(31, (int)(x[j] * id + 16.5f));
                int q1 = Math.Min(31, (int)(x[j + 16] * id + 16.5f));
                block.Qs[j] = (byte)((q0 & 0xF) | ((q1 & 0xF) << 4));
                qh |= (uint)((q0 >> 4) & 1) << j;
                qh |= (uint)((q1 >> 4) & 1) << (j + 16);
            }
            SetFifthBits(block.Qh, qh);
            blocks[b] = block;
        }
    }

    private static unsafe void Q5_1(ReadOnlySpan<float> src, Span<BlockQ5_1> blocks)
    {
        for (int b = 0; b < blocks.Length; b++)
        {
            ReadOnlySpan<float> x = src.Slice(b * BlockQ5_1.Elements, BlockQ5_1.Elements);
            MinMax(x, out float min, out float max);
            float d = (max - min) / 31;
            float id = d != 0 ? 1.0f / d : 0.0f;

            BlockQ5_1 block = default;
            block.D = (Half)d;
            block.M = (Half)min;
            uint qh = 0;
            for (int j = 0; j < 16; j++)
            {
                // Unclipped as in ggml: (x - min) * id stays within [0, 31] up to rounding, far from 31.5.
                int q0 = (int)((x[j] - min) * id + 0.5f);
                int q1 = (int)((x[j + 16] - min) * id + 0.5f);
                block.Qs[j] = (byte)((q0 & 0xF) | ((q1 & 0xF) << 4));
                qh |= (uint)((q0 >> 4) & 1) << j;
                qh |= (uint)((q1 >> 4) & 1) << (j + 16);
            }
            SetFifthBits(block.Qh, qh);
            blocks[b] = block;
        }
    }

    private static unsafe void Q8_0(ReadOnlySpan<float> src, Span<BlockQ8_0> blocks)
    {
        for (int b = 0; b < blocks.Length; b++)
        {
            ReadOnlySpan<float> x = src.Slice(b * BlockQ8_0.Elements, BlockQ8_0.Elements);
            float amax = 0;
            foreach (float v in x)
                amax = amax > MathF.Abs(v) ? amax : MathF.Abs(v);
            float d = amax / 127;
            float id = d != 0 ? 1.0f / d : 0.0f;

            BlockQ8_0 block = default;
            block.D = (Half)d;
            for (int j = 0; j < BlockQ8_0.Elements; j++)
                block.Qs[j] = (sbyte)MathF.Round(x[j] * id, MidpointRounding.AwayFromZero); // C's roundf
            blocks[b] = block;
        }
    }

    private static unsafe void SetFifthBits(byte* qh, uint bits)
    {
        for (int i = 0; i < 4; i++)
            qh[i] = (byte)(bits >> (8 * i));
    }
}
