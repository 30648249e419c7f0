using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Velo.Kernels;

/// <summary>How to read 8 consecutive weights of a float-typed row as floats.</summary>
internal unsafe interface IFloatRow
{
    static abstract Vector256<float> Load8(byte* row, int index);
    static abstract float Load1(byte* row, int index);
}

internal unsafe struct F32Row : IFloatRow
{
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> Load8(byte* row, int index) => Avx.LoadVector256((float*)row + index);

    public static float Load1(byte* row, int index) => ((float*)row)[index];
}

/// <summary>
/// .NET exposes no F16C instructions, so halves are widened with integer operations (Fabian Giesen's method):
/// exponent and mantissa move to their float positions and the exponent is rebiased by an integer add, exact for
/// normals; subnormal halves take the exponent of 2^-14 and then subtract 2^-14, still exactly. The usual shortcut
/// of multiplying by 2^112 is avoided because it feeds subnormal floats to the multiplier, which costs a
/// microcode assist per instruction on AMD cores — and small K-quant scales are often subnormal halves.
/// Infinities and NaNs come out finite; no model stores them as weights or scales.
/// </summary>
internal unsafe struct F16Row : IFloatRow
{
    private const int SignBit = unchecked((int)0x80000000);
    private const int MagnitudeBits = 0x0FFFE000;
    private const int ExponentBits = 0x0F800000;
    private const int NormalRebias = 112 << 23;
    private const int SubnormalRebias = 113 << 23;
    private const float TwoPowMinus14 = 6.103515625e-05f;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> Load8(byte* row, int index)
    {
        // Sign-extending puts copies of the sign at bits 28..30 after the shift; the mask clears them, leaving
        // the sign at 31 and exponent and mantissa at 27..13. Weights are rarely zero or subnormal, so the
        // exact general conversion runs only for the vectors that have one.
        var bits = Avx2.ShiftLeftLogical(Avx2.ConvertToVector256Int32((short*)row + index), 13) & Vector256.Create(unchecked((int)0x8FFFE000));
        if (Vector256.EqualsAny(bits & Vector256.Create(ExponentBits), Vector256<int>.Zero))
            return HighHalvesToSingle(Avx2.ShiftLeftLogical(Avx2.ConvertToVector256Int32((ushort*)row + index), 16));
        return (bits + Vector256.Create(NormalRebias)).AsSingle();
    }

    public static float Load1(byte* row, int index) => (float)((Half*)row)[index];

    /// <summary>The scalar form, for the fp16 block scales of quantized types.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float ToSingle(ushort half) => HighHalvesToSingle(Vector128.CreateScalar(half << 16)).ToScalar();

    /// <summary>Widens 8 halves held in the low 16 bits of each int32 lane (upper bits ignored).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> LowHalvesToSingle(Vector256<int> packed) => HighHalvesToSingle(Avx2.ShiftLeftLogical(packed, 16));

    /// <summary>Widens 8 halves held in the high 16 bits of each int32 lane (low bits ignored).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> HighHalvesToSingle(Vector256<int> packed)
    {
        var magnitude = Avx2.ShiftRightLogical(packed, 3) & Vector256.Create(MagnitudeBits);
        var normal = (magnitude + Vector256.Create(NormalRebias)).AsSingle();
        var subnormal = (magnitude + Vector256.Create(SubnormalRebias)).AsSingle() - Vector256.Create(TwoPowMinus14);
        var isSubnormal = Vector256.Equals(magnitude & Vector256.Create(ExponentBits), Vector256<int>.Zero).AsSingle();
        return Avx.BlendVariable(normal, subnormal, isSubnormal) | (packed & Vector256.Create(SignBit)).AsSingle();
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector128<float> HighHalvesToSingle(Vector128<int> packed)
    {
        var magnitude = Sse2.ShiftRightLogical(packed, 3) & Vector128.Create(MagnitudeBits);
        var normal = (magnitude + Vector128.Create(NormalRebias)).AsSingle();
        var subnormal = (magnitude + Vector128.Create(SubnormalRebias)).AsSingle() - Vector128.Create(TwoPowMinus14);
        var isSubnormal = Vector128.Equals(magnitude & Vector128.Create(ExponentBits), Vector128<int>.Zero).AsSingle();
        return Sse41.BlendVariable(normal, subnormal, isSubnormal) | (packed & Vector128.Create(SignBit)).AsSingle();
    }
}

internal unsafe struct BF16Row : IFloatRow
{
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> Load8(byte* row, int index) =>
        Avx2.ShiftLeftLogical(Avx2.ConvertToVector256Int32((ushort*)row + index), 16).AsSingle();

