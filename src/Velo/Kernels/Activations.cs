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
