using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using Velo.Tensors;

namespace Velo.Kernels;

/// <summary>
/// One super-block of 16 Q6_K rows unpacked for <see cref="Q6_KRowGroupKernels"/>, in quads of 4 rows, each
/// 128-bit quarter of a 512-bit register one row's. Sub-blocks 2p and 2p + 1 go together: int32 lane e of a quarter, for half h, holds two quants of each, so that one <c>madd</c>
/// weights both sub-blocks by their own scales. Register A takes columns 4j and 4j + 1 of both (j = 4h + e, columns
/// counted within the sub-block), register B columns 4j + 2 and 4j + 3; their <c>maddubs</c> products added as int16
/// are each sub-block's exact sum of lane j's four products (at most 4·63·128 in magnitude, within int16).
/// </summary>
internal unsafe struct Q6_KRowGroupSuperBlock
{
    /// <summary>Rows per group.</summary>
    public const int Rows = 16;

    /// <summary>
    /// For sub-block pair p, half h, register A or B (ab = 0, 1) and quad, at 64·(16p + 8h + 4ab + quad): row
    /// 4·quad + qr's 16 quants at 16·qr, lane e's as (low 4j + 2ab, 4j + 2ab + 1, high 4j + 2ab, 4j + 2ab + 1).
    /// </summary>
    public fixed byte Quants[4 * 2 * 2 * 4 * 64];

    /// <summary>
    /// For sub-block pair p, half h and quad, at 32·(8p + 4h + quad): row 4·quad + qr's scales of sub-blocks 2p and
    /// 2p + 1 for columns 16h to 16h + 15 (Q6_K's groups of 16), alternating, in int16 lanes 8·qr to 8·qr + 7.
    /// </summary>
    public fixed short Scales[4 * 2 * 4 * 32];

    /// <summary>
    /// For half h and quad, at 32·(4h + quad), int32 lane 4·qr + e of row 4·quad + qr, j = 4h + e: 32·scale of groups
    /// 2j and 2j + 1 as an int16 pair (the −32 offset).
    /// </summary>
    public fixed short Mins[2 * 4 * 32];

    /// <summary>For each quad, at 16·quad: row 4·quad + qr's d in lanes 4·qr to 4·qr + 3.</summary>
    public fixed float D[4 * 16];
}

/// <summary>
/// AVX-512 (BW) prefill for Q6_K in groups of 16 rows. Each work item's rows (16 at most in prefill) are unpacked
/// once, super-block by super-block, into <see cref="Q6_KRowGroupSuperBlock"/>s, and multiplied in tiles of 16 rows ×
/// 4 tokens against activations whose quants <see cref="PairChunks"/> put in the same order. Per 128 products
/// (a row's lane of two sub-blocks, 16 rows) this takes two <c>maddubs</c>, an int16 add and one <c>madd</c>,
/// where <see cref="KQuantWideKernels"/> takes two of each; each 128-bit broadcast of activations serves four
/// registers of four rows, and per super-block and token d·dx is one multiply per four rows and the offset one madd
/// subtracted before the conversion, as the 256-bit kernels do. (Q4_K has kernels of its own,
/// <see cref="Q4_KRowGroupKernels"/>, since its exact totals free the order of its sums.)
/// <para>
/// Bit for bit what <see cref="KQuantKernels.Rows{TBlock, TDot}"/> computes: a row's 8 accumulators (lanes j of the
/// 256-bit kernels) get the same exact int32 sums per super-block and the same float operations in the same order,
/// and their final sum is <see cref="Vector256.Sum{T}(Vector256{T})"/>'s order, ((a0 + a1) + (a2 + a3)) +
/// ((a4 + a5) + (a6 + a7)). <see cref="Reference"/> is the same arithmetic in plain scalar code.
/// </para>
/// </summary>
internal static unsafe class Q6_KRowGroupKernels
{
    private const int TokenTile = 4;

