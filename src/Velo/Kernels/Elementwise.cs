using System.Numerics.Tensors;

namespace Velo.Kernels;

/// <summary>Element-wise arithmetic of the forward pass.</summary>
internal static class Elementwise
{
    /// <summary><c>y = a + b</c>; <paramref name="y"/> may be either input (a residual connection adds in place).</summary>
    public static void Add(ReadOnlySpan<float> a, ReadOnlySpan<float> b, Span<float> y)
    {
        if (b.Length != a.Length || y.Length != a.Length)
            throw new ArgumentException($"Lengths differ ({a.Length}, {b.Length}, {y.Length}).");
        TensorPrimitives.Add(a, b, y);
    }

    /// <summary>The definition of <see cref="Add"/>.</summary>
    public static void AddReference(ReadOnlySpan<float> a, ReadOnlySpan<float> b, Span<float> y)
    {
        if (b.Length != a.Length || y.Length != a.Length)
            throw new ArgumentException($"Lengths differ ({a.Length}, {b.Length}, {y.Length}).");
        for (int i = 0; i < a.Length; i++)
            y[i] = a[i] + b[i];
    }
}
