using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Velo.Kernels;

/// <summary>
/// One super-block of two rows unpacked side by side for <see cref="KQuantWideKernels"/>: each field holds row
/// a's part of an <see cref="UnpackedSuperBlock"/> in its low 256 bits and row b's in its high 256 bits, so one
/// 512-bit load carries a chunk of both rows and one broadcast activation chunk serves both.
/// </summary>
internal unsafe struct UnpackedSuperBlockPair
{
    /// <summary>Chunk c of 32 quants: row a's at 64c, row b's at 64c + 32.</summary>
    public fixed byte Quants[8 * 64];

    /// <summary>Chunk c's 16 int16 scales: row a's at 32c, row b's at 32c + 16.</summary>
    public fixed short ChunkScales[8 * 32];

    public fixed short Mins[2 * 16];

    /// <summary>Row a's D in lanes 0-7, row b's in lanes 8-15 (likewise <see cref="DMin"/>).</summary>
    public fixed float D[16];

    public fixed float DMin[16];

    /// <summary>Writes super-block <paramref name="a"/> into the low halves and <paramref name="b"/> into the high ones.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Set(UnpackedSuperBlock* a, UnpackedSuperBlock* b)
    {
        fixed (byte* q = Quants)
        fixed (short* s = ChunkScales)
        {
            for (int c = 0; c < 8; c++)
            {
                Vector256.Store(Vector256.Load(a->Quants + 32 * c), q + 64 * c);
                Vector256.Store(Vector256.Load(b->Quants + 32 * c), q + 64 * c + 32);
                Vector256.Store(Vector256.Load(a->ChunkScales + 16 * c), s + 32 * c);
                Vector256.Store(Vector256.Load(b->ChunkScales + 16 * c), s + 32 * c + 16);
            }
        }
        fixed (short* m = Mins)
        {
            Vector256.Store(Vector256.Load(a->Mins), m);
            Vector256.Store(Vector256.Load(b->Mins), m + 16);
        }
        fixed (float* d = D) Vector512.Store(Vector512.Create(Vector256.Create(a->D), Vector256.Create(b->D)), d);
        fixed (float* d = DMin) Vector512.Store(Vector512.Create(Vector256.Create(a->DMin), Vector256.Create(b->DMin)), d);
    }
}

/// <summary>
/// AVX-512 (BW) prefill for the K-quants: a row chunk is unpacked once, two rows per 512-bit register, and
/// multiplied in tiles of 4 rows × 4 tokens, so each load of unpacked weights serves four tokens and each
/// broadcast activation chunk four rows. .NET 10 exposes no 512-bit VNNI, so the products are <c>maddubs</c> and
/// <c>madd</c>: per 64 weight bytes and token two multiplies where the 256-bit VNNI kernels take four.
/// <para>
/// Bit for bit what <see cref="KQuantKernels.Rows{TBlock, TDot}"/> computes: each 256-bit half sums the same exact
/// int32 lanes per super-block (a lane is 4 products weighted by their group's scale; the sums are exact, so
/// their order is free) and then runs the same float operations in the same order, lane for lane, as
/// <c>KQuantKernels.AddSuperBlock</c> and <see cref="Vector256.Sum{T}(Vector256{T})"/>, or for a type that sums exact
/// totals (<see cref="IKBlock.SumsExactTotals"/>) <see cref="KQuantKernels.AddExactTotals"/> on each half.
/// </para>
/// </summary>
internal static unsafe class KQuantWideKernels
{
    /// <summary>Whether this machine runs these kernels.</summary>
    public static bool IsSupported => Avx512BW.IsSupported;