    /// <summary>Writes Q6_K super-block <paramref name="block"/> as row 4·<paramref name="quad"/> + <paramref name="qr"/> of <paramref name="u"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void UnpackRow(byte* block, Q6_KRowGroupSuperBlock* u, int quad, int qr)
    {
        // Q6_K's own unpacking gives the quants 0..63 in element order and 32·scale per group of 16.
        UnpackedSuperBlock plain;
        Q6_KBlock.Unpack(block, &plain);
        Vector128.Store(Vector128.Create(plain.D), u->D + 16 * quad + 4 * qr);
        sbyte* scales = (sbyte*)(block + 192);
        for (int h = 0; h < 2; h++)
            Vector128.Store(Vector128.Load(plain.Mins + 8 * h), u->Mins + 32 * (4 * h + quad) + 8 * qr);
        for (int pair = 0; pair < 4; pair++)
            for (int h = 0; h < 2; h++)
            {
                uint scalePair = (ushort)(short)scales[4 * pair + h] + ((uint)(ushort)(short)scales[4 * pair + 2 + h] << 16);
                Vector128.Store(Vector128.Create(scalePair), (uint*)(u->Scales + 32 * (8 * pair + 4 * h + quad) + 8 * qr));
                StorePair(Vector128.Load(plain.Quants + 64 * pair + 16 * h), Vector128.Load(plain.Quants + 64 * pair + 32 + 16 * h), u, pair, h, quad, qr);
            }
    }

    /// <summary>Whether this machine runs these kernels.</summary>
    public static bool IsSupported => Avx512BW.IsSupported;

    /// <summary>Whether <see cref="Rows{TDot}"/> takes <paramref name="tokens"/> tokens itself (fewer go to the other kernels).</summary>
    public static bool Handles(int tokens) => KQuantKernels.UnpacksFor<Q6_KBlock>(tokens);

    /// <summary>Bytes of <see cref="MatMulTask.RowScratch"/> per thread: one group's unpacked row.</summary>
    public static long ScratchBytes(int cols) => (long)(cols / 256) * sizeof(Q6_KRowGroupSuperBlock);

