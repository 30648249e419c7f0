namespace Velo.Tensors;

// The K-quantizers work in two passes per super-block: fit each group's own scale (and min), quantize those to the
// block's 4/6/8-bit scale codes against one fp16 super-scale, then requantize every weight against the scale it will
// really be multiplied by. A group whose coded scale is 0 keeps its first-pass levels, as in ggml.
internal static partial class Quantize
{
    private const int QK_K = GgmlTypeInfo.QK_K;

    private static unsafe void Q2_K(ReadOnlySpan<float> src, Span<BlockQ2_K> blocks)
    {
        const float scaleLevels = 15;
        Span<byte> levels = stackalloc byte[QK_K];
        Span<byte> scratch = stackalloc byte[16];
        Span<float> weights = stackalloc float[16];
        Span<float> scales = stackalloc float[QK_K / 16];
        Span<float> mins = stackalloc float[QK_K / 16];

        for (int b = 0; b < blocks.Length; b++)
        {
            ReadOnlySpan<float> x = src.Slice(b * QK_K, QK_K);
            float maxScale = 0, maxMin = 0;
            for (int g = 0; g < QK_K / 16; g++)
            {
                ReadOnlySpan<float> group = x.Slice(16 * g, 16);
                for (int l = 0; l < 16; l++) weights[l] = MathF.Abs(group[l]);
                scales[g] = KQuantSolver.AffineLevels(group, weights, 3, levels.Slice(16 * g, 16), scratch,
                    out mins[g], -0.5f, 0.1f, 15, useAbsoluteError: true);
                if (scales[g] > maxScale) maxScale = scales[g];
                if (mins[g] > maxMin) maxMin = mins[g];
            }

            BlockQ2_K block = default;
            if (maxScale > 0)
            {
                float iscale = scaleLevels / maxScale;
                for (int g = 0; g < QK_K / 16; g++)
                    block.Scales[g] = (byte)KQuantSolver.NearestInt(iscale * scales[g]);
                block.D = (Half)(maxScale / scaleLevels);
            }
            if (maxMin > 0)
            {
                float iscale = scaleLevels / maxMin;
                for (int g = 0; g < QK_K / 16; g++)
                    block.Scales[g] |= (byte)(KQuantSolver.NearestInt(iscale * mins[g]) << 4);
                block.DMin = (Half)(maxMin / scaleLevels);
            }

            for (int g = 0; g < QK_K / 16; g++)
            {
                float d = (float)block.D * (block.Scales[g] & 0xF);
                if (d == 0) continue;
                float dm = (float)block.DMin * (block.Scales[g] >> 4);
                for (int l = 0; l < 16; l++)
                    levels[16 * g + l] = (byte)Math.Clamp(KQuantSolver.NearestInt((x[16 * g + l] + dm) / d), 0, 3);
            }

            PackTwoBitLevels(levels, block.Qs);
            blocks[b] = block;
        }
    }

    private static unsafe void Q3_K(ReadOnlySpan<float> src, Span<BlockQ3_K> blocks)
    {
        Span<sbyte> levels = stackalloc sbyte[QK_K];
        Span<float> scales = stackalloc float[QK_K / 16];
        Span<sbyte> codedScales = stackalloc sbyte[QK_K / 16];
        Span<byte> lowLevels = stackalloc byte[QK_K];

        for (int b = 0; b < blocks.Length; b++)
        {
            ReadOnlySpan<float> x = src.Slice(b * QK_K, QK_K);
            float maxScale = 0, amax = 0;
            for (int g = 0; g < QK_K / 16; g++)
            {
                scales[g] = KQuantSolver.Q3Levels(x.Slice(16 * g, 16), 4, levels.Slice(16 * g, 16));
                float scale = MathF.Abs(scales[g]);
                if (scale > amax) { amax = scale; maxScale = scales[g]; }
            }

            BlockQ3_K block = default;
            if (maxScale != 0)
            {
                float iscale = -32f / maxScale;
                for (int g = 0; g < QK_K / 16; g++)
                {
                    // Narrowed to a signed byte before the clamp, as ggml does.
                    int code = Math.Clamp((int)(sbyte)KQuantSolver.NearestInt(iscale * scales[g]), -32, 31) + 32;
                    if (g < 8) block.Scales[g] = (byte)(code & 0xF);
                    else block.Scales[g - 8] |= (byte)((code & 0xF) << 4);
                    block.Scales[8 + g % 4] |= (byte)((code >> 4) << (2 * (g / 4)));
                }
                block.D = (Half)(1 / iscale);
            }

            block.UnpackScales(codedScales);
            for (int g = 0; g < QK_K / 16; g++)
            {
                float d = (float)block.D * codedScales[g];
                if (d == 0) continue;
                for (int l = 0; l < 16; l++)
                    levels[16 * g + l] = (sbyte)(Math.Clamp(KQuantSolver.NearestInt(x[16 * g + l] / d), -4, 3) + 4);
            }

            // Levels 4..7 keep their third bit in HMask: element i at bit i / 32 of byte i % 32.
            for (int i = 0; i < QK_K; i++)
            {
                int level = levels[i];
                if (level > 3)
                {
                    block.HMask[i % 32] |= (byte)(1 << (i / 32));
                    level -= 4;
                }
                lowLevels[i] = (byte)level;
            }
            PackTwoBitLevels(lowLevels, block.Qs);
            blocks[b] = block;
        }
    }

