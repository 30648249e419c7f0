using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;

namespace Velo.Kernels;

/// <summary>The gated activations of feed-forward blocks.</summary>
internal static class Activations
{
    /// <summary><c>y = silu(x) = x · sigmoid(x)</c>. <paramref name="y"/> may be <paramref name="x"/> itself.</summary>
    public static void SiLU(ReadOnlySpan<float> x, Span<float> y) => Map<SiLUFunction>(x, y);

    /// <summary>
    /// SwiGLU: <c>y = silu(gate) · up</c>, in one pass, so <paramref name="y"/> may be <paramref name="gate"/> or
    /// <paramref name="up"/> itself.
    /// </summary>
    public static void SwiGLU(ReadOnlySpan<float> gate, ReadOnlySpan<float> up, Span<float> y) => Gated<SiLUFunction>(gate, up, y);

    /// <summary>
    /// GeGLU with the tanh approximation of GELU: <c>y = gelu(gate) · up</c>, <c>gelu(x) = ½x(1 + tanh(√(2/π)(x + 0.044715x³)))</c>
    /// (Gemma). In one pass, so <paramref name="y"/> may be <paramref name="gate"/> or <paramref name="up"/> itself.
    /// It is computed as <c>x · sigmoid(2√(2/π)(x + 0.044715x³))</c>, the same function, with the exponential
    /// SiLU already uses. llama.cpp's CPU backend instead looks gelu up in a table of F16 inputs (GGML_GELU_FP16):
    /// its gate is rounded to F16 first and its result to F16 after, a relative difference of up to 2^-11 per
    /// element that this float formula does not copy.
    /// </summary>
    public static void GeGLU(ReadOnlySpan<float> gate, ReadOnlySpan<float> up, Span<float> y) => Gated<GeluTanhFunction>(gate, up, y);

    /// <summary>An activation applied to eight floats at once, or to one where there is no vector hardware.</summary>
    private interface IActivation
    {
        static abstract Vector256<float> Apply(Vector256<float> x);
        static abstract float Apply(float x);
    }

    private readonly struct SiLUFunction : IActivation
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector256<float> Apply(Vector256<float> x) => x / (Vector256<float>.One + Vector256.Exp(-x));

