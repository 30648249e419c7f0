using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using Velo.Tensors;

namespace Velo.Kernels;

/// <summary>How to read 8 consecutive weights of a float-typed row as floats.</summary>
internal unsafe interface IFloatRow
{
    /// <summary>Any 8 values.</summary>
    static abstract Vector256<float> Load8(byte* row, int index);

    /// <summary>8 values, none of which is of the kind <see cref="HasRareValues"/> looks for.</summary>
    static abstract Vector256<float> Load8Common(byte* row, int index);

    /// <summary>
    /// Whether the 16 values of <paramref name="row0"/> from <paramref name="index0"/> or the 16 of
    /// <paramref name="row1"/> from <paramref name="index1"/> need <see cref="Load8"/> rather than <see cref="Load8Common"/>.
    /// </summary>
    static abstract bool HasRareValues(byte* row0, int index0, byte* row1, int index1);

    static abstract float Load1(byte* row, int index);
}

internal unsafe struct F32Row : IFloatRow
{
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> Load8(byte* row, int index) => Avx.LoadVector256((float*)row + index);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> Load8Common(byte* row, int index) => Load8(row, index);

    public static bool HasRareValues(byte* row0, int index0, byte* row1, int index1) => false;

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
    public static Vector256<float> Load8(byte* row, int index) =>
        HighHalvesToSingle(Avx2.ShiftLeftLogical(Avx2.ConvertToVector256Int32((ushort*)row + index), 16));

    /// <summary>
    /// Normal halves only: sign-extending puts copies of the sign at bits 28..30 after the shift; the mask clears
    /// them, leaving the sign at 31 and exponent and mantissa at 27..13, and an integer add rebiases the exponent.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> Load8Common(byte* row, int index)
    {
        var bits = Avx2.ShiftLeftLogical(Avx2.ConvertToVector256Int32((short*)row + index), 13) & Vector256.Create(unchecked((int)0x8FFFE000));
        return (bits + Vector256.Create(NormalRebias)).AsSingle();
    }

    /// <summary>Zeros and subnormals: weights are rarely either, so 32 are checked at once with 16-bit compares.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static bool HasRareValues(byte* row0, int index0, byte* row1, int index1)
    {
        var exponent = Vector256.Create((short)0x7C00);
        var first = Avx.LoadVector256((short*)row0 + index0) & exponent;
        var second = Avx.LoadVector256((short*)row1 + index1) & exponent;
        return Vector256.EqualsAny(Vector256.Min(first, second), Vector256<short>.Zero);
    }

    public static float Load1(byte* row, int index) => (float)((Half*)row)[index];

    /// <summary>The columns one byte of <see cref="WeightMatrix.RareBlocks"/> speaks for.</summary>
    public const int RareBlockColumns = 32;

    /// <summary>
    /// Fills rows <paramref name="rowStart"/>..<paramref name="rowEnd"/> of <paramref name="flags"/> (Rows × Cols / 32
    /// bytes) as <see cref="WeightMatrix.RareBlocks"/> describes.
    /// </summary>
    public static void FindRareBlocks(in WeightMatrix w, int rowStart, int rowEnd, byte* flags)
    {
        if (w.Type != GgmlType.F16 || w.Cols % RareBlockColumns != 0)
            throw new ArgumentException($"Rare-block flags describe F16 matrices whose width is a multiple of {RareBlockColumns}, not {w.Type}×{w.Cols}.");
        int blocks = w.Cols / RareBlockColumns;
        flags += (long)rowStart * blocks;
        for (int r = rowStart; r < rowEnd; r++)
        {
            byte* row = w.Row(r);
            for (int b = 0; b < blocks; b++)
            {
                int i = b * RareBlockColumns;
                *flags++ = HasRareValues(row, i, row, i + 16) ? (byte)1 : (byte)0;
            }
        }
    }

    /// <summary>Widens a row of <paramref name="count"/> halves to floats.</summary>
    public static void Widen(byte* row, float* destination, int count)
    {
        int i = 0;
        for (; i + 8 <= count; i += 8)
            Avx.Store(destination + i, Load8(row, i));
        for (; i < count; i++)
            destination[i] = Load1(row, i);
    }

