using System.Numerics;
using System.Runtime.InteropServices;

namespace Velo.Kernels;

/// <summary>Layer normalization with a bias (BERT): <c>y = (x − mean) / sqrt(var + eps) · weight + bias</c>.</summary>
internal static class LayerNorm
{
    /// <summary>
    /// Three reads of the row (in L1 after the first) and one write: the sum, the centred sum of squares, then
    /// <c>(x − mean) · scale · weight + bias</c> stored, a <see cref="Vector{T}"/> per step, the last few floats one by one.
    /// </summary>
    public static void Apply(ReadOnlySpan<float> x, ReadOnlySpan<float> weight, ReadOnlySpan<float> bias, Span<float> y, float epsilon)
    {
        CheckLengths(x, weight, bias, y);
        int n = x.Length, step = Vector<float>.Count, whole = Vector.IsHardwareAccelerated ? n - n % step : 0;
        ref float xs = ref MemoryMarshal.GetReference(x);
        var sums = Vector<float>.Zero;
        for (int i = 0; i < whole; i += step) sums += Vector.LoadUnsafe(ref xs, (nuint)i);
        float sum = Vector.Sum(sums);
        for (int i = whole; i < n; i++) sum += x[i];
        float mean = sum / n;
        // The variance of the centred values, not E[x²] − mean²: BERT's rows have large means, and the difference cancels.
        var meanV = new Vector<float>(mean);
        var squares = Vector<float>.Zero;
        for (int i = 0; i < whole; i += step)
        {
            var c = Vector.LoadUnsafe(ref xs, (nuint)i) - meanV;
            squares = Vector.FusedMultiplyAdd(c, c, squares);
        }
        float squareSum = Vector.Sum(squares);
        for (int i = whole; i < n; i++) squareSum += (x[i] - mean) * (x[i] - mean);
        float scale = 1f / MathF.Sqrt(squareSum / n + epsilon);
        var scaleV = new Vector<float>(scale);
        ref float ws = ref MemoryMarshal.GetReference(weight), bs = ref MemoryMarshal.GetReference(bias), ys = ref MemoryMarshal.GetReference(y);
        for (int i = 0; i < whole; i += step)
        {
            var c = (Vector.LoadUnsafe(ref xs, (nuint)i) - meanV) * scaleV;
            Vector.FusedMultiplyAdd(c, Vector.LoadUnsafe(ref ws, (nuint)i), Vector.LoadUnsafe(ref bs, (nuint)i)).StoreUnsafe(ref ys, (nuint)i);
        }
        for (int i = whole; i < n; i++) y[i] = MathF.FusedMultiplyAdd((x[i] - mean) * scale, weight[i], bias[i]);
    }

    /// <summary>The definition, in double precision.</summary>
    public static void Reference(ReadOnlySpan<float> x, ReadOnlySpan<float> weight, ReadOnlySpan<float> bias, Span<float> y, float epsilon)
    {
        CheckLengths(x, weight, bias, y);
        double mean = 0, variance = 0;
        foreach (float v in x) mean += v;
        mean /= x.Length;
        foreach (float v in x) variance += (v - mean) * (v - mean);
        double scale = 1 / Math.Sqrt(variance / x.Length + epsilon);
        for (int i = 0; i < x.Length; i++)
            y[i] = (float)((x[i] - mean) * scale * weight[i] + bias[i]);
    }

    private static void CheckLengths(ReadOnlySpan<float> x, ReadOnlySpan<float> weight, ReadOnlySpan<float> bias, Span<float> y)
    {
        if (x.Length == 0 || weight.Length != x.Length || bias.Length != x.Length || y.Length != x.Length)
            throw new ArgumentException($"LayerNorm needs equal, non-zero lengths (x {x.Length}, weight {weight.Length}, bias {bias.Length}, y {y.Length}).");
    }
}
