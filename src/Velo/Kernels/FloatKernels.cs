using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using Velo.Tensors;

namespace Velo.Kernels;

/// <summary>How to read 8 consecutive weights of a float-typed row as floats.</summary>
internal unsafe interface IFloatRow
{
    static abstract Vector256<float> Load8(byte* row, int index);

    static abstract float Load1(byte* row, int index);

    /// <summary>What the other operand of a product must be multiplied by for the product to be weight × operand.</summary>
    static virtual float Prescale => 1f;
}

/// <summary>A weight row type <see cref="FloatKernels.WideRows{TRow}"/> reads two rows of at a time.</summary>
internal unsafe interface IWideFloatRow : IFloatRow
{
    /// <summary>8 consecutive weights of <paramref name="row0"/> in lanes 0..7 and the same 8 of <paramref name="row1"/> in lanes 8..15 (AVX-512).</summary>
    static abstract Vector512<float> Load8Pair(byte* row0, byte* row1, int index);
}

internal unsafe struct F32Row : IWideFloatRow
{
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> Load8(byte* row, int index) => Avx.LoadVector256((float*)row + index);

    public static float Load1(byte* row, int index) => ((float*)row)[index];

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> Load8Pair(byte* row0, byte* row1, int index) =>
        Vector512.Create(Avx.LoadVector256((float*)row0 + index), Avx.LoadVector256((float*)row1 + index));
}

/// <summary>
/// .NET exposes no F16C instructions, so halves are widened with integer operations (Fabian Giesen's method):
/// exponent and mantissa move to their float positions and the exponent is rebiased by an integer add, exact for
/// normals; subnormal halves take the exponent of 2^-14 and then subtract 2^-14, still exactly. Decode avoids even
/// this with <see cref="F16ScaledRow"/>. Infinities and NaNs come out finite; no model stores them as weights or scales.
/// </summary>
internal unsafe struct F16Row : IWideFloatRow
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

    public static float Load1(byte* row, int index) => (float)((Half*)row)[index];

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> Load8Pair(byte* row0, byte* row1, int index) => Vector512.Create(Load8(row0, index), Load8(row1, index));

    /// <summary>Widens a row of <paramref name="count"/> halves to floats.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
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
    /// <remarks>
    /// Interleaving zero words below the pair's (<c>vmovd</c> + <c>vpunpcklwd</c>) puts each half in the high bits of
    /// its lane; <c>Vector128.Create</c> of four ints took a <c>vpinsrd</c> per lane, several per K-quant super-block.
    /// </remarks>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector128<float> PairToSingle(uint pair) =>
        HighHalvesToSingle(Sse2.UnpackLow(Vector128<ushort>.Zero, Vector128.CreateScalar(pair).AsUInt16()).AsInt32());

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

/// <summary>
/// F16 weights read as 2^-112 times their value: sign-extending a half and shifting it left by 13 puts exponent and
/// mantissa at their float positions and copies of the sign at bits 28..31; masking bits 28..30 leaves a float whose
/// exponent field is the half's own, that is the half's value times 2^(15-127). Subnormal halves land on subnormal
/// floats of exactly the same scaled value, so the scaling is exact for every finite half, and three integer
/// operations replace a dozen. Multiplied by activations scaled by 2^112 (<see cref="FloatKernels.ScaleForF16"/>), each
/// product is the same real number as weight × activation, so every FMA rounds exactly as it would on the widened
/// weight: results are bit-identical to <see cref="F16Row"/>'s.
/// </summary>
internal unsafe struct F16ScaledRow : IWideFloatRow
{
    /// <summary>The magnitude below which an operand scaled by <see cref="Prescale"/> stays finite.</summary>
    public const float LargestScalable = 65536f;

    public static float Prescale => FloatKernels.F16ActivationScale;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> Load8(byte* row, int index) =>
        (Avx2.ShiftLeftLogical(Avx2.ConvertToVector256Int32((short*)row + index), 13) & Vector256.Create(unchecked((int)0x8FFFE000))).AsSingle();

    public static float Load1(byte* row, int index)
    {
        int half = ((short*)row)[index];
        return BitConverter.Int32BitsToSingle((half << 13) & unchecked((int)0x8FFFE000));
    }