    private static unsafe void Q4_K(ReadOnlySpan<float> src, Span<BlockQ4_K> blocks)
    {
        Span<byte> levels = stackalloc byte[QK_K];
        for (int b = 0; b < blocks.Length; b++)
        {
            BlockQ4_K block = default;
            FitScaleMinBlock(src.Slice(b * QK_K, QK_K), 15, -1f, 20, levels, out block.D, out block.DMin, block.Scales);
            for (int pair = 0; pair < 4; pair++)
                for (int l = 0; l < 32; l++)
                    block.Qs[32 * pair + l] = (byte)(levels[64 * pair + l] | (levels[64 * pair + 32 + l] << 4));
            blocks[b] = block;
        }
    }

    private static unsafe void Q5_K(ReadOnlySpan<float> src, Span<BlockQ5_K> blocks)
    {
        Span<byte> levels = stackalloc byte[QK_K];
        for (int b = 0; b < blocks.Length; b++)
        {
            BlockQ5_K block = default;
            FitScaleMinBlock(src.Slice(b * QK_K, QK_K), 31, -0.5f, 15, levels, out block.D, out block.DMin, block.Scales);
            for (int pair = 0; pair < 4; pair++)
            {
                for (int l = 0; l < 32; l++)
                {
                    int first = levels[64 * pair + l], second = levels[64 * pair + 32 + l];
                    block.Qs[32 * pair + l] = (byte)((first & 0xF) | ((second & 0xF) << 4));
                    block.Qh[l] |= (byte)(((first >> 4) << (2 * pair)) | ((second >> 4) << (2 * pair + 1)));
                }
            }
            blocks[b] = block;
        }
    }

    /// <summary>
    /// The part Q4_K and Q5_K share (quantize_row_q4_K_ref / q5_K_ref): eight groups of 32, each fitted with
    /// levels 0..<paramref name="maxLevel"/>, a scale and a min; those coded as 6-bit multiples of the super-scales
    /// <paramref name="d"/> and <paramref name="dmin"/> into <paramref name="packedScales"/>; then every weight requantized.
    /// </summary>
    private static unsafe void FitScaleMinBlock(
        ReadOnlySpan<float> x, int maxLevel, float rmin, int steps, Span<byte> levels,
        out Half d, out Half dmin, byte* packedScales)
    {
        Span<byte> scratch = stackalloc byte[32];
        Span<float> weights = stackalloc float[32];
        Span<float> scales = stackalloc float[8];
        Span<float> mins = stackalloc float[8];
        Span<byte> scaleCodes = stackalloc byte[8];
        Span<byte> minCodes = stackalloc byte[8];

        float maxScale = 0, maxMin = 0;
        for (int g = 0; g < 8; g++)
        {
            ReadOnlySpan<float> group = x.Slice(32 * g, 32);
            float sumSquares = 0;
            for (int l = 0; l < 32; l++) sumSquares += group[l] * group[l];
            float rms = MathF.Sqrt(sumSquares / 32);
            for (int l = 0; l < 32; l++) weights[l] = rms + MathF.Abs(group[l]);
            scales[g] = KQuantSolver.AffineLevels(group, weights, maxLevel, levels.Slice(32 * g, 32), scratch,
                out mins[g], rmin, 0.1f, steps, useAbsoluteError: false);
            if (scales[g] > maxScale) maxScale = scales[g];
            if (mins[g] > maxMin) maxMin = mins[g];
        }

        float inverseScale = maxScale > 0 ? 63f / maxScale : 0f;
        float inverseMin = maxMin > 0 ? 63f / maxMin : 0f;
        for (int g = 0; g < 8; g++)
        {
            // Narrowed to a byte before the clip, as ggml stores it: a negative fit wraps and then clips to 63.
            scaleCodes[g] = Math.Min((byte)63, (byte)KQuantSolver.NearestInt(inverseScale * scales[g]));
            minCodes[g] = Math.Min((byte)63, (byte)KQuantSolver.NearestInt(inverseMin * mins[g]));
        }
        KQuantScales.Pack(scaleCodes, minCodes, packedScales);
        d = (Half)(maxScale / 63f);
        dmin = (Half)(maxMin / 63f);

        for (int g = 0; g < 8; g++)
        {
            KQuantScales.GetScaleMin(g, packedScales, out byte scaleCode, out byte minCode);
            float groupScale = (float)d * scaleCode;
            if (groupScale == 0) continue;
            float groupMin = (float)dmin * minCode;
            for (int l = 0; l < 32; l++)
            {
                int level = KQuantSolver.NearestInt((x[32 * g + l] + groupMin) / groupScale);
                levels[32 * g + l] = (byte)Math.Clamp(level, 0, maxLevel);
            }
        }
    }