    /// <summary>The scalar form, for the fp16 block scales of quantized types.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float ToSingle(ushort half) => HighHalvesToSingle(Vector128.CreateScalar(half << 16)).ToScalar();

    /// <summary>Widens the two halves of <paramref name="pair"/> (low half first) into lanes 0 and 1.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector128<float> PairToSingle(uint pair) =>
        HighHalvesToSingle(Vector128.Create((int)(pair << 16), (int)(pair & 0xFFFF0000), 0, 0));

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

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> Load8Common(byte* row, int index) => Load8(row, index);

    public static bool HasRareValues(byte* row0, int index0, byte* row1, int index1) => false;

    public static float Load1(byte* row, int index) => BitConverter.Int32BitsToSingle(((ushort*)row)[index] << 16);
}

/// <summary>AVX2+FMA kernels for F32, F16 and BF16 weights against float activations.</summary>
internal static unsafe class FloatKernels
{
    private const int TokenTile = 4;

    /// <summary>Whether <see cref="Rows{TRow}"/> needs <see cref="MatMulTask.RowScratch"/> of ChunkRows × Cols floats per thread.</summary>
    public static bool WidensRows(GgmlType type, int tokens) => type == GgmlType.F16 && tokens >= TokenTile;

    public static void Rows<TRow>(MatMulTask* task, int rowStart, int rowEnd, int threadIndex) where TRow : IFloatRow
    {
        if (typeof(TRow) == typeof(F16Row) && WidensRows(GgmlType.F16, task->Tokens))
        {
            // Widening halves exactly takes a dozen operations per 8 (see F16Row); done once per chunk instead
            // of once per token tile, the FMAs of the tiles get the core to themselves.
            int cols = task->W.Cols;
            float* widened = (float*)(task->RowScratch + threadIndex * task->RowScratchBytes);
            for (int r = rowStart; r < rowEnd; r++)
                F16Row.Widen(task->W.Row(r), widened + (long)(r - rowStart) * cols, cols);
            Tiles<F32Row>(task, (byte*)widened, cols * sizeof(float), rowStart, rowEnd);
            return;
        }
        Tiles<TRow>(task, task->W.Row(rowStart), task->W.RowBytes, rowStart, rowEnd);
    }

    /// <summary>Rows <paramref name="rowStart"/>..<paramref name="rowEnd"/> of the output, reading their weights from <paramref name="firstRow"/> on.</summary>
    private static void Tiles<TRow>(MatMulTask* task, byte* firstRow, long rowBytes, int rowStart, int rowEnd) where TRow : IFloatRow
    {
        int cols = task->W.Cols, rows = task->W.Rows, tokens = task->Tokens;
        for (int token = 0; token < tokens; token += TokenTile)
        {
            int tileTokens = Math.Min(TokenTile, tokens - token);
            float* x = task->X + (long)token * cols;
            float* y = task->Y + (long)token * rows;
            int r = rowStart;
            byte* row = firstRow;
            if (tileTokens == TokenTile)
            {
                for (; r + 2 <= rowEnd; r += 2, row += 2 * rowBytes)
                    Dot2x4<TRow>(row, row + rowBytes, x, cols, y + r, rows);
                if (r < rowEnd)
                    Dot4<TRow>(row, x, cols, y + r, rows);
            }
            else
            {
                // Only the weights as stored have flags (the widened F32 rows of prefill have no rare values).
                byte* rareBlocks = typeof(TRow) == typeof(F16Row) ? task->W.RareBlocks : null;
                long flagsPerRow = cols / F16Row.RareBlockColumns;
                for (; r + 2 <= rowEnd; r += 2, row += 2 * rowBytes)
                {
                    byte* rare0 = rareBlocks == null ? null : rareBlocks + r * flagsPerRow;
                    byte* rare1 = rareBlocks == null ? null : rare0 + flagsPerRow;
                    for (int t = 0; t < tileTokens; t++)
                        Dot2<TRow>(row, row + rowBytes, rare0, rare1, x + (long)t * cols, cols, y + (long)t * rows + r);
                }
                if (r < rowEnd)
                {
                    byte* rare = rareBlocks == null ? null : rareBlocks + r * flagsPerRow;
                    for (int t = 0; t < tileTokens; t++)
                        y[(long)t * rows + r] = Dot1<TRow>(row, rare, x + (long)t * cols, cols);
                }
            }
        }
    }