    /// <summary>The two rows' halves side by side in one register, so one widening, shift and mask serve both.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> Load8Pair(byte* row0, byte* row1, int index) =>
        (Avx512F.ShiftLeftLogical(Avx512F.ConvertToVector512Int32(Vector256.Create(Sse2.LoadVector128((short*)row0 + index), Sse2.LoadVector128((short*)row1 + index))), 13)
            & Vector512.Create(unchecked((int)0x8FFFE000))).AsSingle();
}

internal unsafe struct BF16Row : IWideFloatRow
{
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> Load8(byte* row, int index) =>
        Avx2.ShiftLeftLogical(Avx2.ConvertToVector256Int32((ushort*)row + index), 16).AsSingle();

    public static float Load1(byte* row, int index) => BitConverter.Int32BitsToSingle(((ushort*)row)[index] << 16);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> Load8Pair(byte* row0, byte* row1, int index) =>
        Avx512F.ShiftLeftLogical(Avx512F.ConvertToVector512Int32(Vector256.Create(Sse2.LoadVector128((ushort*)row0 + index), Sse2.LoadVector128((ushort*)row1 + index))), 16).AsSingle();
}

/// <summary>AVX2+FMA kernels for F32, F16 and BF16 weights against float activations.</summary>
internal static unsafe class FloatKernels
{
    private const int TokenTile = 4;

    /// <summary>
    /// The factor <see cref="F16ScaledRow"/>'s activations carry. Activations of magnitude 2^16 or more would overflow
    /// when scaled; then decode widens the halves exactly instead.
    /// </summary>
    public const float F16ActivationScale = 5.192296858534828e33f; // 2^112

    /// <summary>
    /// Writes <paramref name="x"/> × <see cref="F16ActivationScale"/> to <paramref name="scaled"/>; false (and the
    /// contents undefined) when some value is not finite or has a magnitude of 2^16 or more.
    /// </summary>
    public static bool ScaleForF16(float* x, long count, float* scaled)
    {
        var limit = Vector256.Create(F16ScaledRow.LargestScalable);
        var scale = Vector256.Create(F16ActivationScale);
        var inRange = Vector256<float>.AllBitsSet;
        long i = 0;
        for (; i + 8 <= count; i += 8)
        {
            var v = Avx.LoadVector256(x + i);
            // An ordered compare is false for NaN, so NaNs clear the mask too.
            inRange &= Avx.CompareLessThan(Vector256.Abs(v), limit);
            Avx.Store(scaled + i, v * scale);
        }
        bool ok = Vector256.EqualsAll(inRange.AsInt32(), Vector256<int>.AllBitsSet);
        for (; i < count; i++)
        {
            ok &= MathF.Abs(x[i]) < F16ScaledRow.LargestScalable;
            scaled[i] = x[i] * F16ActivationScale;
        }
        return ok;
    }

    /// <summary>
    /// Up to this many tokens, <see cref="Rows{TRow}"/> reads each weight row once for all of them, straight from the
    /// weights (F16 as <see cref="F16ScaledRow"/>): a decode step's last token and the drafts a speculative step verifies.
    /// Widening F16 rows exactly into scratch first (a dozen operations per 8 halves) cost a 5-token pass of llama-1B
    /// F16 several times a one-token pass; from 8 tokens on (<see cref="FloatGemm.MinTokens"/> with AVX-512), a row
    /// serves enough tokens that widening it once pays.
    /// </summary>
    public const int SmallBatchTokens = 8;

    /// <summary>Whether <see cref="Rows{TRow}"/> needs <see cref="MatMulTask.RowScratch"/> of ChunkRows × Cols floats per thread.</summary>
    public static bool WidensRows(GgmlType type, int tokens) => type == GgmlType.F16 && tokens >= SmallBatchTokens;

