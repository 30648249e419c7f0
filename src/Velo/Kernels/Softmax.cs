using System.Numerics.Tensors;

namespace Velo.Kernels;

/// <summary>Softmax over a span, shifted by its maximum so that no exponential overflows.</summary>
internal static class Softmax
{
    public static void Apply(ReadOnlySpan<float> x, Span<float> y)
    {
        CheckLengths(x, y);
        TensorPrimitives.Subtract(x, TensorPrimitives.Max(x), y);
        TensorPrimitives.Exp(y, y);
        TensorPrimitives.Multiply(y, 1f / TensorPrimitives.Sum(y), y);
    }

    /// <summary>The definition, in double precision.</summary>
    public static void Reference(ReadOnlySpan<float> x, Span<float> y)
    {
        CheckLengths(x, y);
        double max = double.NegativeInfinity;
        foreach (float v in x) max = Math.Max(max, v);
        double sum = 0;
        foreach (float v in x) sum += Math.Exp(v - max);
        for (int i = 0; i < x.Length; i++)
            y[i] = (float)(Math.Exp(x[i] - max) / sum);
    }

    private static void CheckLengths(ReadOnlySpan<float> x, Span<float> y)
    {
        if (x.Length == 0 || y.Length != x.Length)
            throw new ArgumentException($"Softmax needs equal, non-zero lengths (x {x.Length}, y {y.Length}).");
    }
}