    private static unsafe void Q6_K(ReadOnlySpan<float> src, Span<BlockQ6_K> blocks)
    {
        Span<sbyte> levels = stackalloc sbyte[QK_K];
        Span<float> scales = stackalloc float[QK_K / 16];

        for (int b = 0; b < blocks.Length; b++)
        {
            ReadOnlySpan<float> x = src.Slice(b * QK_K, QK_K);
            float maxScale = 0, maxAbsScale = 0;
            for (int g = 0; g < QK_K / 16; g++)
            {
                scales[g] = KQuantSolver.SymmetricLevelsWeightedBySquare(x.Slice(16 * g, 16), 32, levels.Slice(16 * g, 16));
                float absScale = MathF.Abs(scales[g]);
                if (absScale > maxAbsScale) { maxAbsScale = absScale; maxScale = scales[g]; }
            }

            BlockQ6_K block = default;
            if (maxAbsScale < KQuantSolver.GroupMaxEps)
            {
                blocks[b] = block;
                continue;
            }

            float iscale = -128f / maxScale;
            block.D = (Half)(1 / iscale);
            for (int g = 0; g < QK_K / 16; g++)
                block.Scales[g] = (sbyte)Math.Min(127, KQuantSolver.NearestInt(iscale * scales[g]));

            for (int g = 0; g < QK_K / 16; g++)
            {
                float d = (float)block.D * block.Scales[g];
                if (d == 0) continue;
                for (int l = 0; l < 16; l++)
                    levels[16 * g + l] = (sbyte)(Math.Clamp(KQuantSolver.NearestInt(x[16 * g + l] / d), -32, 31) + 32);
            }

            for (int half = 0; half < 2; half++)
            {
                for (int l = 0; l < 32; l++)
                {
                    int q0 = levels[128 * half + l], q1 = levels[128 * half + 32 + l];
                    int q2 = levels[128 * half + 64 + l], q3 = levels[128 * half + 96 + l];
                    block.Ql[64 * half + l] = (byte)((q0 & 0xF) | ((q2 & 0xF) << 4));
                    block.Ql[64 * half + 32 + l] = (byte)((q1 & 0xF) | ((q3 & 0xF) << 4));
                    block.Qh[32 * half + l] = (byte)((q0 >> 4) | ((q1 >> 4) << 2) | ((q2 >> 4) << 4) | ((q3 >> 4) << 6));
                }
            }
            blocks[b] = block;
        }
    }

    /// <summary>Q2_K/Q3_K packing: element 32*s + l of each 128-element half in bits 2s..2s+1 of byte l of its 32.</summary>
    private static unsafe void PackTwoBitLevels(ReadOnlySpan<byte> levels, byte* qs)
    {
        for (int half = 0; half < 2; half++)
            for (int l = 0; l < 32; l++)
            {
                int at = 128 * half + l;
                qs[32 * half + l] = (byte)(levels[at] | (levels[at + 32] << 2) | (levels[at + 64] << 4) | (levels[at + 96] << 6));
            }
    }
}
