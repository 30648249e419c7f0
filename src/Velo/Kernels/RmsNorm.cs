using System.Numerics.Tensors;

namespace Velo.Kernels;

/// <summary>Root-mean-square normalization: <c>y = x / sqrt(mean(x²) + eps) · weight</c>.</summary>
internal static class RmsNorm
{
    public static void Apply(ReadOnlySpan<float> x, ReadOnlySpan<float> weight, Span<float> y, float epsilon)
    {
        CheckLengths(x, weight, y);
        float scale = 1f / MathF.Sqrt(TensorPrimitives.SumOfSquares(x) / x.Length + epsilon);
        TensorPrimitives.Multiply(x, scale, y);
        TensorPrimitives.Multiply(y, weight, y);
    }

    /// <summary>The definition, in double precision.</summary>
    public static void Reference(ReadOnlySpan<float> x, ReadOnlySpan<float> weight, Span<float> y, float epsilon)
    {
        CheckLengths(x, weight, y);
        double sum = 0;
        foreach (float v in x) sum += (double)v * v;
        double scale = 1 / Math.Sqrt(sum / x.Length + epsilon);
        for (int i = 0; i < x.Length; i++)
            y[i] = (float)(x[i] * scale * weight[i]);
    }

    private static void CheckLengths(ReadOnlySpan<float> x, ReadOnlySpan<float> weight, Span<float> y)
    {
        if (x.Length == 0 || weight.Length != x.Length || y.Length != x.Length)
            throw new ArgumentException($"RmsNorm needs equal, non-zero lengths (x {x.Length}, weight {weight.Length}, y {y.Length}).");
    }
}
