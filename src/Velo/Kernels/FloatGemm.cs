using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using Velo.Tensors;

namespace Velo.Kernels;

/// <summary>
/// Prefill of F32, F16 and BF16 weights with AVX-512 (a GEMM): tiles of 4 rows × 4 token pairs, sixteen 512-bit
/// accumulators each holding two tokens' 8-lane sums, fed per 8 columns by 4 weight loads (each 8 weights broadcast
/// to both halves) and 4 pair loads for 16 FMAs. Each half runs exactly the chain of a token alone
/// (<see cref="FloatKernels"/>' Dot1: lane l sums columns l, l+8, ... in order, then the lanes in
/// <see cref="Vector256.Sum{T}(Vector256{T})"/>'s order), so results are bit-identical to the AVX2 tiles and to a
/// token alone: prompts and batches give the same numbers as decode.
/// <para>
/// Blocking: a work item is a chunk of rows, its F16/BF16 weights widened to floats once into the thread's scratch
/// (a chunk's widened rows are reused by every token tile, so the widening costs little). Within it, for each tile
/// of 8 tokens, the columns go in blocks of <see cref="ColumnBlock"/>, so the tile's activations for a block (8 KiB)
/// stay in L1 while every 4-row tile of the chunk passes over them; the accumulators wait in a small buffer between
/// blocks, stored and reloaded exactly, which changes no rounding. Without blocks, a row of 2048 floats made the
/// tile's activations 64 KiB, past L1, and the kernel ran at half the speed it reaches on rows of 768.
/// </para>
/// <para>
/// <see cref="MatMulTask.Epilogue"/> is applied as the results leave the registers (bias, GELU, residual add), each
/// with the same float operations as the separate passes, so fused or not the results are the same bit for bit.
/// </para>
/// </summary>
internal static unsafe class FloatGemm
{
    /// <summary>Tokens from which a product of float weights takes this path.</summary>
    public const int MinTokens = 8;

    /// <summary>
    /// Rows up to this many columns are not split: a tile's activations then take at most 32 KiB, its weights 16,
    /// within L1. Longer ones are split into the fewest blocks of at most <see cref="ColumnBlock"/> columns. Each
    /// block costs a store and reload of the 16 accumulators; blocks of 256 columns made rows of 768 columns 10 %
    /// slower than whole rows, while rows of 1536 and 2048 columns gained 5–10 % from blocks of 512 to 768.
    /// </summary>
    private const int WholeRowColumns = 1024;

    private const int ColumnBlock = 768;

    /// <summary>Columns per block for rows of <paramref name="cols"/>: a multiple of 8.</summary>
    private static int BlockColumns(int cols) =>
        cols <= WholeRowColumns ? cols : (cols / 8 + (cols + ColumnBlock - 1) / ColumnBlock - 1) / ((cols + ColumnBlock - 1) / ColumnBlock) * 8;

    private const int TileRows = 4;
    private const int TilePairs = 4;

    /// <summary>
    /// Whether <see cref="Rows{TRow}"/> runs this product: AVX-512, float weights, columns in whole vectors of 8, and
    /// enough tokens for a tile of 4 pairs.
    /// </summary>
    public static bool Handles(GgmlType type, int tokens, int cols) =>
        type is GgmlType.F32 or GgmlType.F16 or GgmlType.BF16 && tokens >= MinTokens && cols % 8 == 0 && Avx512F.IsSupported;

    /// <summary>Bytes of activations packed by <see cref="PackPairs"/>: whole pairs, the last one padded with zeros.</summary>
    public static long PairedBytes(int tokens, int cols) => (tokens + 1) / 2 * 2L * cols * sizeof(float);

    /// <summary>Whether <see cref="Rows{TRow}"/> widens a chunk's rows into <see cref="MatMulTask.RowScratch"/> (ChunkRows × Cols floats per thread).</summary>
    public static bool WidensRows(GgmlType type) => type != GgmlType.F32;

    /// <summary>
    /// Writes token <paramref name="t"/> of <paramref name="x"/> into its half of its pair: pair p holds, for each 8
    /// columns, tokens 2p and 2p+1's values of them side by side, 16 floats, so one 512-bit register carries both
    /// tokens' 8-lane partial sums. The odd last token also zeroes its missing partner.
    /// </summary>
    public static void PackPairs(float* x, int cols, int tokens, int t, float* packed)
    {
        float* source = x + (long)t * cols;
        float* pair = packed + (long)(t / 2) * 2 * cols + (t % 2) * 8;
        for (int c = 0; c < cols; c += 8)
            Avx.Store(pair + 2 * c, Avx.LoadVector256(source + c));
        if (t == tokens - 1 && t % 2 == 0)
            for (int c = 0; c < cols; c += 8)
                Avx.Store(pair + 2 * c + 8, Vector256<float>.Zero);
    }

