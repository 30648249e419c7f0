using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;

namespace Velo.Kernels;

/// <summary>The gated activations of feed-forward blocks.</summary>
internal static class Activations
{
    /// <summary><c>y = silu(x) = x · sigmoid(x)</c>. <paramref name="y"/> may be <paramref name="x"/> itself.</summary>
    public static void SiLU(ReadOnlySpan<float> x, Span<float> y)
    {
        CheckLengths(x, x, y);
        ref float xs = ref MemoryMarshal.GetReference(x);
        ref float ys = ref MemoryMarshal.GetReference(y);
        int i = 0;
        if (Vector256.IsHardwareAccelerated)
        {
            for (; i + 8 <= x.Length; i += 8)
                Vector256.StoreUnsafe(SiLU(Vector256.LoadUnsafe(ref xs, (nuint)i)), ref ys, (nuint)i);
            if (i < x.Length)
                StoreTail(SiLU(PaddedTail(x[i..])), y[i..]);
            return;
        }
        for (; i < x.Length; i++)
            y[i] = x[i] / (1 + MathF.Exp(-x[i]));
    }

    // A batch's rows lie one after another in one span, so where a row's last elements fall relative to the vectors
    // depends on the row's place in the batch: the tail takes the vector arithmetic too (Vector256.Exp rounds
    // differently from MathF.Exp), and every element's result is the same wherever it lies.
    private static Vector256<float> PaddedTail(ReadOnlySpan<float> tail)
    {
        Span<float> padded = stackalloc float[8];
        padded.Clear();
        tail.CopyTo(padded);
        return Vector256.Create<float>(padded);
    }

    private static void StoreTail(Vector256<float> values, Span<float> tail)
    {
        Span<float> padded = stackalloc float[8];
        values.CopyTo(padded);
        padded[..tail.Length].CopyTo(tail);
    }

    /// <summary>
    /// SwiGLU: <c>y = silu(gate) · up</c>, in one pass, so <paramref name="y"/> may be <paramref name="gate"/> or
    /// <paramref name="up"/> itself.
    /// </summary>
    public static void SwiGLU(ReadOnlySpan<float> gate, ReadOnlySpan<float> up, Span<float> y)
    {
        CheckLengths(gate, up, y);
        ref float gs = ref MemoryMarshal.GetReference(gate);
        ref float us = ref MemoryMarshal.GetReference(up);
        ref float ys = ref MemoryMarshal.GetReference(y);
        int i = 0;
        if (Vector256.IsHardwareAccelerated)
        {
            for (; i + 8 <= gate.Length; i += 8)
                Vector256.StoreUnsafe(SiLU(Vector256.LoadUnsafe(ref gs, (nuint)i)) * Vector256.LoadUnsafe(ref us, (nuint)i), ref ys, (nuint)i);
            if (i < gate.Length)
                StoreTail(SiLU(PaddedTail(gate[i..])) * PaddedTail(up[i..]), y[i..]);
            return;
        }
        for (; i < gate.Length; i++)
            y[i] = gate[i] / (1 + MathF.Exp(-gate[i])) * up[i];
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> SiLU(Vector256<float> x) => x / (Vector256<float>.One + Vector256.Exp(-x));

    /// <summary>
    /// GeGLU with the tanh approximation of GELU: <c>y = gelu(gate) · up</c>, <c>gelu(x) = ½x(1 + tanh(√(2/π)(x + 0.044715x³)))</c>
    /// (Gemma). In one pass, so <paramref name="y"/> may be <paramref name="gate"/> or <paramref name="up"/> itself.
    /// It is computed as <c>x · sigmoid(2√(2/π)(x + 0.044715x³))</c>, the same function, with the exponential
    /// SiLU already uses. llama.cpp's CPU backend instead looks gelu up in a table of F16 inputs (GGML_GELU_FP16):
    /// its gate is rounded to F16 first and its result to F16 after, a relative difference of up to 2^-11 per
    /// element that this float formula does not copy.
    /// </summary>
    public static void GeGLU(ReadOnlySpan<float> gate, ReadOnlySpan<float> up, Span<float> y)
    {
        CheckLengths(gate, up, y);
        ref float gs = ref MemoryMarshal.GetReference(gate);
        ref float us = ref MemoryMarshal.GetReference(up);
        ref float ys = ref MemoryMarshal.GetReference(y);
        int i = 0;
        if (Vector256.IsHardwareAccelerated)
        {
            for (; i + 8 <= gate.Length; i += 8)
                Vector256.StoreUnsafe(Gelu(Vector256.LoadUnsafe(ref gs, (nuint)i)) * Vector256.LoadUnsafe(ref us, (nuint)i), ref ys, (nuint)i);
            if (i < gate.Length)
                StoreTail(Gelu(PaddedTail(gate[i..])) * PaddedTail(up[i..]), y[i..]);
            return;
        }
        for (; i < gate.Length; i++)
        {
            float x = gate[i];
            y[i] = x / (1 + MathF.Exp(-GeluTwiceInner * x * (1 + GeluCubic * x * x))) * up[i];
        }
    }

    private const float GeluCubic = 0.044715f;

    /// <summary>2√(2/π): tanh(u) = 2·sigmoid(2u) − 1, so ½(1 + tanh(u)) = sigmoid(2u).</summary>
    private const float GeluTwiceInner = 1.5957691216057308f;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> Gelu(Vector256<float> x) =>
        x / (Vector256<float>.One + Vector256.Exp(-Vector256.Create(GeluTwiceInner) * x * (Vector256<float>.One + Vector256.Create(GeluCubic) * x * x)));

    /// <summary>The definition of <see cref="GeGLU"/> (the tanh form), in double precision.</summary>
    public static void GeGLUReference(ReadOnlySpan<float> gate, ReadOnlySpan<float> up, Span<float> y)
    {
        CheckLengths(gate, up, y);
        for (int i = 0; i < gate.Length; i++)
        {
            double x = gate[i];
            y[i] = (float)(0.5 * x * (1 + Math.Tanh(Math.Sqrt(2 / Math.PI) * (x + 0.044715 * x * x * x))) * up[i]);
        }
    }

    /// <summary>The definition of <see cref="SiLU(ReadOnlySpan{float}, Span{float})"/>, in double precision.</summary>
    public static void SiLUReference(ReadOnlySpan<float> x, Span<float> y)
    {
        CheckLengths(x, x, y);
        for (int i = 0; i < x.Length; i++)
            y[i] = (float)(x[i] / (1 + Math.Exp(-x[i])));
    }

    /// <summary>The definition of <see cref="SwiGLU"/>, in double precision.</summary>
    public static void SwiGLUReference(ReadOnlySpan<float> gate, ReadOnlySpan<float> up, Span<float> y)
    {
        CheckLengths(gate, up, y);
        for (int i = 0; i < gate.Length; i++)
            y[i] = (float)(gate[i] / (1 + Math.Exp(-gate[i])) * up[i]);
    }

    private static void CheckLengths(ReadOnlySpan<float> a, ReadOnlySpan<float> b, Span<float> y)
    {
        if (b.Length != a.Length || y.Length != a.Length)
            throw new ArgumentException($"Lengths differ ({a.Length}, {b.Length}, {y.Length}).");
    }
}
