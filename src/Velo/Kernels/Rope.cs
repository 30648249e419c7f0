using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;

namespace Velo.Kernels;

/// <summary>Which elements of a head rotary position embedding rotates together.</summary>
internal enum RopeLayout
{
    /// <summary>Adjacent pairs (x[2i], x[2i+1]): llama.cpp's "normal" rope, used by Llama GGUF files.</summary>
    Interleaved,

    /// <summary>Pairs half a rotation apart (x[i], x[i + dims/2]): GPT-NeoX, Qwen, Phi.</summary>
    NeoX,
}

/// <summary>
/// Rotary position embedding. Pair i of the first <c>rotaryDims</c> elements of every head is rotated by
/// <c>position · theta^(−2i / rotaryDims) / freqFactors[i]</c>; elements past <c>rotaryDims</c> are left alone. The
/// angles depend only on the position, so they are computed once per token (<see cref="Angles"/>) and applied to
/// every head of Q and K (<see cref="Rotate"/>).
/// </summary>
internal static class Rope
{
    /// <summary>
    /// Fills <paramref name="cos"/> and <paramref name="sin"/> (rotaryDims / 2 each) for <paramref name="position"/>
    /// (fractional under linear rope scaling, which shrinks positions).
    /// <paramref name="freqFactors"/> is empty or has one divisor per pair (Llama 3's long-context scaling, LongRoPE).
    /// Both are multiplied by <paramref name="magnitude"/>, ggml's <c>attn_factor</c>: rotating queries and keys by
    /// it scales their dot products, and so the attention logits, by its square (LongRoPE's attention factor).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Angles(float position, float theta, ReadOnlySpan<float> freqFactors, Span<float> cos, Span<float> sin, float magnitude = 1)
    {
        int pairs = cos.Length;
        if (pairs == 0 || sin.Length != pairs || (freqFactors.Length != 0 && freqFactors.Length != pairs))
            throw new ArgumentException($"Rope.Angles: cos {cos.Length}, sin {sin.Length}, freqFactors {freqFactors.Length}.");
        for (int i = 0; i < pairs; i++)
        {
            double angle = position * Math.Pow(theta, -2.0 * i / (2 * pairs));
            if (freqFactors.Length != 0) angle /= freqFactors[i];
            (double s, double c) = Math.SinCos(angle);
            cos[i] = (float)(c * magnitude);
            sin[i] = (float)(s * magnitude);
        }
    }

    /// <summary>Rotates, in place, every head of <paramref name="x"/> (a whole number of heads of <paramref name="headDim"/>).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Rotate(Span<float> x, int headDim, ReadOnlySpan<float> cos, ReadOnlySpan<float> sin, RopeLayout layout)
    {
        CheckShape(x, headDim, cos, sin);
        for (int head = 0; head < x.Length; head += headDim)
        {
            Span<float> h = x.Slice(head, headDim);
            if (layout == RopeLayout.NeoX) RotateNeoX(h, cos, sin);
            else RotateInterleaved(h, cos, sin);
        }
    }