    /// <summary>
    /// Rows <paramref name="rowStart"/>..<paramref name="rowEnd"/> (at most <see cref="MatMul.MaxChunkRows"/>) for
    /// every token. <see cref="MatMulTask.Activations"/> holds <see cref="PackPairs"/>' layout.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Rows<TRow>(MatMulTask* task, int rowStart, int rowEnd, int threadIndex) where TRow : IFloatRow
    {
        int cols = task->W.Cols;
        float* weights;
        long rowFloats;
        if (typeof(TRow) == typeof(F32Row))
        {
            weights = (float*)task->W.Row(rowStart);
            rowFloats = task->W.RowBytes / sizeof(float);
        }
        else
        {
            weights = (float*)(task->RowScratch + threadIndex * task->RowScratchBytes);
            rowFloats = cols;
            // F16 weights repacked for decode are read there: the mapped file's pages then stay out of memory.
            if (typeof(TRow) == typeof(F16Row) && task->W.Packed != null)
                F16RowGroupKernels.WidenRows(task->W, rowStart, rowEnd, weights);
            else
                for (int r = rowStart; r < rowEnd; r++)
                    Widen<TRow>(task->W.Row(r), weights + (long)(r - rowStart) * cols, cols);
        }

        int tokens = task->Tokens, pairs = (tokens + 1) / 2, blockColumns = BlockColumns(cols);
        int tileRowEnd = rowStart + (rowEnd - rowStart) / TileRows * TileRows;
        long pairFloats = 2L * cols;
        float* packed = (float*)task->Activations;
        // One 4×4 tile's accumulators per 4 rows of the chunk, kept between column blocks.
        var accumulators = stackalloc Vector512<float>[MatMul.MaxChunkRows / TileRows * TileRows * TilePairs];
        // A tile's results on their way to the epilogue: 4 pairs × (4 rows of 2 tokens).
        float* tileResults = stackalloc float[TilePairs * 8];
        float* pending = task->Epilogue.IsNone ? null : tileResults;
        for (int p = 0; p < pairs; p += TilePairs)
        {
            int tilePairs = Math.Min(TilePairs, pairs - p);
            float* xTile = packed + p * pairFloats;
            if (tilePairs == TilePairs)
            {
                for (int c0 = 0; c0 < cols; c0 += blockColumns)
                {
                    int c1 = Math.Min(cols, c0 + blockColumns);
                    var acc = accumulators;
                    for (int r = rowStart; r < tileRowEnd; r += TileRows, acc += TileRows * TilePairs)
                        Tile4x4(weights + (r - rowStart) * rowFloats, rowFloats, xTile, pairFloats, c0, c1, acc, task, r, 2 * p, pending);
                }
            }
            else
            {
                for (int r = rowStart; r < tileRowEnd; r += TileRows)
                    for (int q = 0; q < tilePairs; q++)
                        Tile4x1(weights + (r - rowStart) * rowFloats, rowFloats, xTile + q * pairFloats, cols, task, r, 2 * (p + q), pending);
            }
            for (int r = tileRowEnd; r < rowEnd; r++)
                for (int q = 0; q < tilePairs; q++)
                    Tile1x1(weights + (r - rowStart) * rowFloats, xTile + q * pairFloats, cols, task, r, 2 * (p + q));
        }
    }

    /// <summary>Widens a row of F16 or BF16 weights to floats, 16 at a time.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Widen<TRow>(byte* row, float* destination, int count) where TRow : IFloatRow
    {
        if (typeof(TRow) == typeof(F16Row))
        {
            F16Row.Widen(row, destination, count);
            return;
        }
        for (int i = 0; i < count; i += 8)
            Avx.Store(destination + i, TRow.Load8(row, i));
    }

    /// <summary>8 weights in both 256-bit halves.</summary>
    /// <remarks>
    /// .NET 10.0.12's JIT encodes a constant offset folded into this instruction's address (the 64-bit-element
    /// <c>Avx512F.BroadcastVector256ToVector512</c>, <c>vbroadcasti64x4</c>/<c>vbroadcastf64x4</c>) at twice its size:
    /// <c>(long*)(x + 32)</c> reads x + 64. Callers here pass run-time offsets, which it does not fold, and the kernel
    /// tests compare every result with the scalar reference; a call with a constant offset must not be added.
    /// (<c>Avx512DQ</c>'s 32-bit-element form reads the right address.)
    /// </remarks>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<float> Broadcast8(float* weights) => Avx512F.BroadcastVector256ToVector512((double*)weights).AsSingle();