    /// <summary>
    /// Reorders one token's 256-block quants (<paramref name="cols"/> of them) for the kernels: each 64 (sub-blocks
    /// 2p and 2p + 1) become, per half h, register A's 16 then register B's 16 (<see cref="Q6_KRowGroupSuperBlock.Quants"/>),
    /// 16-bit pairs taken alternately from the two sub-blocks. Output word 16h + 8ab + 2e + s is input word
    /// 16s + 8h + 2e + ab.
    /// </summary>
    public static void PairChunks(sbyte* quants, int cols)
    {
        var order = Vector512.Create(
            (ushort)0, 16, 2, 18, 4, 20, 6, 22, 1, 17, 3, 19, 5, 21, 7, 23,
            8, 24, 10, 26, 12, 28, 14, 30, 9, 25, 11, 27, 13, 29, 15, 31);
        KQuantKernels.PermuteWords(quants, cols, order);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Rows<TDot>(MatMulTask* task, int rowStart, int rowEnd, int threadIndex) where TDot : IIntegerDot
    {
        int tokens = task->Tokens;
        if (!Handles(tokens))
        {
            KQuantWideKernels.Rows<Q6_KBlock, TDot>(task, rowStart, rowEnd, threadIndex);
            return;
        }
        int cols = task->W.Cols, blocks = cols / 256;
        var unpacked = (Q6_KRowGroupSuperBlock*)(task->RowScratch + threadIndex * task->RowScratchBytes);
        var accumulators = stackalloc Vector512<float>[8 * TokenTile];
        for (int group = rowStart; group < rowEnd; group += Q6_KRowGroupSuperBlock.Rows)
        {
            int groupRows = Math.Min(Q6_KRowGroupSuperBlock.Rows, rowEnd - group);
            for (int k = 0; k < blocks; k++)
                Unpack(task->W, group, groupRows, k, unpacked + k);
            // A last tile of fewer tokens repeats its last token, which stores the same values again.
            for (int t = 0; t < tokens; t += TokenTile)
                Tile(task, unpacked, group, groupRows, t, accumulators);
        }
    }

    /// <summary>Super-block <paramref name="k"/> of rows <paramref name="first"/> onwards (the last repeated to fill 16).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Unpack(in WeightMatrix w, int first, int count, int k, Q6_KRowGroupSuperBlock* u)
    {
        for (int r = 0; r < Q6_KRowGroupSuperBlock.Rows; r++)
            UnpackRow(w.Row(first + Math.Min(r, count - 1)) + (long)k * Q6_KBlock.BlockBytes, u, r / 4, r % 4);
    }

    /// <summary>
    /// Row 4·quad + qr's quants of sub-blocks 2p (<paramref name="low"/>) and 2p + 1 (<paramref name="high"/>), columns
    /// 16h onwards, as registers A and B (<see cref="Q6_KRowGroupSuperBlock.Quants"/>): lane e of A takes words 2e, of B
    /// words 2e + 1, of both.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void StorePair(Vector128<byte> low, Vector128<byte> high, Q6_KRowGroupSuperBlock* u, int pair, int h, int quad, int qr)
    {
        var first4 = Sse2.UnpackLow(low.AsUInt16(), high.AsUInt16()).AsSingle();
        var last4 = Sse2.UnpackHigh(low.AsUInt16(), high.AsUInt16()).AsSingle();
        byte* at = u->Quants + 64 * (16 * pair + 8 * h + quad) + 16 * qr;
        Vector128.Store(Sse.Shuffle(first4, last4, 0b10_00_10_00).AsByte(), at);
        Vector128.Store(Sse.Shuffle(first4, last4, 0b11_01_11_01).AsByte(), at + 4 * 64);
    }

    /// <summary>
    /// One group's rows against tokens <paramref name="firstToken"/> to +3 (the last token repeated past the end),
    /// all super-blocks, results to <c>Y[token · Rows + row]</c>. <paramref name="acc"/>[4·(4h + quad) + i] is
    /// token i's float accumulator of half h of quad's lanes.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Tile(MatMulTask* task, Q6_KRowGroupSuperBlock* unpacked, int group, int groupRows, int firstToken, Vector512<float>* acc)
    {
        int cols = task->W.Cols, rows = task->W.Rows, tokens = task->Tokens, blocks = cols / 256;
        ActivationQuantizer.Layout256(task->Activations, cols, tokens, out sbyte* quants, out float* scales, out short* groupSums);
        int* tokenOf = stackalloc int[TokenTile];
        for (int i = 0; i < TokenTile; i++) tokenOf[i] = Math.Min(firstToken + i, tokens - 1);
        sbyte* x0 = quants + (long)tokenOf[0] * cols, x1 = quants + (long)tokenOf[1] * cols;
        sbyte* x2 = quants + (long)tokenOf[2] * cols, x3 = quants + (long)tokenOf[3] * cols;
        // Per token i and quad: d·dx at [4i + quad].
        var dScale = stackalloc Vector512<float>[4 * TokenTile];
        for (int i = 0; i < 8 * TokenTile; i++) acc[i] = default;
        // The tile's output lines, fetched now so that its stores at the end hit the cache: a store that misses holds
        // back the accumulators' stores behind it, which in rows of many tokens cost about a tenth of the time.
        for (int i = 0; i < TokenTile; i++) Sse.Prefetch0(task->Y + (long)tokenOf[i] * rows + group);

        for (int k = 0; k < blocks; k++)
        {
            Q6_KRowGroupSuperBlock* u = unpacked + k;
            for (int i = 0; i < TokenTile; i++)
            {
                var xd = Vector512.Create(scales[(long)tokenOf[i] * blocks + k]);
                for (int quad = 0; quad < 4; quad++)
                    dScale[4 * i + quad] = Vector512.Load(u->D + 16 * quad) * xd;
            }
            for (int h = 0; h < 2; h++)
            {
                Vector512<int> s00 = default, s01 = default, s02 = default, s03 = default;
                Vector512<int> s10 = default, s11 = default, s12 = default, s13 = default;
                Vector512<int> s20 = default, s21 = default, s22 = default, s23 = default;
                Vector512<int> s30 = default, s31 = default, s32 = default, s33 = default;
                for (int pair = 0; pair < 4; pair++)
                {
                    int at = 256 * k + 64 * pair + 32 * h;
                    var a0 = Broadcast(x0 + at);
                    var a1 = Broadcast(x1 + at);
                    var a2 = Broadcast(x2 + at);
                    var a3 = Broadcast(x3 + at);
                    var b0 = Broadcast(x0 + at + 16);
                    var b1 = Broadcast(x1 + at + 16);
                    var b2 = Broadcast(x2 + at + 16);
                    var b3 = Broadcast(x3 + at + 16);
                    byte* q = u->Quants + 64 * (16 * pair + 8 * h);
                    short* sc = u->Scales + 32 * (8 * pair + 4 * h);
                    var qa = Vector512.Load(q);
                    var qb = Vector512.Load(q + 256);
                    var w = Vector512.Load(sc);
                    s00 += PairDot(qa, a0, qb, b0, w); s01 += PairDot(qa, a1, qb, b1, w); s02 += PairDot(qa, a2, qb, b2, w); s03 += PairDot(qa, a3, qb, b3, w);
                    qa = Vector512.Load(q + 64);
                    qb = Vector512.Load(q + 320);
                    w = Vector512.Load(sc + 32);
                    s10 += PairDot(qa, a0, qb, b0, w); s11 += PairDot(qa, a1, qb, b1, w); s12 += PairDot(qa, a2, qb, b2, w); s13 += PairDot(qa, a3, qb, b3, w);
                    qa = Vector512.Load(q + 128);
                    qb = Vector512.Load(q + 384);
                    w = Vector512.Load(sc + 64);
                    s20 += PairDot(qa, a0, qb, b0, w); s21 += PairDot(qa, a1, qb, b1, w); s22 += PairDot(qa, a2, qb, b2, w); s23 += PairDot(qa, a3, qb, b3, w);
                    qa = Vector512.Load(q + 192);
                    qb = Vector512.Load(q + 448);
                    w = Vector512.Load(sc + 96);
                    s30 += PairDot(qa, a0, qb, b0, w); s31 += PairDot(qa, a1, qb, b1, w); s32 += PairDot(qa, a2, qb, b2, w); s33 += PairDot(qa, a3, qb, b3, w);
                }
                Vector512<float>* a = acc + 16 * h;
                // Lane j's offset term, 32·(scale·Σx) of groups 2j and 2j + 1, in one madd against the group sums.
                short* gs = groupSums + 16 * k + 8 * h;
                long stride = cols / 16;
                var g0 = Avx512F.BroadcastVector128ToVector512((int*)(gs + tokenOf[0] * stride)).AsInt16();
                var g1 = Avx512F.BroadcastVector128ToVector512((int*)(gs + tokenOf[1] * stride)).AsInt16();
                var g2 = Avx512F.BroadcastVector128ToVector512((int*)(gs + tokenOf[2] * stride)).AsInt16();
                var g3 = Avx512F.BroadcastVector128ToVector512((int*)(gs + tokenOf[3] * stride)).AsInt16();
                short* offsets = u->Mins + 32 * (4 * h);
                AddOffsetSuperBlock(a, offsets, g0, g1, g2, g3, dScale, 0, s00, s01, s02, s03);
                AddOffsetSuperBlock(a, offsets + 32, g0, g1, g2, g3, dScale, 1, s10, s11, s12, s13);
                AddOffsetSuperBlock(a, offsets + 64, g0, g1, g2, g3, dScale, 2, s20, s21, s22, s23);
                AddOffsetSuperBlock(a, offsets + 96, g0, g1, g2, g3, dScale, 3, s30, s31, s32, s33);
            }
        }

        // Lanes 0, 4, 8 and 12 of the four quads' sums, in row order.
        var firstOfFour = Vector512.Create(0, 4, 8, 12, 16, 20, 24, 28, 0, 4, 8, 12, 16, 20, 24, 28);
        for (int i = 0; i < TokenTile; i++)
        {
            // Vector256.Sum's order: each half's four lanes pairwise, then the halves.
            var quad0 = SumOfFour(acc[i]) + SumOfFour(acc[16 + i]);
            var quad1 = SumOfFour(acc[4 + i]) + SumOfFour(acc[20 + i]);
            var quad2 = SumOfFour(acc[8 + i]) + SumOfFour(acc[24 + i]);
            var quad3 = SumOfFour(acc[12 + i]) + SumOfFour(acc[28 + i]);
            var rows01 = Avx512F.PermuteVar16x32x2(quad0, firstOfFour, quad1);
            var rows23 = Avx512F.PermuteVar16x32x2(quad2, firstOfFour, quad3);
            var sums = Avx512F.Shuffle4x128(rows01, rows23, 0b01_00_01_00);
            float* y = task->Y + (long)tokenOf[i] * rows + group;
            if (groupRows == Q6_KRowGroupSuperBlock.Rows)
                Vector512.Store(sums, y);
            else
                for (int r = 0; r < groupRows; r++) y[r] = sums.GetElement(r);
        }
    }

    /// <summary>
    /// Per int32 lane, one row's lane of two sub-blocks: each sub-block's four products summed exactly in int16
    /// (A's two and B's two), then both weighted by their scales in one <c>madd</c>.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<int> PairDot(Vector512<byte> qa, Vector512<sbyte> xa, Vector512<byte> qb, Vector512<sbyte> xb, Vector512<short> scales) =>
        Avx512BW.MultiplyAddAdjacent(Avx512BW.MultiplyAddAdjacent(qa, xa) + Avx512BW.MultiplyAddAdjacent(qb, xb), scales);

    /// <summary>Lane 4m of the result: (v[4m] + v[4m+1]) + (v[4m+2] + v[4m+3]).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<float> SumOfFour(Vector512<float> v)
    {
        var pairs = v + Avx512F.Permute4x32(v, 0b10_11_00_01);
        return pairs + Avx512F.Permute4x32(pairs, 0b01_00_11_10);
    }

    /// <summary>16 activation quants in all four 128-bit quarters.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<sbyte> Broadcast(sbyte* x) => Avx512F.BroadcastVector128ToVector512((int*)x).AsSByte();

    /// <summary>Q6_K's <c>AddSuperBlock</c> (mins scaled by d): the offset term subtracted as an integer, then one conversion and FMA.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void AddOffsetSuperBlock(Vector512<float>* a, short* offsets, Vector512<short> g0, Vector512<short> g1, Vector512<short> g2, Vector512<short> g3,
        Vector512<float>* dScale, int quad, Vector512<int> sum0, Vector512<int> sum1, Vector512<int> sum2, Vector512<int> sum3)
    {
        var m = Vector512.Load(offsets);
        Vector512<float>* at = a + 4 * quad;
        at[0] = Avx512F.FusedMultiplyAdd(Avx512F.ConvertToVector512Single(sum0 - Avx512BW.MultiplyAddAdjacent(m, g0)), dScale[quad], at[0]);
        at[1] = Avx512F.FusedMultiplyAdd(Avx512F.ConvertToVector512Single(sum1 - Avx512BW.MultiplyAddAdjacent(m, g1)), dScale[4 + quad], at[1]);
        at[2] = Avx512F.FusedMultiplyAdd(Avx512F.ConvertToVector512Single(sum2 - Avx512BW.MultiplyAddAdjacent(m, g2)), dScale[8 + quad], at[2]);
        at[3] = Avx512F.FusedMultiplyAdd(Avx512F.ConvertToVector512Single(sum3 - Avx512BW.MultiplyAddAdjacent(m, g3)), dScale[12 + quad], at[3]);
    }

