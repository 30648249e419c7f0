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
    /// tokens, from the repacked groups: each group is read from memory for the first token and from cache for the
    /// others. A matrix without a repacked copy goes to <see cref="FloatKernels.WideRows{TRow}"/>.
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
        int cols = task->W.Cols, rows = task->W.Rows, tokens = task->Tokens;
        bool scaled = task->Activations != null;
        float* x = scaled ? (float*)task->Activations : task->X;
        long groupBytes = RowGroups.GroupBytes(GgmlType.F16, cols);
        int first = task->W.PackedFirstLane, laneStart = first + rowStart, laneEnd = first + rowEnd;
        float* sums = stackalloc float[RowGroups.Rows];
        for (int g = laneStart / RowGroups.Rows; g * RowGroups.Rows < laneEnd; g++)
        {
            int groupLane = g * RowGroups.Rows;
            int firstLane = Math.Max(laneStart, groupLane) - groupLane, endLane = Math.Min(laneEnd, groupLane + RowGroups.Rows) - groupLane;
            byte* group = task->W.Packed + g * groupBytes;
            for (int t = 0; t < tokens; t++)
            {
                if (scaled) Group<F16ScaledRow>(group, x + (long)t * cols, cols, sums);
                else Group<F16Row>(group, x + (long)t * cols, cols, sums);
                float* y = task->Y + (long)t * rows + (groupLane - first);
                for (int lane = firstLane; lane < endLane; lane++)
                    y[lane] = sums[lane];
            }
        }
    }

    /// <summary>
    /// One group's 16 sums against one token. Each block's four lines are matched by prefetches
    /// <see cref="PrefetchBytes"/> ahead in the same stream.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Group<TRow>(byte* group, float* x, int cols, float* sums) where TRow : IFloatRow
    {
        Vector512<float> a0 = default, a1 = default, a2 = default, a3 = default, a4 = default, a5 = default, a6 = default, a7 = default;
        byte* block = group;
        for (int c = 0; c < cols; c += RowGroups.F16BlockColumns, block += BlockBytes)
        {
            Sse.Prefetch0(block + PrefetchBytes);
            Sse.Prefetch0(block + PrefetchBytes + 64);
            Sse.Prefetch0(block + PrefetchBytes + 128);
            Sse.Prefetch0(block + PrefetchBytes + 192);
            var xv = Avx512DQ.BroadcastVector256ToVector512(x + c);
            a0 = Avx512F.FusedMultiplyAdd(Load2Rows<TRow>(block), xv, a0);
            a1 = Avx512F.FusedMultiplyAdd(Load2Rows<TRow>(block + 32), xv, a1);
            a2 = Avx512F.FusedMultiplyAdd(Load2Rows<TRow>(block + 64), xv, a2);
            a3 = Avx512F.FusedMultiplyAdd(Load2Rows<TRow>(block + 96), xv, a3);
            a4 = Avx512F.FusedMultiplyAdd(Load2Rows<TRow>(block + 128), xv, a4);
            a5 = Avx512F.FusedMultiplyAdd(Load2Rows<TRow>(block + 160), xv, a5);
            a6 = Avx512F.FusedMultiplyAdd(Load2Rows<TRow>(block + 192), xv, a6);
            a7 = Avx512F.FusedMultiplyAdd(Load2Rows<TRow>(block + 224), xv, a7);
        }
        Store2(a0, sums);
        Store2(a1, sums + 2);
        Store2(a2, sums + 4);
        Store2(a3, sums + 6);
        Store2(a4, sums + 8);
        Store2(a5, sums + 10);
        Store2(a6, sums + 12);
        Store2(a7, sums + 14);
    }

    /// <summary>How far ahead of the block being read its stream is prefetched.</summary>
    private const int PrefetchBytes = 1024;

    /// <summary>Two rows' 8 halves (16 consecutive halves of a block) as floats: scaled by 2^-112 for <see cref="F16ScaledRow"/>, else exact.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<float> Load2Rows<TRow>(byte* halves) where TRow : IFloatRow
    {
        if (typeof(TRow) == typeof(F16ScaledRow))
            return (Avx512F.ShiftLeftLogical(Avx512F.ConvertToVector512Int32(Avx.LoadVector256((short*)halves)), 13)
                & Vector512.Create(unchecked((int)0x8FFFE000))).AsSingle();
        return Vector512.Create(F16Row.Load8(halves, 0), F16Row.Load8(halves, RowGroups.F16BlockColumns));
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Store2(Vector512<float> rows, float* sums)
    {
        sums[0] = Vector256.Sum(rows.GetLower());
        sums[1] = Vector256.Sum(rows.GetUpper());
    }

    /// <summary>
    /// Widens row <paramref name="r"/> of <paramref name="w"/>'s repacked groups back into the file's column order,
    /// exactly (<see cref="F16Row"/>), for prefill to read instead of the mapped file.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void WidenRow(in WeightMatrix w, int r, float* destination)
    {
        int lane = w.PackedFirstLane + r, cols = w.Cols;
        byte* block = w.Packed + lane / RowGroups.Rows * RowGroups.GroupBytes(GgmlType.F16, cols)
            + lane % RowGroups.Rows * RowGroups.F16BlockColumns * sizeof(ushort);
        for (int c = 0; c < cols; c += RowGroups.F16BlockColumns, block += BlockBytes)
            Avx.Store(destination + c, F16Row.Load8(block, 0));
    }
}
