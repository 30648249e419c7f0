using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using Velo.Tensors;

namespace Velo.Kernels;

/// <summary>
/// F16 weights repacked at load into <see cref="RowGroups"/>' F16 groups (16 rows, 8 columns at a time) times one to
/// seven tokens, with AVX-512: a decode step reads each work item's groups as one sequential stream, where
/// <see cref="FloatKernels"/> reads four rows side by side, four streams a few KiB long. Each 32-byte load holds 8
/// halves of two rows and widens to one 512-bit register (lanes 0..7 the even row, 8..15 the odd one), multiplied
/// by the token's 8 activations broadcast to both halves; eight accumulators hold a group's 16 rows.
/// <para>
/// The sums are the F16 definition every float path keeps: per row and token, lane l of 8 sums
/// <c>w[c]·x[c]</c> for c = l, l+8, … in order with FMA, then the lanes are added by
/// <see cref="Vector256.Sum{T}(Vector256{T})"/> (FloatKernels' Dot1, FloatGemm's prefill tiles), so results are bit
/// for bit those of every other path and batch size. Rows here are whole 8-column blocks, with no tail.
/// </para>
/// </summary>
internal static unsafe class F16RowGroupKernels
{
    /// <summary>Whether these kernels run: AVX-512 with its 256-bit broadcasts.</summary>
    public static bool IsSupported => FloatKernels.WideIsSupported;

    /// <summary>Whether the loader repacks F16 matrices of <paramref name="cols"/> columns for these kernels.</summary>
    public static bool Reads(GgmlType type, int cols) => type == GgmlType.F16 && RowGroups.CanRepack(type, cols) && IsSupported;

    /// <summary>Bytes of one block of a group: 16 rows of 8 halves.</summary>
    private const int BlockBytes = RowGroups.Rows * RowGroups.F16BlockColumns * sizeof(ushort);