    /// <summary>
    /// The definition of the K-quant row-group kernels' products in plain scalar code (Q4_K's exact totals in
    /// <see cref="Q4_KRowGroupKernels.Reference"/>, Q6_K in <see cref="Q6_KReference"/>), against activations
    /// quantized to 256-blocks.
    /// </summary>
    internal static void Reference(in WeightMatrix w, sbyte* quants, float* scales, short* groupSums, int tokens, float* y)
    {
        if (w.Type == GgmlType.Q4_K)
        {
            Q4_KRowGroupKernels.Reference(w, quants, scales, groupSums, tokens, y);
            return;
        }
        Q6_KReference(w, quants, scales, groupSums, tokens, y);
    }

    /// <summary>
    /// Q6_K in plain scalar code: lane j's exact integer sum of scale·q·x over its columns, less 32·scale·Σx of groups
    /// 2j and 2j + 1 (the −32 offset), converted once and added by one FMA.
    /// </summary>
    private static void Q6_KReference(in WeightMatrix w, sbyte* quants, float* scales, short* groupSums, int tokens, float* y)
    {
        int cols = w.Cols, blocks = cols / 256;
        Span<float> acc = stackalloc float[8];
        Span<int> sums = stackalloc int[8];
        for (int t = 0; t < tokens; t++)
            for (int r = 0; r < w.Rows; r++)
            {
                acc.Clear();
                for (int k = 0; k < blocks; k++)
                {
                    byte* block = w.Row(r) + (long)k * Q6_KBlock.BlockBytes;
                    sbyte* x = quants + (long)t * cols + 256 * k;
                    short* gs = groupSums + (long)t * (cols / 16) + 16 * k;
                    float d = (float)BitConverter.UInt16BitsToHalf(*(ushort*)(block + 208));
                    sbyte* groupScales = (sbyte*)(block + 192);
                    sums.Clear();
                    for (int n = 0; n < 256; n++)
                    {
                        sums[n % 32 / 4] += groupScales[n / 16] * ((BlockQ6_K*)block)->Quant(n) * x[n];
                    }
                    for (int j = 0; j < 8; j++)
                    {
                        int offset = 32 * (groupScales[2 * j] * gs[2 * j] + groupScales[2 * j + 1] * gs[2 * j + 1]);
                        acc[j] = MathF.FusedMultiplyAdd(sums[j] - offset, d * scales[(long)t * blocks + k], acc[j]);
                    }
                }
                y[(long)t * w.Rows + r] = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
            }
    }
}
