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

    /// <summary><c>x = factor · x</c> in place (an embedding scaled by √dim).</summary>
    public static void Scale(Span<float> x, float factor) => TensorPrimitives.Multiply(x, factor, x);

    /// <summary>The definition of <see cref="Scale"/>.</summary>
    public static void ScaleReference(Span<float> x, float factor)
    {
        for (int i = 0; i < x.Length; i++) x[i] *= factor;
    }

    /// <summary>
    /// Soft-capping in place: <c>x = cap · tanh(x / cap)</c>, which bounds every value to (−cap, cap) while leaving
    /// small ones nearly unchanged (Gemma 2's attention scores and logits). The three steps are ggml's
    /// (scale, tanh, scale), so the roundings are the same kind as llama.cpp's.
    /// </summary>
    public static void SoftCap(Span<float> x, float cap)
    {
        TensorPrimitives.Multiply(x, 1f / cap, x);
        TensorPrimitives.Tanh(x, x);
        TensorPrimitives.Multiply(x, cap, x);
    }

    /// <summary>The definition of <see cref="SoftCap"/>, in double precision.</summary>
    public static void SoftCapReference(Span<float> x, float cap)
    {
        for (int i = 0; i < x.Length; i++) x[i] = (float)(cap * Math.Tanh(x[i] / (double)cap));
    }
}
