using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using Velo.Tensors;

namespace Velo.Kernels;

/// <summary>
/// One super-block of 16 Q4_K rows unpacked for <see cref="Q4_KRowGroupKernels"/>: two octets of 8 rows, each row
/// an 8-byte slot of a 512-bit register. A slot holds four quants of sub-block j = 2p and four of k = 2p + 1 as
/// (j, j, k, k, j, j, k, k), so that <c>maddubs</c>' four int16 lanes alternate between the two sub-blocks and
/// one <c>madd</c> against the row's (scale_j, scale_k) pairs weights both.
/// </summary>
internal unsafe struct Q4_KRowGroupSuperBlock
{
    /// <summary>Rows per group.</summary>
    public const int Rows = 16;

    /// <summary>
    /// For sub-block pair p, step s and octet o, at 64·(16p + 2s + o): row 8o + r's quants at 8r, elements 4s and
    /// 4s + 1 of sub-block 2p, the same of 2p + 1, then elements 4s + 2 and 4s + 3 of each: one 16-bit word of
    /// each sub-block in turn, the order <see cref="Q4_KRowGroupKernels.InterleavePairs"/> gives the activations.
    /// </summary>
    public fixed byte Quants[4 * 8 * 2 * 64];

    /// <summary>For pair p and octet o, at 32·(2p + o): row 8o + r's scales of sub-blocks 2p and 2p + 1 as int16 at 4r, twice.</summary>
    public fixed short Scales[4 * 2 * 32];

    /// <summary>
    /// For i = 0..3 and octet o, at 32·(2i + o): 128-bit lane L holds rows a = 8o + 2L and b = a + 1 as the int16
    /// (min_a(2i), min_a(2i + 1), min_b(2i), min_b(2i + 1)), twice: the layout of the kernel's row totals.
    /// </summary>
    public fixed short Mins[4 * 2 * 32];

    /// <summary>For octet o, at 16·o: lane L holds (d_a, d_b, d_a, d_b), rows a and b as in <see cref="Mins"/> (likewise <see cref="DMin"/>).</summary>
    public fixed float D[2 * 16];

    public fixed float DMin[2 * 16];
}

/// <summary>
/// AVX-512 (BW) prefill for Q4_K in groups of 16 rows, summing each row and token's super-block as the exact
/// totals of <see cref="IKBlock.SumsExactTotals"/>. A work item's rows are unpacked once, super-block by
/// super-block, into <see cref="Q4_KRowGroupSuperBlock"/>s and multiplied in tiles of 16 rows × 4 tokens. Since
/// the totals are exact, the products can be summed in any order: per pair of sub-blocks, eight <c>maddubs</c>
/// steps (each against one 8-byte activation broadcast) are summed in int16 — 16 products of at most 15·128 per
/// lane, 30720 in magnitude — before one <c>madd</c> with the scales: 9 multiplies per 512 products, where lanes
/// of fixed partial sums took 12. Per super-block each row's two int32 lanes are added (one <c>shufps</c> pair for
/// two tokens), T2 = Σ min·Σx takes four <c>madd</c> against the sub-block sums in the same layout, and the float
/// update is <see cref="KQuantKernels.AddExactTotals"/>' in 512-bit lanes. <see cref="Reference"/> is the definition
/// in plain scalar code.
/// </summary>
internal static unsafe class Q4_KRowGroupKernels
{
    private const int TokenTile = 4;

    /// <summary>Whether this machine runs these kernels.</summary>
    public static bool IsSupported => Avx512BW.IsSupported;

    /// <summary>Whether <see cref="Rows{TDot}"/> takes <paramref name="tokens"/> tokens itself (fewer go to <see cref="KQuantKernels"/>).</summary>
    public static bool Handles(int tokens) => KQuantKernels.UnpacksFor<Q4_KBlock>(tokens);

    /// <summary>Bytes of <see cref="MatMulTask.RowScratch"/> per thread: one group's unpacked rows.</summary>
    public static long ScratchBytes(int cols) => (long)(cols / 256) * sizeof(Q4_KRowGroupSuperBlock);

