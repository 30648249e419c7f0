namespace Velo.Tensors;

/// <summary>
/// The scale searches of llama.cpp's reference K-quantizers (make_qx_quants, make_q3_quants, make_qkx2_quants), kept
/// operation for operation, unfused and in the same order, because a different rounding anywhere can flip a level
/// and change the bytes.
/// </summary>
internal static class KQuantSolver
{
    /// <summary>Below this largest magnitude a group counts as all zero.</summary>
    public const float GroupMaxEps = 1e-15f;

    /// <summary>
    /// Round to nearest, ties to even, by the float trick ggml uses: adding 1.5 * 2^23 leaves the rounded integer in
    /// the low mantissa bits. Valid for |value| ≤ 4194303; outside that it returns what ggml returns.
    /// </summary>
    public static int NearestInt(float value)
    {
        float shifted = value + 12582912f;
        return (BitConverter.SingleToInt32Bits(shifted) & 0x007FFFFF) - 0x00400000;
    }

    /// <summary>The value of largest magnitude, with its sign (the first such value on ties, as ggml keeps it).</summary>
    private static float LargestMagnitude(ReadOnlySpan<float> x)
    {
        float max = 0, amax = 0;
        foreach (float v in x)
        {
            float ax = MathF.Abs(v);
            if (ax > amax) { amax = ax; max = v; }
        }
        return max;
    }

    /// <summary>
    /// Symmetric levels -nmax..nmax-1 for a group, weighted by x² (make_qx_quants with rmse_type 1, no importance):
    /// tries 19 scales around nmax / max and keeps the least-squares best. Writes levels offset by +nmax to
    /// <paramref name="levels"/> and returns the scale.
    /// </summary>
    public static float SymmetricLevelsWeightedBySquare(ReadOnlySpan<float> x, int nmax, Span<sbyte> levels)
    {
        float max = LargestMagnitude(x);
        if (MathF.Abs(max) < GroupMaxEps)
        {
            levels.Slice(0, x.Length).Clear();
            return 0;
        }

        float sumlx = FitAt(x, -nmax / max, nmax, levels, nmax, out float suml2);
        float scale = suml2 != 0 ? sumlx / suml2 : 0.0f;
        float best = scale * sumlx;
        for (int step = -9; step <= 9; step++)
        {
            if (step == 0) continue;
            float iscale = -(nmax + 0.1f * step) / max;
            sumlx = FitAt(x, iscale, nmax, [], 0, out suml2);
            if (suml2 > 0 && sumlx * sumlx > best * suml2)
            {
                FitAt(x, iscale, nmax, levels, nmax, out _);
                scale = sumlx / suml2;
                best = scale * sumlx;
            }
        }
        return scale;
    }

    /// <summary>
    /// Rounds every x × <paramref name="iscale"/> to a level in -nmax..nmax-1 and returns Σ x³·l (with Σ x²·l² in
    /// <paramref name="suml2"/>), the x²-weighted least-squares terms; writes the levels plus <paramref name="offset"/>
    /// to <paramref name="levels"/> unless it is empty.
    /// </summary>
    private static float FitAt(ReadOnlySpan<float> x, float iscale, int nmax, Span<sbyte> levels, int offset, out float suml2)
    {
        float sumlx = 0;
        suml2 = 0;
        for (int i = 0; i < x.Length; i++)
        {
            int l = Math.Clamp(NearestInt(iscale * x[i]), -nmax, nmax - 1);
            if (!levels.IsEmpty) levels[i] = (sbyte)(l + offset);
            float w = x[i] * x[i];
            sumlx += w * x[i] * l;
            suml2 += w * l * l;
        }
        return sumlx;
    }