    /// <summary>
    /// <paramref name="rareBlocks"/>: the row's <see cref="WeightMatrix.RareBlocks"/>, or null to check the
    /// weights themselves. One accumulator, in the order of each token of <see cref="Dot2x4{TRow}"/> and
    /// <see cref="Dot4{TRow}"/>, so a token's result does not depend on how many others share its batch. Decode
    /// is bound by widening and memory rather than FMA latency, so the single dependency chain costs nothing there.
    /// </summary>
    private static float Dot1<TRow>(byte* row, byte* rareBlocks, float* x, int cols) where TRow : IFloatRow
    {
        Vector256<float> acc = default;
        int i = 0;
        for (; i + 32 <= cols; i += 32)
        {
            bool rare = rareBlocks != null ? rareBlocks[i / 32] != 0 : TRow.HasRareValues(row, i, row, i + 16);
            Accumulate32<TRow>(row, i, rare, x, ref acc);
        }
        for (; i + 8 <= cols; i += 8)
            acc = Fma.MultiplyAdd(TRow.Load8(row, i), Avx.LoadVector256(x + i), acc);
        float sum = Vector256.Sum(acc);
        for (; i < cols; i++)
            sum += TRow.Load1(row, i) * x[i];
        return sum;
    }

    /// <summary>
    /// Two rows against one token: each activation vector is loaded once for both rows, which halves the
    /// activation traffic — with float activations as large as the weight row, that traffic is what a neighbour
    /// on the same core's caches hurts most. Each row is summed in exactly the order of <see cref="Dot1{TRow}"/>,
    /// so results do not depend on which rows end up paired (which depends on the thread count).
    /// </summary>
    private static void Dot2<TRow>(byte* row0, byte* row1, byte* rareBlocks0, byte* rareBlocks1, float* x, int cols, float* y) where TRow : IFloatRow
    {
        Vector256<float> a = default, b = default;
        int i = 0;
        for (; i + 32 <= cols; i += 32)
        {
            bool rare0 = rareBlocks0 != null ? rareBlocks0[i / 32] != 0 : TRow.HasRareValues(row0, i, row0, i + 16);
            bool rare1 = rareBlocks1 != null ? rareBlocks1[i / 32] != 0 : TRow.HasRareValues(row1, i, row1, i + 16);
            Accumulate32<TRow>(row0, i, rare0, x, ref a);
            Accumulate32<TRow>(row1, i, rare1, x, ref b);
        }
        for (; i + 8 <= cols; i += 8)
        {
            var xv = Avx.LoadVector256(x + i);
            a = Fma.MultiplyAdd(TRow.Load8(row0, i), xv, a);
            b = Fma.MultiplyAdd(TRow.Load8(row1, i), xv, b);
        }
        float s0 = Vector256.Sum(a), s1 = Vector256.Sum(b);
        for (; i < cols; i++)
        {
            s0 += TRow.Load1(row0, i) * x[i];
            s1 += TRow.Load1(row1, i) * x[i];
        }
        y[0] = s0;
        y[1] = s1;
    }

    /// <summary>Adds columns <paramref name="i"/>..+32 of one row times the activations to the accumulator, 8 at a time.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Accumulate32<TRow>(byte* row, int i, bool rare, float* x, ref Vector256<float> acc) where TRow : IFloatRow
    {
        if (rare)
        {
            acc = Fma.MultiplyAdd(TRow.Load8(row, i), Avx.LoadVector256(x + i), acc);
            acc = Fma.MultiplyAdd(TRow.Load8(row, i + 8), Avx.LoadVector256(x + i + 8), acc);
            acc = Fma.MultiplyAdd(TRow.Load8(row, i + 16), Avx.LoadVector256(x + i + 16), acc);
            acc = Fma.MultiplyAdd(TRow.Load8(row, i + 24), Avx.LoadVector256(x + i + 24), acc);
        }
        else
        {
            acc = Fma.MultiplyAdd(TRow.Load8Common(row, i), Avx.LoadVector256(x + i), acc);
            acc = Fma.MultiplyAdd(TRow.Load8Common(row, i + 8), Avx.LoadVector256(x + i + 8), acc);
            acc = Fma.MultiplyAdd(TRow.Load8Common(row, i + 16), Avx.LoadVector256(x + i + 16), acc);
            acc = Fma.MultiplyAdd(TRow.Load8Common(row, i + 24), Avx.LoadVector256(x + i + 24), acc);
        }
    }