    /// <summary>Bytes of <see cref="MatMulTask.RowScratch"/> per thread for <paramref name="chunkRows"/> rows (an odd last row takes a whole pair).</summary>
    public static long ScratchBytes(int cols, int chunkRows) =>
        (long)(chunkRows + 1) / 2 * (cols / 256) * sizeof(UnpackedSuperBlockPair);

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Rows<TBlock, TDot>(MatMulTask* task, int rowStart, int rowEnd, int threadIndex)
        where TBlock : IKBlock where TDot : IIntegerDot
    {
        int tokens = task->Tokens;
        if (!KQuantKernels.UnpacksFor<TBlock>(tokens))
        {
            KQuantKernels.Rows<TBlock, TDot>(task, rowStart, rowEnd, threadIndex);
            return;
        }
        int cols = task->W.Cols, rows = task->W.Rows, blocks = cols / 256;
        ActivationQuantizer.Layout256(task->Activations, cols, tokens, out sbyte* quants, out float* scales, out short* groupSums);

        // Rows a and b of pair p are rowStart + 2p and the next, or the same row again when the chunk's count is odd.
        var pairs = (UnpackedSuperBlockPair*)(task->RowScratch + threadIndex * task->RowScratchBytes);
        int pairCount = (rowEnd - rowStart + 1) / 2;
        UnpackedSuperBlock a, b;
        for (int p = 0; p < pairCount; p++)
        {
            byte* rowA = task->W.Row(rowStart + 2 * p);
            byte* rowB = task->W.Row(Math.Min(rowStart + 2 * p + 1, rowEnd - 1));
            for (int k = 0; k < blocks; k++)
            {
                TBlock.Unpack(rowA + (long)k * TBlock.BlockBytes, &a);
                TBlock.Unpack(rowB + (long)k * TBlock.BlockBytes, &b);
                pairs[(long)p * blocks + k].Set(&a, &b);
            }
        }

        // Token tiles outside, column blocks, then pairs of pairs inside: a tile's activations for a block stay in
        // L1 while the unpacked chunk streams from L2. An odd pair count repeats the last pair, which stores the same
        // values twice. Between blocks each tile's sums wait in a small buffer, stored and reloaded exactly.
        int blockStep = pairCount <= 2 * MaxBlockedTiles ? BlockSuperBlocks(blocks) : blocks;
        var sums = stackalloc Vector512<float>[MaxBlockedTiles * 8];
        int tiled = 0;
        for (; tiled + 4 <= tokens; tiled += 4)
            for (int k0 = 0; k0 < blocks; k0 += blockStep)
            {
                int k1 = Math.Min(blocks, k0 + blockStep);
                for (int p = 0; p < pairCount; p += 2)
                {
                    int q = Math.Min(p + 1, pairCount - 1);
                    Tile<TBlock>(pairs + (long)p * blocks, pairs + (long)q * blocks, blocks, k0, k1, sums + 4 * p,
                        quants + (long)tiled * cols, cols, scales + (long)tiled * blocks, groupSums + (long)tiled * (cols / 16),
                        task->Y + (long)tiled * rows, rows, rowStart + 2 * p, Math.Min(rowStart + 2 * p + 1, rowEnd - 1),
                        rowStart + 2 * q, Math.Min(rowStart + 2 * q + 1, rowEnd - 1));
                }
            }
        KQuantKernels.TokensAlone<TBlock, TDot>(task, rowStart, rowEnd, tiled);
    }

    /// <summary>
    /// Most tiles of 4 rows whose sums wait between column blocks: chunks of more rows (decode-sized batches take
    /// up to 512) run whole rows, since their few token tiles reuse the activations little.
    /// </summary>
    private const int MaxBlockedTiles = 8;

    /// <summary>
    /// Super-blocks per column block for rows of <paramref name="blocks"/> super-blocks: rows of up to 2048 columns
    /// are not split (a 4-token tile's activation quants then take 8 KiB of L1); longer ones go in the fewest blocks
    /// of at most 8. Rows of 8192 (a 1B model's down projection) make 32 KiB of quants per tile, which the unpacked
    /// weights streaming past evict from L1: in blocks of 2048 columns a 2048×8192 product of 512 tokens took 4–10 %
    /// less time (Q4_K, Q6_K; paired runs, one thread, on a busy 2-core Zen 5).
    /// </summary>
    private static int BlockSuperBlocks(int blocks) => blocks <= 8 ? blocks : (blocks + (blocks + 7) / 8 - 1) / ((blocks + 7) / 8);