    /// <summary>
    /// For F16 weights and fewer than <see cref="SmallBatchTokens"/> tokens, <see cref="MatMulTask.Activations"/> holds
    /// the activations scaled by <see cref="ScaleForF16"/>, or is null when they could not be scaled.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
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
            Tiles<F32Row>(task, (byte*)widened, cols * sizeof(float), task->X, rowStart, rowEnd);
            return;
        }
        if (typeof(TRow) == typeof(F16Row) && task->Activations != null)
        {
            RowsFrom<F16ScaledRow>(task, task->W.Row(rowStart), task->W.RowBytes, (float*)task->Activations, rowStart, rowEnd);
            return;
        }
        RowsFrom<TRow>(task, task->W.Row(rowStart), task->W.RowBytes, task->X, rowStart, rowEnd);
    }

    /// <summary>Whether <see cref="WideRows{TRow}"/> can run: AVX-512 with its 256-bit broadcasts.</summary>
    public static bool WideIsSupported => Avx512F.IsSupported && Avx512DQ.IsSupported;

    /// <summary>
    /// <see cref="Rows{TRow}"/>, except that two to seven tokens go through <see cref="SmallBatchWide{TRow}"/>: the same
    /// sums, bit for bit, with two rows to each 512-bit register.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void WideRows<TRow>(MatMulTask* task, int rowStart, int rowEnd, int threadIndex) where TRow : IWideFloatRow
    {
        if (task->Tokens is > 1 and < SmallBatchTokens)
        {
            if (typeof(TRow) == typeof(F16Row) && task->Activations != null)
                SmallBatchWide<F16ScaledRow>(task, task->W.Row(rowStart), task->W.RowBytes, (float*)task->Activations, rowStart, rowEnd);
            else
                SmallBatchWide<TRow>(task, task->W.Row(rowStart), task->W.RowBytes, task->X, rowStart, rowEnd);
            return;
        }
        Rows<TRow>(task, rowStart, rowEnd, threadIndex);
    }

    /// <summary>
    /// Two to seven tokens with AVX-512: each group of four rows is read once for all of them, and each load,
    /// widening and FMA works on two rows at once (lanes 0..7 one row, 8..15 the next), against each token's 8
    /// activations broadcast to both halves. Against <see cref="SmallBatch{TRow}"/>, which reads a pair of rows
    /// twice for five tokens (a tile of four, then one) and widens each row separately, this more than halves the
    /// instructions per weight: on llama-1B F16's matrices (2 threads) a 5-token pass took 1.2–1.5 one-token passes'
    /// time instead of 2.5. Each (row, token) keeps its own 8 lanes summed in <see cref="Dot1{TRow}"/>'s order.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void SmallBatchWide<TRow>(MatMulTask* task, byte* firstRow, long rowBytes, float* x, int rowStart, int rowEnd) where TRow : IWideFloatRow
    {
        int cols = task->W.Cols, rows = task->W.Rows, tokens = task->Tokens;
        float* y = task->Y;
        int r = rowStart;
        byte* row = firstRow;
        for (; r + 4 <= rowEnd; r += 4, row += 4 * rowBytes)
        {
            float* yr = y + r;
            switch (tokens)
            {
                case 2: Dot4xN<TRow, TwoTokens>(row, rowBytes, x, cols, yr, rows); break;
                case 3: Dot4xN<TRow, ThreeTokens>(row, rowBytes, x, cols, yr, rows); break;
                case 4: Dot4xN<TRow, FourTokens>(row, rowBytes, x, cols, yr, rows); break;
                case 5: Dot4xN<TRow, FiveTokens>(row, rowBytes, x, cols, yr, rows); break;
                case 6: Dot4xN<TRow, SixTokens>(row, rowBytes, x, cols, yr, rows); break;
                default: Dot4xN<TRow, SevenTokens>(row, rowBytes, x, cols, yr, rows); break;
            }
        }
        for (; r < rowEnd; r++, row += rowBytes)
            for (int t = 0; t < tokens; t++)
                y[(long)t * rows + r] = Dot1<TRow>(row, x + (long)t * cols, cols);
    }

    /// <summary>
    /// Four rows against <typeparamref name="TTokens"/> tokens (up to seven): two 512-bit accumulators per token, so
    /// up to 14, with each cache line of the four rows matched by a prefetch of the same line of the next four (see
    /// <see cref="Dot4Rows{TRow}"/>).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Dot4xN<TRow, TTokens>(byte* row0, long rowBytes, float* x, int cols, float* y, int yStride)
        where TRow : IWideFloatRow where TTokens : ITokenCount
    {
        int n = TTokens.Count;
        byte* row1 = row0 + rowBytes, row2 = row1 + rowBytes, row3 = row2 + rowBytes;
        int valueBytes = (int)(rowBytes / cols);
        int lineMask = Math.Max(8, 64 / valueBytes) - 1;
        long ahead = 4 * rowBytes;
        Vector512<float> a0 = default, a1 = default, a2 = default, a3 = default, a4 = default, a5 = default, a6 = default;
        Vector512<float> b0 = default, b1 = default, b2 = default, b3 = default, b4 = default, b5 = default, b6 = default;
        int i = 0;
        for (; i + 8 <= cols; i += 8)
        {
            if ((i & lineMask) == 0)
            {
                long next = ahead + (long)i * valueBytes;
                Sse.Prefetch0(row0 + next);
                Sse.Prefetch0(row1 + next);
                Sse.Prefetch0(row2 + next);
                Sse.Prefetch0(row3 + next);
            }
            var w01 = TRow.Load8Pair(row0, row1, i);
            var w23 = TRow.Load8Pair(row2, row3, i);
            float* xi = x + i;
            var v = Avx512DQ.BroadcastVector256ToVector512(xi);
            a0 = Avx512F.FusedMultiplyAdd(w01, v, a0);
            b0 = Avx512F.FusedMultiplyAdd(w23, v, b0);
            v = Avx512DQ.BroadcastVector256ToVector512(xi + cols);
            a1 = Avx512F.FusedMultiplyAdd(w01, v, a1);
            b1 = Avx512F.FusedMultiplyAdd(w23, v, b1);
            if (n > 2)
            {
                v = Avx512DQ.BroadcastVector256ToVector512(xi + 2L * cols);
                a2 = Avx512F.FusedMultiplyAdd(w01, v, a2);
                b2 = Avx512F.FusedMultiplyAdd(w23, v, b2);
            }
            if (n > 3)
            {
                v = Avx512DQ.BroadcastVector256ToVector512(xi + 3L * cols);
                a3 = Avx512F.FusedMultiplyAdd(w01, v, a3);
                b3 = Avx512F.FusedMultiplyAdd(w23, v, b3);
            }
            if (n > 4)
            {
                v = Avx512DQ.BroadcastVector256ToVector512(xi + 4L * cols);
                a4 = Avx512F.FusedMultiplyAdd(w01, v, a4);
                b4 = Avx512F.FusedMultiplyAdd(w23, v, b4);
            }
            if (n > 5)
            {
                v = Avx512DQ.BroadcastVector256ToVector512(xi + 5L * cols);
                a5 = Avx512F.FusedMultiplyAdd(w01, v, a5);
                b5 = Avx512F.FusedMultiplyAdd(w23, v, b5);
            }
            if (n > 6)
            {
                v = Avx512DQ.BroadcastVector256ToVector512(xi + 6L * cols);
                a6 = Avx512F.FusedMultiplyAdd(w01, v, a6);
                b6 = Avx512F.FusedMultiplyAdd(w23, v, b6);
            }
        }
        Finish4<TRow>(a0, b0, row0, rowBytes, x, i, cols, y);
        Finish4<TRow>(a1, b1, row0, rowBytes, x + cols, i, cols, y + yStride);
        if (n > 2) Finish4<TRow>(a2, b2, row0, rowBytes, x + 2L * cols, i, cols, y + 2L * yStride);
        if (n > 3) Finish4<TRow>(a3, b3, row0, rowBytes, x + 3L * cols, i, cols, y + 3L * yStride);
        if (n > 4) Finish4<TRow>(a4, b4, row0, rowBytes, x + 4L * cols, i, cols, y + 4L * yStride);
        if (n > 5) Finish4<TRow>(a5, b5, row0, rowBytes, x + 5L * cols, i, cols, y + 5L * yStride);
        if (n > 6) Finish4<TRow>(a6, b6, row0, rowBytes, x + 6L * cols, i, cols, y + 6L * yStride);
    }

    /// <summary>One token's sums of four rows from <see cref="Dot4xN{TRow, TTokens}"/>'s two accumulators, tail columns added as <see cref="Dot1{TRow}"/> adds them.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Finish4<TRow>(Vector512<float> rows01, Vector512<float> rows23, byte* row0, long rowBytes, float* x, int tail, int cols, float* y)
        where TRow : IFloatRow
    {
        y[0] = Finish<TRow>(rows01.GetLower(), row0, x, tail, cols);
        y[1] = Finish<TRow>(rows01.GetUpper(), row0 + rowBytes, x, tail, cols);
        y[2] = Finish<TRow>(rows23.GetLower(), row0 + 2 * rowBytes, x, tail, cols);
        y[3] = Finish<TRow>(rows23.GetUpper(), row0 + 3 * rowBytes, x, tail, cols);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float Finish<TRow>(Vector256<float> acc, byte* row, float* x, int tail, int cols) where TRow : IFloatRow
    {
        float sum = Vector256.Sum(acc);
        for (int i = tail; i < cols; i++)
            sum += TRow.Load1(row, i) * x[i];
        return sum;
    }

    /// <summary>One token through <see cref="Tiles{TRow}"/>' four-row kernel, a few through <see cref="SmallBatch{TRow}"/>, more in tiles.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void RowsFrom<TRow>(MatMulTask* task, byte* firstRow, long rowBytes, float* x, int rowStart, int rowEnd) where TRow : IFloatRow
    {
        if (task->Tokens is > 1 and < SmallBatchTokens)
            SmallBatch<TRow>(task, firstRow, rowBytes, x, rowStart, rowEnd);
        else
            Tiles<TRow>(task, firstRow, rowBytes, x, rowStart, rowEnd);
    }

    /// <summary>
    /// Two to seven tokens: each pair of rows is read once (from memory, prefetched a pair ahead) for all of them, in
    /// a tile of four tokens and then one of the rest, while the pair is still in L1. Every (row, token) keeps its own
    /// accumulator summed in <see cref="Dot1{TRow}"/>'s order, so the results equal those of each token alone.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void SmallBatch<TRow>(MatMulTask* task, byte* firstRow, long rowBytes, float* x, int rowStart, int rowEnd) where TRow : IFloatRow
    {
        int cols = task->W.Cols, rows = task->W.Rows, tokens = task->Tokens;
        float* y = task->Y;
        int r = rowStart;
        byte* row = firstRow;
        for (; r + 2 <= rowEnd; r += 2, row += 2 * rowBytes)
        {
            int t = 0;
            for (; t + TokenTile <= tokens; t += TokenTile)
                Dot2xN<TRow, FourTokens>(row, rowBytes, x + (long)t * cols, cols, y + (long)t * rows + r, rows);
            float* xt = x + (long)t * cols, yt = y + (long)t * rows + r;
            switch (tokens - t)
            {
                case 3: Dot2xN<TRow, ThreeTokens>(row, rowBytes, xt, cols, yt, rows); break;
                case 2: Dot2xN<TRow, TwoTokens>(row, rowBytes, xt, cols, yt, rows); break;
                case 1: Dot2xN<TRow, OneToken>(row, rowBytes, xt, cols, yt, rows); break;
            }
        }
        if (r < rowEnd)
            for (int t = 0; t < tokens; t++)
                y[(long)t * rows + r] = Dot1<TRow>(row, x + (long)t * cols, cols);
    }

    /// <summary>
    /// Rows <paramref name="rowStart"/>..<paramref name="rowEnd"/> of the output, reading their weights from
    /// <paramref name="firstRow"/> on and the activations from <paramref name="x"/>.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Tiles<TRow>(MatMulTask* task, byte* firstRow, long rowBytes, float* x, int rowStart, int rowEnd) where TRow : IFloatRow
    {
        int cols = task->W.Cols, rows = task->W.Rows, tokens = task->Tokens;
        for (int token = 0; token < tokens; token += TokenTile)
        {
            int tileTokens = Math.Min(TokenTile, tokens - token);
            float* xTile = x + (long)token * cols;
            float* y = task->Y + (long)token * rows;
            int r = rowStart;
            byte* row = firstRow;
            if (tileTokens == TokenTile)
            {
                for (; r + 2 <= rowEnd; r += 2, row += 2 * rowBytes)
                    Dot2xN<TRow, FourTokens>(row, rowBytes, xTile, cols, y + r, rows);
                if (r < rowEnd)
                    Dot4<TRow>(row, xTile, cols, y + r, rows);
            }
            else
            {
                for (; r + 4 <= rowEnd; r += 4, row += 4 * rowBytes)
                    for (int t = 0; t < tileTokens; t++)
                        Dot4Rows<TRow>(row, rowBytes, xTile + (long)t * cols, cols, y + (long)t * rows + r);
                for (; r < rowEnd; r++, row += rowBytes)
                    for (int t = 0; t < tileTokens; t++)
                        y[(long)t * rows + r] = Dot1<TRow>(row, xTile + (long)t * cols, cols);
            }
        }
    }

    /// <summary>
    /// One accumulator, in the order of each token of <see cref="Dot2xN{TRow, TTokens}"/> and <see cref="Dot4{TRow}"/>, so a
    /// token's result does not depend on how many others share its batch.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static float Dot1<TRow>(byte* row, float* x, int cols) where TRow : IFloatRow
    {
        Vector256<float> acc = default;
        int i = 0;
        for (; i + 8 <= cols; i += 8)
            acc = Fma.MultiplyAdd(TRow.Load8(row, i), Avx.LoadVector256(x + i), acc);
        float sum = Vector256.Sum(acc);
        for (; i < cols; i++)
            sum += TRow.Load1(row, i) * x[i];
        return sum;
    }

    /// <summary>
    /// Four rows against one token, each summed in exactly the order of <see cref="Dot1{TRow}"/> (so results do not
    /// depend on which rows end up grouped, which depends on the thread count). Four independent dependency chains
    /// hide the FMA latency that a single row's chain would expose, and each activation vector is loaded once for
    /// four rows. Each cache line read is matched by a prefetch of the same line of the next four rows: rows are a
    /// few KiB, often a page each, and the hardware prefetcher neither crosses pages nor ramps up within so short a
    /// stream on its own — measured on a memory-mapped 1B model, one thread read 19 GB/s without and 37 GB/s with.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Dot4Rows<TRow>(byte* row0, long rowBytes, float* x, int cols, float* y) where TRow : IFloatRow
    {
        byte* row1 = row0 + rowBytes, row2 = row1 + rowBytes, row3 = row2 + rowBytes;
        int valueBytes = (int)(rowBytes / cols);
        int colsPerLine = Math.Max(8, 64 / valueBytes);
        long ahead = 4 * rowBytes;
        Vector256<float> a = default, b = default, c = default, d = default;
        int i = 0;
        for (; i + colsPerLine <= cols; i += colsPerLine)
        {
            long next = ahead + (long)i * valueBytes;
            Sse.Prefetch0(row0 + next);
            Sse.Prefetch0(row1 + next);
            Sse.Prefetch0(row2 + next);
            Sse.Prefetch0(row3 + next);
            for (int k = i; k < i + colsPerLine; k += 8)
            {
                var xv = Avx.LoadVector256(x + k);
                a = Fma.MultiplyAdd(TRow.Load8(row0, k), xv, a);
                b = Fma.MultiplyAdd(TRow.Load8(row1, k), xv, b);
                c = Fma.MultiplyAdd(TRow.Load8(row2, k), xv, c);
                d = Fma.MultiplyAdd(TRow.Load8(row3, k), xv, d);
            }
        }
        for (; i + 8 <= cols; i += 8)
        {
            var xv = Avx.LoadVector256(x + i);
            a = Fma.MultiplyAdd(TRow.Load8(row0, i), xv, a);
            b = Fma.MultiplyAdd(TRow.Load8(row1, i), xv, b);
            c = Fma.MultiplyAdd(TRow.Load8(row2, i), xv, c);
            d = Fma.MultiplyAdd(TRow.Load8(row3, i), xv, d);
        }
        float s0 = Vector256.Sum(a), s1 = Vector256.Sum(b), s2 = Vector256.Sum(c), s3 = Vector256.Sum(d);
        for (; i < cols; i++)
        {
            s0 += TRow.Load1(row0, i) * x[i];
            s1 += TRow.Load1(row1, i) * x[i];
            s2 += TRow.Load1(row2, i) * x[i];
            s3 += TRow.Load1(row3, i) * x[i];
        }
        y[0] = s0;
        y[1] = s1;
        y[2] = s2;
        y[3] = s3;
    }

    /// <summary>
    /// Two rows against <typeparamref name="TTokens"/> tokens (up to four): up to eight accumulators, and per 8 columns
    /// two weight loads for up to eight FMAs, so with four tokens the FMA units rather than the loads set the pace.
    /// Each cache line of the two rows read is matched by a prefetch of the same line of the next two (see
    /// <see cref="Dot4Rows{TRow}"/>).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Dot2xN<TRow, TTokens>(byte* row0, long rowBytes, float* x, int cols, float* y, int yStride)
        where TRow : IFloatRow where TTokens : ITokenCount
    {
        int n = TTokens.Count;
        byte* row1 = row0 + rowBytes;
        int valueBytes = (int)(rowBytes / cols);
        int lineMask = Math.Max(8, 64 / valueBytes) - 1;
        long ahead = 2 * rowBytes;
        Vector256<float> a00 = default, a01 = default, a02 = default, a03 = default;
        Vector256<float> a10 = default, a11 = default, a12 = default, a13 = default;
        float* x1 = x + cols, x2 = x1 + cols, x3 = x2 + cols;
        int i = 0;
        for (; i + 8 <= cols; i += 8)
        {
            if ((i & lineMask) == 0)
            {
                Sse.Prefetch0(row0 + ahead + (long)i * valueBytes);
                Sse.Prefetch0(row1 + ahead + (long)i * valueBytes);
            }
            var w0 = TRow.Load8(row0, i);
            var w1 = TRow.Load8(row1, i);
            var v = Avx.LoadVector256(x + i);
            a00 = Fma.MultiplyAdd(w0, v, a00);
            a10 = Fma.MultiplyAdd(w1, v, a10);
            if (n > 1)
            {
                v = Avx.LoadVector256(x1 + i);
                a01 = Fma.MultiplyAdd(w0, v, a01);
                a11 = Fma.MultiplyAdd(w1, v, a11);
            }
            if (n > 2)
            {
                v = Avx.LoadVector256(x2 + i);
                a02 = Fma.MultiplyAdd(w0, v, a02);
                a12 = Fma.MultiplyAdd(w1, v, a12);
            }
            if (n > 3)
            {
                v = Avx.LoadVector256(x3 + i);
                a03 = Fma.MultiplyAdd(w0, v, a03);
                a13 = Fma.MultiplyAdd(w1, v, a13);
            }
        }
        float s00 = Vector256.Sum(a00), s01 = Vector256.Sum(a01), s02 = Vector256.Sum(a02), s03 = Vector256.Sum(a03);
        float s10 = Vector256.Sum(a10), s11 = Vector256.Sum(a11), s12 = Vector256.Sum(a12), s13 = Vector256.Sum(a13);
        for (; i < cols; i++)
        {
            float w0 = TRow.Load1(row0, i), w1 = TRow.Load1(row1, i);
            s00 += w0 * x[i]; s10 += w1 * x[i];
            if (n > 1) { s01 += w0 * x1[i]; s11 += w1 * x1[i]; }
            if (n > 2) { s02 += w0 * x2[i]; s12 += w1 * x2[i]; }
            if (n > 3) { s03 += w0 * x3[i]; s13 += w1 * x3[i]; }
        }
        y[0] = s00; y[1] = s10;
        if (n > 1) { y[yStride] = s01; y[yStride + 1] = s11; }
        if (n > 2) { y[2L * yStride] = s02; y[2L * yStride + 1] = s12; }
        if (n > 3) { y[3L * yStride] = s03; y[3L * yStride + 1] = s13; }
    }

    /// <summary>One row against four tokens: each weight is loaded and widened once for all four.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
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

/// <summary>How many tokens a kernel of <see cref="FloatKernels"/> takes, as a constant the JIT folds into it.</summary>
internal interface ITokenCount
{
    static abstract int Count { get; }
}

internal struct OneToken : ITokenCount
{
    public static int Count => 1;
}

internal struct TwoTokens : ITokenCount
{
    public static int Count => 2;
}

internal struct ThreeTokens : ITokenCount
{
    public static int Count => 3;
}

internal struct FourTokens : ITokenCount
{
    public static int Count => 4;
}

internal struct FiveTokens : ITokenCount
{
    public static int Count => 5;
}

internal struct SixTokens : ITokenCount
{
    public static int Count => 6;
}

internal struct SevenTokens : ITokenCount
{
    public static int Count => 7;
}