    /// <summary>
    /// Two rows against four tokens: eight accumulators, and per 8 columns two weight and four activation loads
    /// for eight FMAs, so the FMA units rather than the loads set the pace.
    /// </summary>
    private static void Dot2x4<TRow>(byte* row0, byte* row1, float* x, int cols, float* y, int yStride) where TRow : IFloatRow
    {
        Vector256<float> a00 = default, a01 = default, a02 = default, a03 = default;
        Vector256<float> a10 = default, a11 = default, a12 = default, a13 = default;
        float* x1 = x + cols, x2 = x1 + cols, x3 = x2 + cols;
        int i = 0;
        for (; i + 8 <= cols; i += 8)
        {
            var w0 = TRow.Load8(row0, i);
            var w1 = TRow.Load8(row1, i);
            var v = Avx.LoadVector256(x + i);
            a00 = Fma.MultiplyAdd(w0, v, a00);
            a10 = Fma.MultiplyAdd(w1, v, a10);
            v = Avx.LoadVector256(x1 + i);
            a01 = Fma.MultiplyAdd(w0, v, a01);
            a11 = Fma.MultiplyAdd(w1, v, a11);
            v = Avx.LoadVector256(x2 + i);
            a02 = Fma.MultiplyAdd(w0, v, a02);
            a12 = Fma.MultiplyAdd(w1, v, a12);
            v = Avx.LoadVector256(x3 + i);
            a03 = Fma.MultiplyAdd(w0, v, a03);
            a13 = Fma.MultiplyAdd(w1, v, a13);
        }
        float s00 = Vector256.Sum(a00), s01 = Vector256.Sum(a01), s02 = Vector256.Sum(a02), s03 = Vector256.Sum(a03);
        float s10 = Vector256.Sum(a10), s11 = Vector256.Sum(a11), s12 = Vector256.Sum(a12), s13 = Vector256.Sum(a13);
        for (; i < cols; i++)
        {
            float w0 = TRow.Load1(row0, i), w1 = TRow.Load1(row1, i);
            s00 += w0 * x[i]; s01 += w0 * x1[i]; s02 += w0 * x2[i]; s03 += w0 * x3[i];
            s10 += w1 * x[i]; s11 += w1 * x1[i]; s12 += w1 * x2[i]; s13 += w1 * x3[i];
        }
        y[0] = s00; y[yStride] = s01; y[2L * yStride] = s02; y[3L * yStride] = s03;
        y[1] = s10; y[yStride + 1] = s11; y[2L * yStride + 1] = s12; y[3L * yStride + 1] = s13;
    }

    /// <summary>One row against four tokens: each weight is loaded and widened once for all four.</summary>
    private static void Dot4<TRow>(byte* row, float* x, int cols, float* y, int yStride) where TRow : IFloatRow
    {
        Vector256<float> acc0 = default, acc1 = default, acc2 = default, acc3 = default;
        float* x1 = x + cols, x2 = x1 + cols, x3 = x2 + cols;
        int i = 0;
        for (; i + 8 <= cols; i += 8)
        {
            var w = TRow.Load8(row, i);
            acc0 = Fma.MultiplyAdd(w, Avx.LoadVector256(x + i), acc0);
            acc1 = Fma.MultiplyAdd(w, Avx.LoadVector256(x1 + i), acc1);
            acc2 = Fma.MultiplyAdd(w, Avx.LoadVector256(x2 + i), acc2);
            acc3 = Fma.MultiplyAdd(w, Avx.LoadVector256(x3 + i), acc3);
        }
        float s0 = Vector256.Sum(acc0), s1 = Vector256.Sum(acc1), s2 = Vector256.Sum(acc2), s3 = Vector256.Sum(acc3);
        for (; i < cols; i++)
        {
            float w = TRow.Load1(row, i);
            s0 += w * x[i];
            s1 += w * x1[i];
            s2 += w * x2[i];
            s3 += w * x3[i];
        }
        y[0] = s0;
        y[yStride] = s1;
        y[2L * yStride] = s2;
        y[3L * yStride] = s3;
    }
}