    /// <summary>
    /// Columns <paramref name="c0"/>..<paramref name="c1"/> of rows r..r+3 × 4 token pairs from
    /// <paramref name="token"/> on, continuing the 16 sums kept in <paramref name="acc"/>, which start from zero at
    /// column 0; at the last column the results are stored instead.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Tile4x4(float* w0, long rowFloats, float* x, long pairFloats, int c0, int c1, Vector512<float>* acc,
        MatMulTask* task, int r, int token, float* pending)
    {
        float* w1 = w0 + rowFloats, w2 = w1 + rowFloats, w3 = w2 + rowFloats;
        float* x1 = x + pairFloats, x2 = x1 + pairFloats, x3 = x2 + pairFloats;
        Vector512<float> a00 = default, a01 = default, a02 = default, a03 = default;
        Vector512<float> a10 = default, a11 = default, a12 = default, a13 = default;
        Vector512<float> a20 = default, a21 = default, a22 = default, a23 = default;
        Vector512<float> a30 = default, a31 = default, a32 = default, a33 = default;
        if (c0 > 0)
        {
            a00 = acc[0]; a01 = acc[1]; a02 = acc[2]; a03 = acc[3];
            a10 = acc[4]; a11 = acc[5]; a12 = acc[6]; a13 = acc[7];
            a20 = acc[8]; a21 = acc[9]; a22 = acc[10]; a23 = acc[11];
            a30 = acc[12]; a31 = acc[13]; a32 = acc[14]; a33 = acc[15];
        }
        for (int c = c0; c < c1; c += 8)
        {
            var v0 = Avx512F.LoadVector512(x + 2 * c);
            var v1 = Avx512F.LoadVector512(x1 + 2 * c);
            var v2 = Avx512F.LoadVector512(x2 + 2 * c);
            var v3 = Avx512F.LoadVector512(x3 + 2 * c);
            var w = Broadcast8(w0 + c);
            a00 = Avx512F.FusedMultiplyAdd(w, v0, a00);
            a01 = Avx512F.FusedMultiplyAdd(w, v1, a01);
            a02 = Avx512F.FusedMultiplyAdd(w, v2, a02);
            a03 = Avx512F.FusedMultiplyAdd(w, v3, a03);
            w = Broadcast8(w1 + c);
            a10 = Avx512F.FusedMultiplyAdd(w, v0, a10);
            a11 = Avx512F.FusedMultiplyAdd(w, v1, a11);
            a12 = Avx512F.FusedMultiplyAdd(w, v2, a12);
            a13 = Avx512F.FusedMultiplyAdd(w, v3, a13);
            w = Broadcast8(w2 + c);
            a20 = Avx512F.FusedMultiplyAdd(w, v0, a20);
            a21 = Avx512F.FusedMultiplyAdd(w, v1, a21);
            a22 = Avx512F.FusedMultiplyAdd(w, v2, a22);
            a23 = Avx512F.FusedMultiplyAdd(w, v3, a23);
            w = Broadcast8(w3 + c);
            a30 = Avx512F.FusedMultiplyAdd(w, v0, a30);
            a31 = Avx512F.FusedMultiplyAdd(w, v1, a31);
            a32 = Avx512F.FusedMultiplyAdd(w, v2, a32);
            a33 = Avx512F.FusedMultiplyAdd(w, v3, a33);
        }
        if (c1 == task->W.Cols)
        {
            if (pending == null)
            {
                StoreRows4(a00, a10, a20, a30, task, r, token, null);
                StoreRows4(a01, a11, a21, a31, task, r, token + 2, null);
                StoreRows4(a02, a12, a22, a32, task, r, token + 4, null);
                StoreRows4(a03, a13, a23, a33, task, r, token + 6, null);
                return;
            }
            StoreRows4(a00, a10, a20, a30, task, r, token, pending);
            StoreRows4(a01, a11, a21, a31, task, r, token + 2, pending + 8);
            StoreRows4(a02, a12, a22, a32, task, r, token + 4, pending + 16);
            StoreRows4(a03, a13, a23, a33, task, r, token + 6, pending + 24);
            ApplyEpilogue(task, pending, r, token, TilePairs);
            return;
        }
        acc[0] = a00; acc[1] = a01; acc[2] = a02; acc[3] = a03;
        acc[4] = a10; acc[5] = a11; acc[6] = a12; acc[7] = a13;
        acc[8] = a20; acc[9] = a21; acc[10] = a22; acc[11] = a23;
        acc[12] = a30; acc[13] = a31; acc[14] = a32; acc[15] = a33;
    }

    /// <summary>4 rows × one token pair over all columns: the tail of token pairs.</summary>
    private static void Tile4x1(float* w0, long rowFloats, float* x, int cols, MatMulTask* task, int r, int token, float* pending)
    {
        float* w1 = w0 + rowFloats, w2 = w1 + rowFloats, w3 = w2 + rowFloats;
        Vector512<float> a0 = default, a1 = default, a2 = default, a3 = default;
        for (int c = 0; c < cols; c += 8)
        {
            var v = Avx512F.LoadVector512(x + 2 * c);
            a0 = Avx512F.FusedMultiplyAdd(Broadcast8(w0 + c), v, a0);
            a1 = Avx512F.FusedMultiplyAdd(Broadcast8(w1 + c), v, a1);
            a2 = Avx512F.FusedMultiplyAdd(Broadcast8(w2 + c), v, a2);
            a3 = Avx512F.FusedMultiplyAdd(Broadcast8(w3 + c), v, a3);
        }
        StoreRows4(a0, a1, a2, a3, task, r, token, pending);
        if (pending != null) ApplyEpilogue(task, pending, r, token, 1);
    }

    /// <summary>One row × one token pair over all columns: the tail of rows.</summary>
    private static void Tile1x1(float* w, float* x, int cols, MatMulTask* task, int r, int token)
    {
        Vector512<float> a = default;
        for (int c = 0; c < cols; c += 8)
            a = Avx512F.FusedMultiplyAdd(Broadcast8(w + c), Avx512F.LoadVector512(x + 2 * c), a);
        int rows = task->W.Rows;
        float* y = task->Y + (long)token * rows + r;
        *y = task->Epilogue.Apply(Vector256.Sum(a.GetLower()), *y, r);
        if (token + 1 < task->Tokens)
            y[rows] = task->Epilogue.Apply(Vector256.Sum(a.GetUpper()), y[rows], r);
    }

    /// <summary>
    /// Stores four rows' accumulators for one token pair: rows r..r+3 of both tokens, each half summed in
    /// <see cref="Vector256.Sum{T}(Vector256{T})"/>'s order, ((a0+a1)+(a2+a3)) + ((a4+a5)+(a6+a7)), but for all
    /// eight sums at once: pairs, then quads, by shuffling the four accumulators together, then the two quads of each
    /// token. Each sum is the same additions of the same values, so the results are Sum's bit for bit. With an
    /// epilogue, both tokens' four results go to <paramref name="pending"/> for <see cref="ApplyEpilogue"/>.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void StoreRows4(Vector512<float> a, Vector512<float> b, Vector512<float> c, Vector512<float> d, MatMulTask* task, int r, int token,
        float* pending)
    {
        // Per 128-bit lane: [a0+a1, a2+a3, b0+b1, b2+b3] and the same for c and d.
        var ab = Avx512F.Shuffle(a, b, 0x88) + Avx512F.Shuffle(a, b, 0xDD);
        var cd = Avx512F.Shuffle(c, d, 0x88) + Avx512F.Shuffle(c, d, 0xDD);
        // Per 128-bit lane: [a0123, b0123, c0123, d0123].
        var quads = Avx512F.Shuffle(ab, cd, 0x88) + Avx512F.Shuffle(ab, cd, 0xDD);
        // Lane 0 + lane 1 is the first token's four sums, lane 2 + lane 3 the second's.
        var sums = quads + Avx512F.Shuffle4x128(quads, quads, 0xB1);
        // Lanes 0..3: the first token's rows r..r+3; lanes 4..7: the second token's.
        var both = Vector256.Create(sums.GetLower().GetLower(), Avx512F.ExtractVector128(sums, 2));
        if (pending != null)
        {
            Avx.Store(pending, both);
            return;
        }
        int rows = task->W.Rows;
        float* y = task->Y + (long)token * rows + r;
        Sse.Store(y, both.GetLower());
        if (token + 1 < task->Tokens) Sse.Store(y + rows, both.GetUpper());
    }

    /// <summary>
    /// The epilogue of rows r..r+3 for <paramref name="pairs"/> token pairs from <paramref name="token"/> on, whose
    /// sums <see cref="StoreRows4"/> left in <paramref name="pending"/>. Out of line, so the tiles' loops keep their
    /// accumulators in registers: inlined, the GELU's calls made the compiler spill them, and a product with a bias
    /// ran at two thirds of the speed of one without.
    /// </summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void ApplyEpilogue(MatMulTask* task, float* pending, int r, int token, int pairs)
    {
        int rows = task->W.Rows, tokens = task->Tokens;
        var epilogue = task->Epilogue;
        for (int q = 0; q < pairs; q++, token += 2)
        {
            float* y = task->Y + (long)token * rows + r;
            bool second = token + 1 < tokens;
            var previous = Vector256.Create(Sse.LoadVector128(y), second ? Sse.LoadVector128(y + rows) : Vector128<float>.Zero);
            var result = epilogue.Apply(Avx.LoadVector256(pending + 8 * q), previous, r);
            Sse.Store(y, result.GetLower());
            if (second) Sse.Store(y + rows, result.GetUpper());
        }
    }
}