    public static float Load1(byte* row, int index) => BitConverter.Int32BitsToSingle(((ushort*)row)[index] << 16);
}

/// <summary>
/// AVX2+FMA kernels for F32, F16 and BF16 weights against float activations. A token's dot product is summed in
/// the same order whether it runs alone (<see cref="Dot1{TRow}"/>) or in a tile (<see cref="Dot2{TRow}"/>), so its
/// result does not depend on what else is in the batch. The tile is two tokens because each needs Dot1's four
/// accumulators, and eight is what the sixteen vector registers hold next to the loads.
/// </summary>
internal static unsafe class FloatKernels
{
    private const int TokenTile = 2;

    public static void Rows<TRow>(MatMulTask* task, int rowStart, int rowEnd, int threadIndex) where TRow : IFloatRow
    {
        int cols = task->W.Cols, rows = task->W.Rows, tokens = task->Tokens;
        for (int token = 0; token < tokens; token += TokenTile)
        {
            int tileTokens = Math.Min(TokenTile, tokens - token);
            float* x = task->X + (long)token * cols;
            float* y = task->Y + (long)token * rows;
            for (int r = rowStart; r < rowEnd; r++)
            {
                byte* row = task->W.Row(r);
                if (tileTokens == TokenTile)
                    Dot2<TRow>(row, x, cols, y + r, rows);
                else
                    y[r] = Dot1<TRow>(row, x, cols);
            }
        }
    }

    private static float Dot1<TRow>(byte* row, float* x, int cols) where TRow : IFloatRow
    {
        Vector256<float> acc0 = default, acc1 = default, acc2 = default, acc3 = default;
        int i = 0;
        // Four independent accumulators hide the FMA latency.
        for (; i + 32 <= cols; i += 32)
        {
            acc0 = Fma.MultiplyAdd(TRow.Load8(row, i), Avx.LoadVector256(x + i), acc0);
            acc1 = Fma.MultiplyAdd(TRow.Load8(row, i + 8), Avx.LoadVector256(x + i + 8), acc1);
            acc2 = Fma.MultiplyAdd(TRow.Load8(row, i + 16), Avx.LoadVector256(x + i + 16), acc2);
            acc3 = Fma.MultiplyAdd(TRow.Load8(row, i + 24), Avx.LoadVector256(x + i + 24), acc3);
        }
        for (; i + 8 <= cols; i += 8)
            acc0 = Fma.MultiplyAdd(TRow.Load8(row, i), Avx.LoadVector256(x + i), acc0);
        float sum = Vector256.Sum((acc0 + acc1) + (acc2 + acc3));
        for (; i < cols; i++)
            sum += TRow.Load1(row, i) * x[i];
        return sum;
    }

    /// <summary>One row against two tokens: each weight is loaded and widened once for both, each token summed as in <see cref="Dot1{TRow}"/>.</summary>
    private static void Dot2<TRow>(byte* row, float* x, int cols, float* y, int yStride) where TRow : IFloatRow
    {
        Vector256<float> a0 = default, a1 = default, a2 = default, a3 = default;
        Vector256<float> b0 = default, b1 = default, b2 = default, b3 = default;
        float* x1 = x + cols;
        int i = 0;
        for (; i + 32 <= cols; i += 32)
        {
            var w = TRow.Load8(row, i);
            a0 = Fma.MultiplyAdd(w, Avx.LoadVector256(x + i), a0);
            b0 = Fma.MultiplyAdd(w, Avx.LoadVector256(x1 + i), b0);
            w = TRow.Load8(row, i + 8);
            a1 = Fma.MultiplyAdd(w, Avx.LoadVector256(x + i + 8), a1);
            b1 = Fma.MultiplyAdd(w, Avx.LoadVector256(x1 + i + 8), b1);
            w = TRow.Load8(row, i + 16);
            a2 = Fma.MultiplyAdd(w, Avx.LoadVector256(x + i + 16), a2);
            b2 = Fma.MultiplyAdd(w, Avx.LoadVector256(x1 + i + 16), b2);
            w = TRow.Load8(row, i + 24);
            a3 = Fma.MultiplyAdd(w, Avx.LoadVector256(x + i + 24), a3);
            b3 = Fma.MultiplyAdd(w, Avx.LoadVector256(x1 + i + 24), b3);
        }
        for (; i + 8 <= cols; i += 8)
        {
            var w = TRow.Load8(row, i);
            a0 = Fma.MultiplyAdd(w, Avx.LoadVector256(x + i), a0);
            b0 = Fma.MultiplyAdd(w, Avx.LoadVector256(x1 + i), b0);
        }
        float s0 = Vector256.Sum((a0 + a1) + (a2 + a3)), s1 = Vector256.Sum((b0 + b1) + (b2 + b3));
        for (; i < cols; i++)
        {
            float w = TRow.Load1(row, i);
            s0 += w * x[i];
            s1 += w * x1[i];
        }
        y[0] = s0;
        y[yStride] = s1;
    }
}