    /// <summary>
    /// Rows <paramref name="rowStart"/>..<paramref name="rowEnd"/> for fewer than <see cref="FloatKernels.SmallBatchTokens"/>
    /// tokens, from the repacked groups: each group is read from memory for its first tile of up to three tokens and
    /// from cache for the others. A matrix without a repacked copy goes to <see cref="FloatKernels.WideRows{TRow}"/>.
    /// <see cref="MatMulTask.Activations"/> holds the activations scaled for <see cref="F16ScaledRow"/>, or is null when
    /// they could not be scaled (then the halves are widened exactly).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Rows(MatMulTask* task, int rowStart, int rowEnd, int threadIndex)
    {
        if (task->W.Packed == null || task->Tokens >= FloatKernels.SmallBatchTokens)
        {
            FloatKernels.WideRows<F16Row>(task, rowStart, rowEnd, threadIndex);
            return;
        }
        if (task->Activations != null) Rows<F16ScaledRow>(task, (float*)task->Activations, rowStart, rowEnd);
        else Rows<F16Row>(task, task->X, rowStart, rowEnd);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Rows<TRow>(MatMulTask* task, float* x, int rowStart, int rowEnd) where TRow : IFloatRow
    {
        int cols = task->W.Cols, rows = task->W.Rows, tokens = task->Tokens;
        long groupBytes = RowGroups.GroupBytes(GgmlType.F16, cols);
        int first = task->W.PackedFirstLane, laneStart = first + rowStart, laneEnd = first + rowEnd;
        float* sums = stackalloc float[TileTokens * RowGroups.Rows];
        for (int g = laneStart / RowGroups.Rows; g * RowGroups.Rows < laneEnd; g++)
        {
            int groupLane = g * RowGroups.Rows;
            int firstLane = Math.Max(laneStart, groupLane) - groupLane, endLane = Math.Min(laneEnd, groupLane + RowGroups.Rows) - groupLane;
            byte* group = task->W.Packed + g * groupBytes;
            for (int t = 0; t < tokens; t += TileTokens)
            {
                int count = Math.Min(TileTokens, tokens - t);
                float* xt = x + (long)t * cols;
                if (count == 3) Group<TRow, ThreeTokens>(group, xt, cols, sums);
                else if (count == 2) Group<TRow, TwoTokens>(group, xt, cols, sums);
                else Group<TRow, OneToken>(group, xt, cols, sums);
                for (int k = 0; k < count; k++)
                {
                    float* y = task->Y + (long)(t + k) * rows + (groupLane - first);
                    for (int lane = firstLane; lane < endLane; lane++)
                        y[lane] = sums[k * RowGroups.Rows + lane];
                }
            }
        }
    }

    /// <summary>Tokens a group is read for at once: three tokens' eight accumulators each, and their activations, fill 28 of the 32 registers.</summary>
    private const int TileTokens = 3;

    /// <summary>
    /// One group's 16 sums for each of <typeparamref name="TTokens"/> tokens (token k's at <paramref name="sums"/> +
    /// 16k): each widened pair of rows is multiplied by every token's activations. No software prefetches: the
    /// group is one sequential stream in 2 MiB pages, which the hardware prefetchers follow, and prefetches 1 KiB
    /// ahead made llama-1B F16 decode slower on the 2-core Zen 4 VM (5 alternating rounds, load 6–11: 0.63–0.88×).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Group<TRow, TTokens>(byte* group, float* x, int cols, float* sums) where TRow : IFloatRow where TTokens : ITokenCount
    {
        int n = TTokens.Count;
        Vector512<float> a0 = default, a1 = default, a2 = default, a3 = default, a4 = default, a5 = default, a6 = default, a7 = default;
        Vector512<float> b0 = default, b1 = default, b2 = default, b3 = default, b4 = default, b5 = default, b6 = default, b7 = default;
        Vector512<float> c0 = default, c1 = default, c2 = default, c3 = default, c4 = default, c5 = default, c6 = default, c7 = default;
        Vector512<float> xa = default, xb = default, xc = default, w;
        byte* block = group;
        for (int c = 0; c < cols; c += RowGroups.F16BlockColumns, block += BlockBytes)
        {
            xa = Avx512DQ.BroadcastVector256ToVector512(x + c);
            if (n > 1) xb = Avx512DQ.BroadcastVector256ToVector512(x + cols + c);
            if (n > 2) xc = Avx512DQ.BroadcastVector256ToVector512(x + 2L * cols + c);
            w = Load2Rows<TRow>(block);
            a0 = Avx512F.FusedMultiplyAdd(w, xa, a0);
            if (n > 1) b0 = Avx512F.FusedMultiplyAdd(w, xb, b0);
            if (n > 2) c0 = Avx512F.FusedMultiplyAdd(w, xc, c0);
            w = Load2Rows<TRow>(block + 32);
            a1 = Avx512F.FusedMultiplyAdd(w, xa, a1);
            if (n > 1) b1 = Avx512F.FusedMultiplyAdd(w, xb, b1);
            if (n > 2) c1 = Avx512F.FusedMultiplyAdd(w, xc, c1);
            w = Load2Rows<TRow>(block + 64);
            a2 = Avx512F.FusedMultiplyAdd(w, xa, a2);
            if (n > 1) b2 = Avx512F.FusedMultiplyAdd(w, xb, b2);
            if (n > 2) c2 = Avx512F.FusedMultiplyAdd(w, xc, c2);
            w = Load2Rows<TRow>(block + 96);
            a3 = Avx512F.FusedMultiplyAdd(w, xa, a3);
            if (n > 1) b3 = Avx512F.FusedMultiplyAdd(w, xb, b3);
            if (n > 2) c3 = Avx512F.FusedMultiplyAdd(w, xc, c3);
            w = Load2Rows<TRow>(block + 128);
            a4 = Avx512F.FusedMultiplyAdd(w, xa, a4);
            if (n > 1) b4 = Avx512F.FusedMultiplyAdd(w, xb, b4);
            if (n > 2) c4 = Avx512F.FusedMultiplyAdd(w, xc, c4);
            w = Load2Rows<TRow>(block + 160);
            a5 = Avx512F.FusedMultiplyAdd(w, xa, a5);
            if (n > 1) b5 = Avx512F.FusedMultiplyAdd(w, xb, b5);
            if (n > 2) c5 = Avx512F.FusedMultiplyAdd(w, xc, c5);
            w = Load2Rows<TRow>(block + 192);
            a6 = Avx512F.FusedMultiplyAdd(w, xa, a6);
            if (n > 1) b6 = Avx512F.FusedMultiplyAdd(w, xb, b6);
            if (n > 2) c6 = Avx512F.FusedMultiplyAdd(w, xc, c6);
            w = Load2Rows<TRow>(block + 224);
            a7 = Avx512F.FusedMultiplyAdd(w, xa, a7);
            if (n > 1) b7 = Avx512F.FusedMultiplyAdd(w, xb, b7);
            if (n > 2) c7 = Avx512F.FusedMultiplyAdd(w, xc, c7);
        }
        Store16(a0, a1, a2, a3, a4, a5, a6, a7, sums);
        if (n > 1) Store16(b0, b1, b2, b3, b4, b5, b6, b7, sums + RowGroups.Rows);
        if (n > 2) Store16(c0, c1, c2, c3, c4, c5, c6, c7, sums + 2 * RowGroups.Rows);
    }

    /// <summary>Two rows' 8 halves (16 consecutive halves of a block) as floats: scaled by 2^-112 for <see cref="F16ScaledRow"/>, else exact.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<float> Load2Rows<TRow>(byte* halves) where TRow : IFloatRow
    {
        if (typeof(TRow) == typeof(F16ScaledRow))
            return (Avx512F.ShiftLeftLogical(Avx512F.ConvertToVector512Int32(Avx.LoadVector256((short*)halves)), 13)
                & Vector512.Create(unchecked((int)0x8FFFE000))).AsSingle();
        return Vector512.Create(F16Row.Load8(halves, 0), F16Row.Load8(halves, RowGroups.F16BlockColumns));
    }

    /// <summary>A group's 16 sums from its eight accumulators: each register's two rows' 8 lanes added as the definition adds them.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Store16(Vector512<float> r01, Vector512<float> r23, Vector512<float> r45, Vector512<float> r67,
        Vector512<float> r89, Vector512<float> r1011, Vector512<float> r1213, Vector512<float> r1415, float* sums)
    {
        Store2(r01, sums);
        Store2(r23, sums + 2);
        Store2(r45, sums + 4);
        Store2(r67, sums + 6);
        Store2(r89, sums + 8);
        Store2(r1011, sums + 10);
        Store2(r1213, sums + 12);
        Store2(r1415, sums + 14);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Store2(Vector512<float> rows, float* sums)
    {
        sums[0] = Vector256.Sum(rows.GetLower());
        sums[1] = Vector256.Sum(rows.GetUpper());
    }

    /// <summary>
    /// Widens rows <paramref name="rowStart"/>..<paramref name="rowEnd"/> of <paramref name="w"/>'s repacked groups
    /// back into the file's column order, exactly (<see cref="F16Row"/>), row after row from
    /// <paramref name="destination"/> on: prefill reads them there instead of the mapped file. Each group is read
    /// once, in order; widened row by row, rows of 8192 columns reread each group's lines from L2 four times.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void WidenRows(in WeightMatrix w, int rowStart, int rowEnd, float* destination)
    {
        int cols = w.Cols, laneStart = w.PackedFirstLane + rowStart, laneEnd = w.PackedFirstLane + rowEnd;
        long groupBytes = RowGroups.GroupBytes(GgmlType.F16, cols);
        for (int g = laneStart / RowGroups.Rows; g * RowGroups.Rows < laneEnd; g++)
        {
            int groupLane = g * RowGroups.Rows;
            int firstLane = Math.Max(laneStart, groupLane) - groupLane, endLane = Math.Min(laneEnd, groupLane + RowGroups.Rows) - groupLane;
            float* rows = destination + (long)(groupLane + firstLane - laneStart) * cols;
            byte* block = w.Packed + g * groupBytes + firstLane * RowGroups.F16BlockColumns * sizeof(ushort);
            for (int c = 0; c < cols; c += RowGroups.F16BlockColumns, block += BlockBytes)
                for (int lane = 0; lane < endLane - firstLane; lane++)
                    Avx.Store(rows + (long)lane * cols + c, F16Row.Load8(block, lane * RowGroups.F16BlockColumns));
        }
    }
}