        public static float Apply(float x) => x / (1 + MathF.Exp(-x));
    }

    private readonly struct GeluTanhFunction : IActivation
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector256<float> Apply(Vector256<float> x) =>
            x / (Vector256<float>.One + Vector256.Exp(-Vector256.Create(GeluTwiceInner) * x * (Vector256<float>.One + Vector256.Create(GeluCubic) * x * x)));

        public static float Apply(float x) => x / (1 + MathF.Exp(-GeluTwiceInner * x * (1 + GeluCubic * x * x)));
    }

    /// <summary><c>y = f(x)</c> elementwise; the struct type argument makes the JIT compile one loop per activation.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Map<TActivation>(ReadOnlySpan<float> x, Span<float> y) where TActivation : IActivation
    {
        CheckLengths(x, x, y);
        ref float xs = ref MemoryMarshal.GetReference(x);
        ref float ys = ref MemoryMarshal.GetReference(y);
        int i = 0;
        if (Vector256.IsHardwareAccelerated)
        {
            for (; i + 8 <= x.Length; i += 8)
                Vector256.StoreUnsafe(TActivation.Apply(Vector256.LoadUnsafe(ref xs, (nuint)i)), ref ys, (nuint)i);
            if (i < x.Length)
                StoreTail(TActivation.Apply(PaddedTail(x[i..])), y[i..]);
            return;
        }
        for (; i < x.Length; i++)
            y[i] = TActivation.Apply(x[i]);
    }

    /// <summary><c>y = f(gate) · up</c> elementwise, in one pass, so <paramref name="y"/> may be either input.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Gated<TActivation>(ReadOnlySpan<float> gate, ReadOnlySpan<float> up, Span<float> y) where TActivation : IActivation
    {
        CheckLengths(gate, up, y);
        ref float gs = ref MemoryMarshal.GetReference(gate);
        ref float us = ref MemoryMarshal.GetReference(up);
        ref float ys = ref MemoryMarshal.GetReference(y);
        int i = 0;
        if (Vector256.IsHardwareAccelerated)
        {
            for (; i + 8 <= gate.Length; i += 8)
                Vector256.StoreUnsafe(TActivation.Apply(Vector256.LoadUnsafe(ref gs, (nuint)i)) * Vector256.LoadUnsafe(ref us, (nuint)i), ref ys, (nuint)i);
            if (i < gate.Length)
                StoreTail(TActivation.Apply(PaddedTail(gate[i..])) * PaddedTail(up[i..]), y[i..]);
            return;
        }
        for (; i < gate.Length; i++)
            y[i] = TActivation.Apply(gate[i]) * up[i];
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

    private const float GeluCubic = 0.044715f;

    /// <summary>2√(2/π): tanh(u) = 2·sigmoid(2u) − 1, so ½(1 + tanh(u)) = sigmoid(2u).</summary>
    private const float GeluTwiceInner = 1.5957691216057308f;

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

    /// <summary>
    /// <c>y = gelu(x) = ½x(1 + erf(x/√2))</c>, the exact GELU of BERT (not the tanh form). .NET has no erf, so it is
    /// Abramowitz and Stegun's 7.1.26 (|error| ≤ 1.5e-7, below float's resolution of erf near 1), vectorized, all in
    /// single precision: within 3e-7·(1 + |x|) of the definition (tested).
    /// <paramref name="y"/> may be <paramref name="x"/> itself.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void GeluErf(ReadOnlySpan<float> x, Span<float> y)
    {
        CheckLengths(x, x, y);
        int i = 0;
        if (Vector256.IsHardwareAccelerated)
        {
            ref float xs = ref MemoryMarshal.GetReference(x), ys = ref MemoryMarshal.GetReference(y);
            for (; i + 8 <= x.Length; i += 8)
                Vector256.StoreUnsafe(GeluErf(Vector256.LoadUnsafe(ref xs, (nuint)i)), ref ys, (nuint)i);
        }
        for (; i < x.Length; i++)
        {
            float v = x[i];
            y[i] = 0.5f * v * (1 + Erf(Vector256.Create(v * InverseSqrt2)).GetElement(0));
        }
    }

    /// <summary>
    /// <see cref="GeluErf(ReadOnlySpan{float}, Span{float})"/> of eight floats, each lane exactly as that loop computes
    /// it, so a matrix product can apply it to results as it stores them.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> GeluErf(Vector256<float> v) =>
        Vector256.Create(0.5f) * v * (Vector256<float>.One + Erf(v * Vector256.Create(InverseSqrt2)));

    /// <summary><see cref="GeluErf(Vector256{float})"/> of sixteen floats: the same operations lane by lane, so the same results.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> GeluErf(Vector512<float> v) =>
        Vector512.Create(0.5f) * v * (Vector512<float>.One + Erf(v * Vector512.Create(InverseSqrt2)));

    private const float InverseSqrt2 = 0.70710678118654752f;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<float> Erf(Vector512<float> x)
    {
        var a = Vector512.Abs(x);
        var t = Vector512<float>.One / (Vector512<float>.One + Vector512.Create(0.3275911f) * a);
        var poly = Vector512.Create(1.061405429f);
        poly = poly * t + Vector512.Create(-1.453152027f);
        poly = poly * t + Vector512.Create(1.421413741f);
        poly = poly * t + Vector512.Create(-0.284496736f);
        poly = poly * t + Vector512.Create(0.254829592f);
        var magnitude = Vector512<float>.One - poly * t * FloatExp.NonPositive(-a * a);
        return Vector512.ConditionalSelect(Vector512.Create(-0f), x, magnitude);
    }


    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> Erf(Vector256<float> x)
    {
        var a = Vector256.Abs(x);
        var t = Vector256<float>.One / (Vector256<float>.One + Vector256.Create(0.3275911f) * a);
        var poly = Vector256.Create(1.061405429f);
        poly = poly * t + Vector256.Create(-1.453152027f);
        poly = poly * t + Vector256.Create(1.421413741f);
        poly = poly * t + Vector256.Create(-0.284496736f);
        poly = poly * t + Vector256.Create(0.254829592f);
        var magnitude = Vector256<float>.One - poly * t * FloatExp.NonPositive(-a * a);
        // erf is odd: the sign of x onto |erf(x)|.
        return Vector256.ConditionalSelect(Vector256.Create(-0f), x, magnitude);
    }

    /// <summary>The definition of <see cref="GeluErf"/> in double precision: erf by its Taylor series where that
    /// converges without cancellation (|z| &lt; 3), else 1 − erfc by erfc's continued fraction.</summary>
    public static void GeluErfReference(ReadOnlySpan<float> x, Span<float> y)
    {
        CheckLengths(x, x, y);
        for (int i = 0; i < x.Length; i++)
        {
            double v = x[i];
            y[i] = (float)(0.5 * v * (1 + ErfReference(v / Math.Sqrt(2))));
        }
    }

    private static double ErfReference(double z)
    {
        double a = Math.Abs(z);
        if (a >= 3)
        {
            // erfc(a) = e^(−a²)/√π · 1/(a + ½/(a + 1/(a + 3/2/(a + …)))), evaluated from the tail.
            double f = a;
            for (int k = 80; k >= 1; k--) f = a + k / 2.0 / f;
            return Math.Sign(z) * (1 - Math.Exp(-a * a) / Math.Sqrt(Math.PI) / f);
        }
        double term = z, sum = z;
        for (int n = 1; n < 200 && Math.Abs(term) > 1e-17; n++)
        {
            term *= -z * z / n;
            sum += term / (2 * n + 1);
        }
        return 2 / Math.Sqrt(Math.PI) * sum;
    }

    private static void CheckLengths(ReadOnlySpan<float> a, ReadOnlySpan<float> b, Span<float> y)
    {
        if (b.Length != a.Length || y.Length != a.Length)
            throw new ArgumentException($"Lengths differ ({a.Length}, {b.Length}, {y.Length}).");
    }
}