    /// <summary>
    /// Reorders one token's 256-block quants (<paramref name="cols"/> of them) for the kernel: each 64 (sub-blocks
    /// 2p and 2p + 1) become their 16-bit words taken alternately from the two, output word 2w + s being input word
    /// 16s + w: each 8 bytes are then one step's broadcast (<see cref="Q4_KRowGroupSuperBlock.Quants"/>).
    /// </summary>
    public static void InterleavePairs(sbyte* quants, int cols)
    {
        var order = Vector512.Create(
            (ushort)0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23,
            8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
        KQuantKernels.PermuteWords(quants, cols, order);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Rows<TDot>(MatMulTask* task, int rowStart, int rowEnd, int threadIndex) where TDot : IIntegerDot
    {
        int tokens = task->Tokens;
        if (!Handles(tokens))
        {
            KQuantKernels.Rows<Q4_KBlock, TDot>(task, rowStart, rowEnd, threadIndex);
            return;
        }
        int blocks = task->W.Cols / 256;
        var unpacked = (Q4_KRowGroupSuperBlock*)(task->RowScratch + threadIndex * task->RowScratchBytes);
        for (int group = rowStart; group < rowEnd; group += Q4_KRowGroupSuperBlock.Rows)
        {
            int groupRows = Math.Min(Q4_KRowGroupSuperBlock.Rows, rowEnd - group);
            for (int k = 0; k < blocks; k++)
                for (int r = 0; r < Q4_KRowGroupSuperBlock.Rows; r++)
                    UnpackRow(task->W.Row(group + Math.Min(r, groupRows - 1)) + (long)k * Q4_KBlock.BlockBytes, unpacked + k, r);
            // A last tile of fewer tokens repeats its last token, which stores the same values again.
            for (int t = 0; t < tokens; t += TokenTile)
                Tile(task, unpacked, group, groupRows, t);
        }
    }

    /// <summary>Writes one row's super-block as row <paramref name="row"/> of <paramref name="u"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void UnpackRow(byte* block, Q4_KRowGroupSuperBlock* u, int row)
    {
        int octet = row / 8, slot = row % 8, lane = slot / 2, side = slot % 2;
        var dAndMin = F16Row.PairToSingle(*(uint*)block);
        float* d = u->D + 16 * octet + 4 * lane + side;
        float* dMin = u->DMin + 16 * octet + 4 * lane + side;
        d[0] = d[2] = dAndMin.ToScalar();
        dMin[0] = dMin[2] = dAndMin.GetElement(1);
        var scalesAndMins = KQuantKernels.ScalesAndMins(block + 4).GetLower(); // 8 scales, then 8 mins
        var scalePairs = Sse2.UnpackLow(scalesAndMins, Vector128<byte>.Zero).AsUInt32(); // scale 2p | scale 2p+1 << 16
        var minPairs = Sse2.UnpackHigh(scalesAndMins, Vector128<byte>.Zero).AsUInt32();
        var nibbleMask = Vector128.Create((byte)0x0F);
        for (int p = 0; p < 4; p++)
        {
            uint scales = scalePairs.GetElement(p);
            *(ulong*)(u->Scales + 32 * (2 * p + octet) + 4 * slot) = scales | (ulong)scales << 32;
            uint mins = minPairs.GetElement(p);
            short* m = u->Mins + 32 * (2 * p + octet) + 8 * lane + 2 * side;
            *(uint*)m = mins;
            *(uint*)(m + 4) = mins;
            for (int h = 0; h < 2; h++)
            {
                // Low nibbles are sub-block 2p, high ones 2p + 1: their words interleaved are steps 4h to 4h + 3.
                var bits = Vector128.Load(block + 16 + 32 * p + 16 * h);
                var low = (bits & nibbleMask).AsUInt16();
                var high = (Sse2.ShiftRightLogical(bits.AsUInt16(), 4).AsByte() & nibbleMask).AsUInt16();
                var first = Sse2.UnpackLow(low, high).AsUInt64();
                var last = Sse2.UnpackHigh(low, high).AsUInt64();
                byte* at = u->Quants + 64 * (16 * p + 8 * h + octet) + 8 * slot;
                *(ulong*)at = first.ToScalar();
                *(ulong*)(at + 128) = first.GetElement(1);
                *(ulong*)(at + 256) = last.ToScalar();
                *(ulong*)(at + 384) = last.GetElement(1);
            }
        }
    }

    /// <summary>
    /// One group's rows against tokens <paramref name="firstToken"/> to +3 (the last token repeated past the end),
    /// all super-blocks, results to <c>Y[token · Rows + row]</c>.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Tile(MatMulTask* task, Q4_KRowGroupSuperBlock* unpacked, int group, int groupRows, int firstToken)
    {
        int cols = task->W.Cols, rows = task->W.Rows, tokens = task->Tokens, blocks = cols / 256;
        ActivationQuantizer.Layout256(task->Activations, cols, tokens, out sbyte* quants, out float* scales, out short* groupSums);
        int* tokenOf = stackalloc int[TokenTile];
        for (int i = 0; i < TokenTile; i++) tokenOf[i] = Math.Min(firstToken + i, tokens - 1);
        sbyte* x0 = quants + (long)tokenOf[0] * cols, x1 = quants + (long)tokenOf[1] * cols;
        sbyte* x2 = quants + (long)tokenOf[2] * cols, x3 = quants + (long)tokenOf[3] * cols;
        // Per token pair tp (tokens 2tp, 2tp + 1) and octet o, at 2tp + o: d·dx and dmin·dx in the totals' layout;
        // at 4tp + i: the pair's sub-block sums of 2i and 2i + 1 in the layout of Mins.
        var dScale = stackalloc Vector512<float>[4];
        var dMinScale = stackalloc Vector512<float>[4];
        var subBlockSums = stackalloc Vector512<short>[8];
        // The tile's output lines, fetched now so that its stores at the end hit the cache.
        for (int i = 0; i < TokenTile; i++) Sse.Prefetch0(task->Y + (long)tokenOf[i] * rows + group);
        // Per octet o and token pair tp: 8 rows × 2 tokens of float accumulators, lane L (rows 8o + 2L, +1) token 2tp then 2tp + 1.
        Vector512<float> f00 = default, f01 = default, f10 = default, f11 = default;

        for (int k = 0; k < blocks; k++)
        {
            Q4_KRowGroupSuperBlock* u = unpacked + k;
            for (int tp = 0; tp < 2; tp++)
            {
                int ta = tokenOf[2 * tp], tb = tokenOf[2 * tp + 1];
                float xda = scales[(long)ta * blocks + k], xdb = scales[(long)tb * blocks + k];
                var xd = Vector128.Create(xda, xda, xdb, xdb);
                var xd512 = Vector512.Create(Vector256.Create(xd, xd), Vector256.Create(xd, xd));
                dScale[2 * tp] = Vector512.Load(u->D) * xd512;
                dScale[2 * tp + 1] = Vector512.Load(u->D + 16) * xd512;
                dMinScale[2 * tp] = Vector512.Load(u->DMin) * xd512;
                dMinScale[2 * tp + 1] = Vector512.Load(u->DMin + 16) * xd512;
                var a = SubBlockSumPairs(groupSums + (long)ta * (cols / 16) + 16 * k);
                var b = SubBlockSumPairs(groupSums + (long)tb * (cols / 16) + 16 * k);
                var low = Sse2.UnpackLow(a, b); // a0 b0 a1 b1
                var high = Sse2.UnpackHigh(a, b); // a2 b2 a3 b3
                var low512 = Vector512.Create(Vector256.Create(low, low), Vector256.Create(low, low));
                var high512 = Vector512.Create(Vector256.Create(high, high), Vector256.Create(high, high));
                subBlockSums[4 * tp] = Avx512F.Shuffle(low512, 0b01_01_00_00).AsInt16();
                subBlockSums[4 * tp + 1] = Avx512F.Shuffle(low512, 0b11_11_10_10).AsInt16();
                subBlockSums[4 * tp + 2] = Avx512F.Shuffle(high512, 0b01_01_00_00).AsInt16();
                subBlockSums[4 * tp + 3] = Avx512F.Shuffle(high512, 0b11_11_10_10).AsInt16();
            }

            Vector512<int> i00 = default, i01 = default, i02 = default, i03 = default;
            Vector512<int> i10 = default, i11 = default, i12 = default, i13 = default;
            for (int p = 0; p < 4; p++)
            {
                byte* q = u->Quants + 1024 * p;
                int at = 256 * k + 64 * p;
                sbyte* y0 = x0 + at, y1 = x1 + at, y2 = x2 + at, y3 = x3 + at;
                var w0 = Vector512.Load(q);
                var w1 = Vector512.Load(q + 64);
                var x = Broadcast(y0);
                var a00 = Avx512BW.MultiplyAddAdjacent(w0, x);
                var a10 = Avx512BW.MultiplyAddAdjacent(w1, x);
                x = Broadcast(y1);
                var a01 = Avx512BW.MultiplyAddAdjacent(w0, x);
                var a11 = Avx512BW.MultiplyAddAdjacent(w1, x);
                x = Broadcast(y2);
                var a02 = Avx512BW.MultiplyAddAdjacent(w0, x);
                var a12 = Avx512BW.MultiplyAddAdjacent(w1, x);
                x = Broadcast(y3);
                var a03 = Avx512BW.MultiplyAddAdjacent(w0, x);
                var a13 = Avx512BW.MultiplyAddAdjacent(w1, x);
                for (int s = 1; s < 8; s++)
                {
                    w0 = Vector512.Load(q + 128 * s);
                    w1 = Vector512.Load(q + 128 * s + 64);
                    x = Broadcast(y0 + 8 * s);
                    a00 += Avx512BW.MultiplyAddAdjacent(w0, x);
                    a10 += Avx512BW.MultiplyAddAdjacent(w1, x);
                    x = Broadcast(y1 + 8 * s);
                    a01 += Avx512BW.MultiplyAddAdjacent(w0, x);
                    a11 += Avx512BW.MultiplyAddAdjacent(w1, x);
                    x = Broadcast(y2 + 8 * s);
                    a02 += Avx512BW.MultiplyAddAdjacent(w0, x);
                    a12 += Avx512BW.MultiplyAddAdjacent(w1, x);
                    x = Broadcast(y3 + 8 * s);
                    a03 += Avx512BW.MultiplyAddAdjacent(w0, x);
                    a13 += Avx512BW.MultiplyAddAdjacent(w1, x);
                }
                var scales0 = Vector512.Load(u->Scales + 64 * p);
                var scales1 = Vector512.Load(u->Scales + 64 * p + 32);
                i00 += Avx512BW.MultiplyAddAdjacent(a00, scales0);
                i01 += Avx512BW.MultiplyAddAdjacent(a01, scales0);
                i02 += Avx512BW.MultiplyAddAdjacent(a02, scales0);
                i03 += Avx512BW.MultiplyAddAdjacent(a03, scales0);
                i10 += Avx512BW.MultiplyAddAdjacent(a10, scales1);
                i11 += Avx512BW.MultiplyAddAdjacent(a11, scales1);
                i12 += Avx512BW.MultiplyAddAdjacent(a12, scales1);
                i13 += Avx512BW.MultiplyAddAdjacent(a13, scales1);
            }
            f00 = AddTotals(f00, i00, i01, u->Mins, subBlockSums, dScale[0], dMinScale[0]);
            f01 = AddTotals(f01, i02, i03, u->Mins, subBlockSums + 4, dScale[2], dMinScale[2]);
            f10 = AddTotals(f10, i10, i11, u->Mins + 32, subBlockSums, dScale[1], dMinScale[1]);
            f11 = AddTotals(f11, i12, i13, u->Mins + 32, subBlockSums + 4, dScale[3], dMinScale[3]);
        }

        // Token 2tp's rows are elements 0, 1 of each 128-bit lane of both octets, token 2tp + 1's elements 2, 3.
        var first = Vector512.Create(0, 1, 4, 5, 8, 9, 12, 13, 16, 17, 20, 21, 24, 25, 28, 29);
        var second = first + Vector512.Create(2);
        Store(task, Avx512F.PermuteVar16x32x2(f00, first, f10), tokenOf[0], group, groupRows);
        Store(task, Avx512F.PermuteVar16x32x2(f00, second, f10), tokenOf[1], group, groupRows);
        Store(task, Avx512F.PermuteVar16x32x2(f01, first, f11), tokenOf[2], group, groupRows);
        Store(task, Avx512F.PermuteVar16x32x2(f01, second, f11), tokenOf[3], group, groupRows);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Store(MatMulTask* task, Vector512<float> sums, int token, int group, int groupRows)
    {
        float* y = task->Y + (long)token * task->W.Rows + group;
        if (groupRows == Q4_KRowGroupSuperBlock.Rows)
            Vector512.Store(sums, y);
        else
            for (int r = 0; r < groupRows; r++) y[r] = sums.GetElement(r);
    }

    /// <summary>
    /// One octet's super-block for a token pair: the rows' T1 from the int32 lane pairs of <paramref name="first"/>
    /// and <paramref name="second"/> (the pair's tokens), T2 from the mins and sub-block sums, then
    /// <see cref="KQuantKernels.AddExactTotals"/>' two FMAs.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<float> AddTotals(Vector512<float> acc, Vector512<int> first, Vector512<int> second, short* mins, Vector512<short>* sums,
        Vector512<float> dScale, Vector512<float> dMinScale)
    {
        var t1 = Avx512F.Shuffle(first.AsSingle(), second.AsSingle(), 0b10_00_10_00).AsInt32()
            + Avx512F.Shuffle(first.AsSingle(), second.AsSingle(), 0b11_01_11_01).AsInt32();
        var t2 = Avx512BW.MultiplyAddAdjacent(Vector512.Load(mins), sums[0]) + Avx512BW.MultiplyAddAdjacent(Vector512.Load(mins + 64), sums[1])
            + (Avx512BW.MultiplyAddAdjacent(Vector512.Load(mins + 128), sums[2]) + Avx512BW.MultiplyAddAdjacent(Vector512.Load(mins + 192), sums[3]));
        acc = Avx512F.FusedMultiplyAdd(Avx512F.ConvertToVector512Single(t1), dScale, acc);
        return Avx512F.FusedMultiplyAddNegated(Avx512F.ConvertToVector512Single(t2), dMinScale, acc);
    }

    /// <summary>A token's 8 sub-block sums Σx (each two group sums) as int16 pairs: element i holds sums 2i and 2i + 1.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector128<uint> SubBlockSumPairs(short* groupSums)
    {
        var pairs = Avx2.MultiplyAddAdjacent(Vector256.Load(groupSums), Vector256.Create((short)1));
        return Sse2.PackSignedSaturate(pairs.GetLower(), pairs.GetUpper()).AsUInt32(); // |Σx| ≤ 32·128, exact in int16
    }

    /// <summary>8 activation quants in all eight 64-bit slots.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<sbyte> Broadcast(sbyte* x) => Vector512.Create(*(long*)x).AsSByte();

    /// <summary>
    /// The definition of Q4_K's products (<see cref="IKBlock.SumsExactTotals"/>) in plain scalar code, against
    /// activations quantized to 256-blocks: per super-block T1 = Σ_j scale_j·Σ q·x and T2 = Σ_j min_j·Σ x in
    /// integers, then acc = fma(T1, d·dx, acc) and acc = fma(−T2, dmin·dx, acc), one float per row and token.
    /// </summary>
    internal static void Reference(in WeightMatrix w, sbyte* quants, float* scales, short* groupSums, int tokens, float* y)
    {
        int cols = w.Cols, blocks = cols / 256;
        for (int t = 0; t < tokens; t++)
            for (int r = 0; r < w.Rows; r++)
            {
                float acc = 0;
                for (int k = 0; k < blocks; k++)
                {
                    byte* block = w.Row(r) + (long)k * Q4_KBlock.BlockBytes;
                    sbyte* x = quants + (long)t * cols + 256 * k;
                    short* gs = groupSums + (long)t * (cols / 16) + 16 * k;
                    float xd = scales[(long)t * blocks + k];
                    float d = (float)BitConverter.UInt16BitsToHalf(*(ushort*)block);
                    float dMin = (float)BitConverter.UInt16BitsToHalf(*(ushort*)(block + 2));
                    int scaledTotal = 0, minTotal = 0;
                    for (int j = 0; j < 8; j++)
                    {
                        KQuantScales.GetScaleMin(j, block + 4, out byte scale, out byte min);
                        int dot = 0;
                        for (int e = 0; e < 32; e++)
                        {
                            int nibbles = block[16 + 32 * (j / 2) + e];
                            dot += (j % 2 == 0 ? nibbles & 0x0F : nibbles >> 4) * x[32 * j + e];
                        }
                        scaledTotal += scale * dot;
                        minTotal += min * (gs[2 * j] + gs[2 * j + 1]);
                    }
                    acc = MathF.FusedMultiplyAdd(scaledTotal, d * xd, acc);
                    acc = MathF.FusedMultiplyAdd(-minTotal, dMin * xd, acc);
                }
                y[(long)t * w.Rows + r] = acc;
            }
    }
}