    /// <summary>
    /// Symmetric levels -nmax..nmax-1 for a Q3_K group (make_q3_quants with do_rmse): starts from nmax / max, then up to
    /// five passes move single levels while that improves the x²-weighted least-squares fit. Writes levels offset by
    /// +nmax, except for an all-zero group, whose levels are 0; returns the scale.
    /// </summary>
    public static float Q3Levels(ReadOnlySpan<float> x, int nmax, Span<sbyte> levels)
    {
        float max = LargestMagnitude(x);
        if (MathF.Abs(max) < GroupMaxEps)
        {
            levels.Slice(0, x.Length).Clear();
            return 0;
        }

        float sumlx = FitAt(x, -nmax / max, nmax, levels, 0, out float suml2);
        for (int pass = 0; pass < 5; pass++)
        {
            int changed = 0;
            for (int i = 0; i < x.Length; i++)
            {
                float w = x[i] * x[i];
                float slx = sumlx - w * x[i] * levels[i];
                if (slx > 0)
                {
                    float sl2 = suml2 - w * levels[i] * levels[i];
                    int newL = Math.Clamp(NearestInt(x[i] * sl2 / slx), -nmax, nmax - 1);
                    if (newL != levels[i])
                    {
                        slx += w * x[i] * newL;
                        sl2 += w * newL * newL;
                        if (sl2 > 0 && slx * slx * suml2 > sumlx * sumlx * sl2)
                        {
                            levels[i] = (sbyte)newL;
                            sumlx = slx;
                            suml2 = sl2;
                            changed++;
                        }
                    }
                }
            }
            if (changed == 0) break;
        }
        for (int i = 0; i < x.Length; i++)
            levels[i] += (sbyte)nmax;
        return suml2 > 0.0f ? sumlx / suml2 : 0.0f;
    }

    /// <summary>
    /// Levels 0..nmax with a scale and a non-positive offset, <c>x ≈ scale * l - theMin</c> (make_qkx2_quants): starts
    /// from the min..max range, then tries the scales (nmax + rmin + rdelta * k) / range for k = 0..steps, refitting
    /// scale and offset by weighted least squares each time, and keeps the one with the least weighted error (absolute
    /// when <paramref name="useAbsoluteError"/>, else squared). Returns the scale; <paramref name="theMin"/> is ≥ 0.
    /// </summary>
    public static float AffineLevels(
        ReadOnlySpan<float> x, ReadOnlySpan<float> weights, int nmax, Span<byte> levels, Span<byte> scratch,
        out float theMin, float rmin, float rdelta, int steps, bool useAbsoluteError)
    {
        int n = x.Length;
        float min = x[0], max = x[0];
        float sumW = weights[0];
        float sumX = sumW * x[0];
        for (int i = 1; i < n; i++)
        {
            if (x[i] < min) min = x[i];
            if (x[i] > max) max = x[i];
            float w = weights[i];
            sumW += w;
            sumX += w * x[i];
        }
        if (min > 0) min = 0;
        if (max == min)
        {
            levels.Slice(0, n).Clear();
            theMin = -min;
            return 0;
        }

        float iscale = nmax / (max - min);
        float scale = 1 / iscale;
        float bestError = 0;
        for (int i = 0; i < n; i++)
        {
            int l = NearestInt(iscale * (x[i] - min));
            levels[i] = (byte)Math.Clamp(l, 0, nmax);
            float diff = scale * levels[i] + min - x[i];
            diff = useAbsoluteError ? MathF.Abs(diff) : diff * diff;
            bestError += weights[i] * diff;
        }
        for (int step = 0; step <= steps; step++)
        {
            iscale = (rmin + rdelta * step + nmax) / (max - min);
            float sumL = 0, sumL2 = 0, sumXL = 0;
            for (int i = 0; i < n; i++)
            {
                int l = Math.Clamp(NearestInt(iscale * (x[i] - min)), 0, nmax);
                scratch[i] = (byte)l;
                float w = weights[i];
                sumL += w * l;
                sumL2 += w * l * l;
                sumXL += w * l * x[i];
            }
            float det = sumW * sumL2 - sumL * sumL;
            if (det > 0)
            {
                float thisScale = (sumW * sumXL - sumX * sumL) / det;
                float thisMin = (sumL2 * sumX - sumL * sumXL) / det;
                if (thisMin > 0)
                {
                    thisMin = 0;
                    thisScale = sumXL / sumL2;
                }
                float error = 0;
                for (int i = 0; i < n; i++)
                {
                    float diff = thisScale * scratch[i] + thisMin - x[i];
                    diff = useAbsoluteError ? MathF.Abs(diff) : diff * diff;
                    error += weights[i] * diff;
                }
                if (error < bestError)
                {
                    scratch.Slice(0, n).CopyTo(levels);
                    bestError = error;
                    scale = thisScale;
                    min = thisMin;
                }
            }
        }
        theMin = -min;
        return scale;
    }
}
