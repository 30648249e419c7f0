using System.Numerics.Tensors;

namespace Velo.Kernels;

/// <summary>Layer normalization with a bias (BERT): <c>y = (x − mean) / sqrt(var + eps) · weight + bias</c>.</summary>
internal static class LayerNorm
{
    public static void Apply(ReadOnlySpan<float> x, ReadOnlySpan<float> weight, ReadOnlySpan<float> bias, Span<float> y, float epsilon)
    {
        CheckLengths(x, weight, bias, y);
        float mean = TensorPrimitives.Sum(x) / x.Length;
        TensorPrimitives.Subtract(x, mean, y);
        // The variance of the centred values, not E[x²] − mean²: BERT's rows have large means, and the difference cancels.
        float scale = 1f / MathF.Sqrt(TensorPrimitives.SumOfSquares(y) / x.Length + epsilon);
        TensorPrimitives.Multiply(y, scale, y);
        TensorPrimitives.FusedMultiplyAdd(y, weight, bias, y);
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