    /// <summary>The definition: angles and rotations in double precision, one pair at a time.</summary>
    public static void Reference(Span<float> x, int headDim, int rotaryDims, int position, float theta,
        ReadOnlySpan<float> freqFactors, RopeLayout layout)
    {
        if (rotaryDims % 2 != 0 || rotaryDims > headDim || x.Length % headDim != 0)
            throw new ArgumentException($"Rope.Reference: x {x.Length}, headDim {headDim}, rotaryDims {rotaryDims}.");
        int pairs = rotaryDims / 2;
        for (int head = 0; head < x.Length; head += headDim)
            for (int i = 0; i < pairs; i++)
            {
                double angle = position * Math.Pow(theta, -2.0 * i / rotaryDims);
                if (freqFactors.Length != 0) angle /= freqFactors[i];
                int a = head + (layout == RopeLayout.NeoX ? i : 2 * i);
                int b = layout == RopeLayout.NeoX ? a + pairs : a + 1;
                double x0 = x[a], x1 = x[b];
                x[a] = (float)(x0 * Math.Cos(angle) - x1 * Math.Sin(angle));
                x[b] = (float)(x0 * Math.Sin(angle) + x1 * Math.Cos(angle));
            }
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void RotateNeoX(Span<float> head, ReadOnlySpan<float> cos, ReadOnlySpan<float> sin)
    {
        int pairs = cos.Length;
        ref float first = ref MemoryMarshal.GetReference(head);
        ref float second = ref head[pairs];
        ref float c = ref MemoryMarshal.GetReference(cos);
        ref float s = ref MemoryMarshal.GetReference(sin);
        int i = 0;
        if (Vector256.IsHardwareAccelerated)
            for (; i + 8 <= pairs; i += 8)
            {
                var x0 = Vector256.LoadUnsafe(ref first, (nuint)i);
                var x1 = Vector256.LoadUnsafe(ref second, (nuint)i);
                var cv = Vector256.LoadUnsafe(ref c, (nuint)i);
                var sv = Vector256.LoadUnsafe(ref s, (nuint)i);
                Vector256.StoreUnsafe(x0 * cv - x1 * sv, ref first, (nuint)i);
                Vector256.StoreUnsafe(x0 * sv + x1 * cv, ref second, (nuint)i);
            }
        for (; i < pairs; i++)
        {
            float x0 = head[i], x1 = head[i + pairs];
            head[i] = x0 * cos[i] - x1 * sin[i];
            head[i + pairs] = x0 * sin[i] + x1 * cos[i];
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void RotateInterleaved(Span<float> head, ReadOnlySpan<float> cos, ReadOnlySpan<float> sin)
    {
        int pairs = cos.Length;
        ref float h = ref MemoryMarshal.GetReference(head);
        ref float c = ref MemoryMarshal.GetReference(cos);
        ref float s = ref MemoryMarshal.GetReference(sin);
        int i = 0;
        if (Vector256.IsHardwareAccelerated)
        {
            // Four pairs per vector: each angle's cos and sin are duplicated to both lanes of its pair, the pair's
            // elements swapped, and the sine negated on the first lane: (x0·c − x1·s, x1·c + x0·s).
            var duplicate = Vector256.Create(0, 0, 1, 1, 2, 2, 3, 3);
            var swap = Vector256.Create(1, 0, 3, 2, 5, 4, 7, 6);
            var alternateSign = Vector256.Create(-1f, 1f, -1f, 1f, -1f, 1f, -1f, 1f);
            for (; i + 4 <= pairs; i += 4)
            {
                var x = Vector256.LoadUnsafe(ref h, (nuint)(2 * i));
                var cv = Vector256.Shuffle(Vector128.LoadUnsafe(ref c, (nuint)i).ToVector256Unsafe(), duplicate);
                var sv = Vector256.Shuffle(Vector128.LoadUnsafe(ref s, (nuint)i).ToVector256Unsafe(), duplicate) * alternateSign;
                Vector256.StoreUnsafe(x * cv + Vector256.Shuffle(x, swap) * sv, ref h, (nuint)(2 * i));
            }
        }
        for (; i < pairs; i++)
        {
            float x0 = head[2 * i], x1 = head[2 * i + 1];
            head[2 * i] = x0 * cos[i] - x1 * sin[i];
            head[2 * i + 1] = x0 * sin[i] + x1 * cos[i];
        }
    }

    private static void CheckShape(Span<float> x, int headDim, ReadOnlySpan<float> cos, ReadOnlySpan<float> sin)
    {
        if (headDim <= 0 || x.Length % headDim != 0 || sin.Length != cos.Length || cos.Length == 0 || 2 * cos.Length > headDim)
            throw new ArgumentException($"Rope.Rotate: x {x.Length}, headDim {headDim}, cos {cos.Length}, sin {sin.Length}.");
    }
}
