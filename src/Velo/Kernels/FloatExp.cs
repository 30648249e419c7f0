using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Velo.Kernels;

/// <summary>
/// The part of e^x in single precision that the kernels' exponentials share (Cephes' expf, within 2 ulp, where
/// .NET's <see cref="Vector512.Exp(Vector512{float})"/> works in double precision at several times the cost):
/// x = n·ln 2 + r with |r| ≤ ln 2 / 2 (ln 2 in two parts) and e^r by a polynomial. The caller multiplies by 2^n in
/// the way its range of x needs.
/// </summary>
internal static class FloatExp
{
    private const float Log2E = 1.44269504088896341f, Ln2High = 0.693359375f, Ln2Low = -2.12194440e-4f;
    private const float C5 = 1.9875691500e-4f, C4 = 1.3981999507e-3f, C3 = 8.3334519073e-3f, C2 = 4.1665795894e-2f;
    private const float C1 = 1.6666665459e-1f, C0 = 5.0000001201e-1f;

    /// <summary>e^r for x = n·ln 2 + r, and n (a whole number, as a float).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> Reduced(Vector512<float> x, out Vector512<float> n)
    {
        n = Vector512.Round(x * Vector512.Create(Log2E));
        var r = Vector512.FusedMultiplyAdd(n, Vector512.Create(-Ln2High), x);
        r = Vector512.FusedMultiplyAdd(n, Vector512.Create(-Ln2Low), r);
        var p = Vector512.Create(C5);
        p = Vector512.FusedMultiplyAdd(p, r, Vector512.Create(C4));
        p = Vector512.FusedMultiplyAdd(p, r, Vector512.Create(C3));
        p = Vector512.FusedMultiplyAdd(p, r, Vector512.Create(C2));
        p = Vector512.FusedMultiplyAdd(p, r, Vector512.Create(C1));
        p = Vector512.FusedMultiplyAdd(p, r, Vector512.Create(C0));
        return Vector512.FusedMultiplyAdd(p, r * r, r + Vector512<float>.One);
    }

    /// <summary><see cref="Reduced(Vector512{float}, out Vector512{float})"/> of eight floats: the same operations lane by lane.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> Reduced(Vector256<float> x, out Vector256<float> n)
    {
        n = Vector256.Round(x * Vector256.Create(Log2E));
        var r = Vector256.FusedMultiplyAdd(n, Vector256.Create(-Ln2High), x);
        r = Vector256.FusedMultiplyAdd(n, Vector256.Create(-Ln2Low), r);
        var p = Vector256.Create(C5);
        p = Vector256.FusedMultiplyAdd(p, r, Vector256.Create(C4));
        p = Vector256.FusedMultiplyAdd(p, r, Vector256.Create(C3));
        p = Vector256.FusedMultiplyAdd(p, r, Vector256.Create(C2));
        p = Vector256.FusedMultiplyAdd(p, r, Vector256.Create(C1));
        p = Vector256.FusedMultiplyAdd(p, r, Vector256.Create(C0));
        return Vector256.FusedMultiplyAdd(p, r * r, r + Vector256<float>.One);
    }

    /// <summary>
    /// e^x for x ≤ 0 by <see cref="Reduced(Vector512{float}, out Vector512{float})"/>, times 2^n built in the
    /// exponent bits. x is first raised to −87, where e^x is still a normal float (about 1.6e-38): erf only needs
    /// e^(−z²) while it is above float's resolution of 1, and a softmax weight that small is nothing beside its
    /// row's largest, 1.
    /// n is a whole number from −126 to 0, so the plain conversion instruction gives what the saturating
    /// <see cref="Vector512.ConvertToInt32(Vector512{float})"/> does, without its three instructions of range fix-up.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> NonPositive(Vector512<float> x)
    {
        var p = Reduced(Vector512.Max(x, Vector512.Create(ExpFloor)), out var n);
        var whole = Avx512F.IsSupported ? Avx512F.ConvertToVector512Int32(n) : Vector512.ConvertToInt32(n);
        return p * Vector512.ShiftLeft(whole + Vector512.Create(127), 23).AsSingle();
    }

    /// <summary><see cref="NonPositive(Vector512{float})"/> of eight floats: the same operations lane by lane.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> NonPositive(Vector256<float> x)
    {
        var p = Reduced(Vector256.Max(x, Vector256.Create(ExpFloor)), out var n);
        var whole = Avx.IsSupported ? Avx.ConvertToVector256Int32(n) : Vector256.ConvertToInt32(n);
        return p * Vector256.ShiftLeft(whole + Vector256.Create(127), 23).AsSingle();
    }

    private const float ExpFloor = -87f;
}
