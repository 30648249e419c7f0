using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Velo.Kernels;

/// <summary>
/// The integer products the quantized kernels are built from, as a generic parameter so the JIT compiles each
/// kernel once per instruction set. Every method sums the same products into the same int32 lanes (lane i holds
/// bytes 4i..4i+3) on every implementation, and the sums are exact, so the float results built on them are
/// bit-identical whichever one runs.
/// </summary>
internal interface IIntegerDot
{
    /// <summary>Per int32 lane i, <c>Σ u[4i+k]·s[4i+k]</c> over k = 0..3.</summary>
    static abstract Vector256<int> Dot(Vector256<byte> u, Vector256<sbyte> s);

    /// <summary>
    /// <see cref="Dot(Vector256{byte}, Vector256{sbyte})"/> of both pairs, added. The caller guarantees that a
    /// product pair of one plus the matching pair of the other fits int16, which <c>maddubs</c> needs.
    /// </summary>
    static abstract Vector256<int> Dot(Vector256<byte> u0, Vector256<sbyte> s0, Vector256<byte> u1, Vector256<sbyte> s1);

    /// <summary>
    /// <paramref name="acc"/> plus, per int32 lane i, <c>Σ w[j]·(u[2j]·s[2j] + u[2j+1]·s[2j+1])</c> over
    /// j = 2i, 2i+1: products weighted per int16 lane, as the K-quants' group scales are.
    /// </summary>
    static abstract Vector256<int> WeightedDotAdd(Vector256<int> acc, Vector256<byte> u, Vector256<sbyte> s, Vector256<short> weights);
}

/// <summary>AVX2: <c>maddubs</c> into int16 pairs, then <c>madd</c> into int32.</summary>
internal struct Avx2Dot : IIntegerDot
{
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<int> Dot(Vector256<byte> u, Vector256<sbyte> s) =>
        Avx2.MultiplyAddAdjacent(Avx2.MultiplyAddAdjacent(u, s), Vector256.Create((short)1));

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<int> Dot(Vector256<byte> u0, Vector256<sbyte> s0, Vector256<byte> u1, Vector256<sbyte> s1) =>
        Avx2.MultiplyAddAdjacent(Avx2.MultiplyAddAdjacent(u0, s0) + Avx2.MultiplyAddAdjacent(u1, s1), Vector256.Create((short)1));

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<int> WeightedDotAdd(Vector256<int> acc, Vector256<byte> u, Vector256<sbyte> s, Vector256<short> weights) =>
        acc + Avx2.MultiplyAddAdjacent(Avx2.MultiplyAddAdjacent(u, s), weights);
}

/// <summary>
/// AVX-VNNI: <c>vpdpbusd</c> sums four byte products straight into int32 (one instruction for <c>maddubs</c> +
/// <c>madd</c>), <c>vpdpwssd</c> weights int16 pairs and accumulates (one for <c>madd</c> + add).
/// </summary>
internal struct VnniDot : IIntegerDot
{
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<int> Dot(Vector256<byte> u, Vector256<sbyte> s) =>
        AvxVnni.MultiplyWideningAndAdd(Vector256<int>.Zero, u, s);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<int> Dot(Vector256<byte> u0, Vector256<sbyte> s0, Vector256<byte> u1, Vector256<sbyte> s1) =>
        AvxVnni.MultiplyWideningAndAdd(AvxVnni.MultiplyWideningAndAdd(Vector256<int>.Zero, u0, s0), u1, s1);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<int> WeightedDotAdd(Vector256<int> acc, Vector256<byte> u, Vector256<sbyte> s, Vector256<short> weights) =>
        AvxVnni.MultiplyWideningAndAdd(acc, Avx2.MultiplyAddAdjacent(u, s), weights);
}