    /// <summary>
    /// Two unpacked row pairs against four tokens over super-blocks <paramref name="k0"/>..<paramref name="k1"/>,
    /// continuing the 8 sums kept in <paramref name="sums"/> unless <paramref name="k0"/> is 0; at the last
    /// super-block the row results go to <c>y[token * yStride + row]</c>, before it the sums back to <paramref name="sums"/>.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Tile<TBlock>(UnpackedSuperBlockPair* pair0, UnpackedSuperBlockPair* pair1, int blocks, int k0, int k1,
        Vector512<float>* sums, sbyte* xq, long cols, float* xd, short* groupSums, float* y, int yStride, int row0a, int row0b, int row1a, int row1b)
        where TBlock : IKBlock
    {
        long sumsStride = cols / 16;
        Vector512<float> acc00 = default, acc01 = default, acc02 = default, acc03 = default;
        Vector512<float> acc10 = default, acc11 = default, acc12 = default, acc13 = default;
        if (k0 > 0)
        {
            acc00 = sums[0]; acc01 = sums[1]; acc02 = sums[2]; acc03 = sums[3];
            acc10 = sums[4]; acc11 = sums[5]; acc12 = sums[6]; acc13 = sums[7];
        }
        for (int k = k0; k < k1; k++)
        {
            UnpackedSuperBlockPair* u0 = pair0 + k, u1 = pair1 + k;
            sbyte* x = xq + k * 256;
            Vector512<int> s00 = default, s01 = default, s02 = default, s03 = default;
            Vector512<int> s10 = default, s11 = default, s12 = default, s13 = default;
            for (int c = 0; c < 8; c++)
            {
                var q0 = Vector512.Load(u0->Quants + 64 * c);
                var q1 = Vector512.Load(u1->Quants + 64 * c);
                var w0 = Vector512.Load(u0->ChunkScales + 32 * c);
                var w1 = Vector512.Load(u1->ChunkScales + 32 * c);
                sbyte* xc = x + 32 * c;
                var x0 = Broadcast(xc);
                s00 += WeightedDot(q0, x0, w0);
                s10 += WeightedDot(q1, x0, w1);
                var x1 = Broadcast(xc + cols);
                s01 += WeightedDot(q0, x1, w0);
                s11 += WeightedDot(q1, x1, w1);
                var x2 = Broadcast(xc + 2 * cols);
                s02 += WeightedDot(q0, x2, w0);
                s12 += WeightedDot(q1, x2, w1);
                var x3 = Broadcast(xc + 3 * cols);
                s03 += WeightedDot(q0, x3, w0);
                s13 += WeightedDot(q1, x3, w1);
            }
            short* gs = groupSums + 16 * k;
            acc00 = AddSuperBlock<TBlock>(acc00, s00, u0, gs, xd[k]);
            acc10 = AddSuperBlock<TBlock>(acc10, s10, u1, gs, xd[k]);
            acc01 = AddSuperBlock<TBlock>(acc01, s01, u0, gs + sumsStride, xd[blocks + k]);
            acc11 = AddSuperBlock<TBlock>(acc11, s11, u1, gs + sumsStride, xd[blocks + k]);
            acc02 = AddSuperBlock<TBlock>(acc02, s02, u0, gs + 2 * sumsStride, xd[2 * blocks + k]);
            acc12 = AddSuperBlock<TBlock>(acc12, s12, u1, gs + 2 * sumsStride, xd[2 * blocks + k]);
            acc03 = AddSuperBlock<TBlock>(acc03, s03, u0, gs + 3 * sumsStride, xd[3 * blocks + k]);
            acc13 = AddSuperBlock<TBlock>(acc13, s13, u1, gs + 3 * sumsStride, xd[3 * blocks + k]);
        }
        if (k1 < blocks)
        {
            sums[0] = acc00; sums[1] = acc01; sums[2] = acc02; sums[3] = acc03;
            sums[4] = acc10; sums[5] = acc11; sums[6] = acc12; sums[7] = acc13;
            return;
        }
        Store<TBlock>(acc00, y, row0a, row0b);
        Store<TBlock>(acc10, y, row1a, row1b);
        Store<TBlock>(acc01, y + yStride, row0a, row0b);
        Store<TBlock>(acc11, y + yStride, row1a, row1b);
        Store<TBlock>(acc02, y + 2L * yStride, row0a, row0b);
        Store<TBlock>(acc12, y + 2L * yStride, row1a, row1b);
        Store<TBlock>(acc03, y + 3L * yStride, row0a, row0b);
        Store<TBlock>(acc13, y + 3L * yStride, row1a, row1b);
    }

    /// <summary>32 activation quants in both 256-bit halves.</summary>
    /// <remarks>
    /// .NET 10.0.12's JIT encodes a constant offset folded into this instruction's address (the 64-bit-element
    /// <c>Avx512F.BroadcastVector256ToVector512</c>, <c>vbroadcasti64x4</c>/<c>vbroadcastf64x4</c>) at twice its size:
    /// <c>(long*)(x + 32)</c> reads x + 64. Callers here pass run-time offsets, which it does not fold, and the kernel
    /// tests compare every result with the scalar reference; a call with a constant offset must not be added.
    /// (<c>Avx512DQ</c>'s 32-bit-element form reads the right address.)
    /// </remarks>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<sbyte> Broadcast(sbyte* x) => Avx512F.BroadcastVector256ToVector512((long*)x).AsSByte();

    /// <summary>Per int32 lane, 4 products weighted by their int16 lanes' scale: what <see cref="IIntegerDot.WeightedDotAdd"/> adds.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<int> WeightedDot(Vector512<byte> q, Vector512<sbyte> x, Vector512<short> scales) =>
        Avx512BW.MultiplyAddAdjacent(Avx512BW.MultiplyAddAdjacent(q, x), scales);

    /// <summary>Both rows' <c>KQuantKernels.AddSuperBlock</c> for one token, one per 256-bit half.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<float> AddSuperBlock<TBlock>(Vector512<float> acc, Vector512<int> scaledSum, UnpackedSuperBlockPair* u, short* groupSums, float xd)
        where TBlock : IKBlock
    {
        var minSum = Avx512BW.MultiplyAddAdjacent(Vector512.Load(u->Mins), Avx512F.BroadcastVector256ToVector512((long*)groupSums).AsInt16());
        var xdd = Vector512.Create(xd);
        var scale = Vector512.Load(u->D) * xdd;
        if (TBlock.MinsScaledByD)
            return Avx512F.FusedMultiplyAdd(Avx512F.ConvertToVector512Single(scaledSum - minSum), scale, acc);
        if (TBlock.SumsExactTotals)
        {
            var rowA = KQuantKernels.AddExactTotals(acc.GetLower(), scaledSum.GetLower(), minSum.GetLower(), scale.ToScalar(), u->DMin[0] * xd);
            var rowB = KQuantKernels.AddExactTotals(acc.GetUpper(), scaledSum.GetUpper(), minSum.GetUpper(), scale.GetElement(8), u->DMin[8] * xd);
            return Vector512.Create(rowA, rowB);
        }
        acc = Avx512F.FusedMultiplyAdd(Avx512F.ConvertToVector512Single(scaledSum), scale, acc);
        return Avx512F.FusedMultiplyAddNegated(Avx512F.ConvertToVector512Single(minSum), Vector512.Load(u->DMin) * xdd, acc);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Store<TBlock>(Vector512<float> acc, float* y, int rowA, int rowB) where TBlock : IKBlock
    {
        y[rowA] = KQuantKernels.Result<TBlock>(acc.GetLower());
        y[rowB] = KQuantKernels.Result<TBlock>(acc.GetUpper());
    }
}
