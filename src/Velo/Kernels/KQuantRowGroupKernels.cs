using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using Velo.Tensors;

namespace Velo.Kernels;

/// <summary>
/// One super-block of 16 Q4_K rows unpacked with the rows in the lanes, for <see cref="KQuantRowGroupKernels"/>:
/// a 512-bit load of <see cref="Quants"/> holds the same four columns of all 16 rows, so one broadcast of four
/// activation quants multiplies all of them, and every int32 lane sums one row's products.
/// </summary>
internal unsafe struct RowGroupSuperBlock
{
    /// <summary>Rows per group.</summary>
    public const int Rows = 16;

    /// <summary>
    /// For sub-block c and lane j (columns 32c + 4j to 32c + 4j + 3), at 64·(8c + j): row r's four quants at 4r.
    /// Lane j is the int32 lane of the 256-bit kernels that sums those columns.
    /// </summary>
    public fixed byte Quants[8 * 8 * 64];

    /// <summary>Sub-block c's 6-bit scale of row r in int16 lanes 32c + 2r and 32c + 2r + 1, the pair <c>madd</c> weights.</summary>
    public fixed short Scales[8 * 32];

    /// <summary>Sub-block j's 6-bit min of row r at 16j + r, as a float (exact).</summary>
    public fixed float Mins[8 * 16];

    public fixed float D[16];

    public fixed float DMin[16];
}

/// <summary>
/// AVX-512 (BW) prefill for Q4_K with the rows in the lanes. Each work item's rows (16 at most in prefill) are
/// unpacked once, super-block by super-block, into <see cref="RowGroupSuperBlock"/>s, and multiplied in tiles of
/// 16 rows × 8 tokens: per super-block and token the 8 lanes' scale products share one multiply of d and of dmin
/// by the activation scale for all 16 rows, and the min terms are one float multiply (min · group sum, both exact
/// small integers, so the product is the exact integer the 256-bit kernels convert), where the two-rows-per-register
/// tiles of <see cref="KQuantWideKernels"/> spend a madd, a conversion and two multiplies per two rows.
/// <para>
/// Bit for bit what <see cref="KQuantKernels.Rows{TBlock, TDot}"/> computes: a row's 8 accumulators (lanes j of the
/// 256-bit kernels) get the same exact int32 sums per super-block and the same float operations in the same order
/// (<c>KQuantKernels.AddSuperBlock</c>), and their final sum is <see cref="Vector256.Sum{T}(Vector256{T})"/>'s
/// order, ((a0 + a1) + (a2 + a3)) + ((a4 + a5) + (a6 + a7)), done on 16 rows at once. <see cref="Reference"/> is
/// the same arithmetic in plain scalar code.
/// </para>
/// </summary>
internal static unsafe class KQuantRowGroupKernels
{
    private const int TokenTile = 8;

    /// <summary>Whether this machine runs these kernels.</summary>
    public static bool IsSupported => Avx512BW.IsSupported;

    /// <summary>Whether <see cref="Q4_KRows{TDot}"/> takes <paramref name="tokens"/> tokens itself (fewer go to the other kernels).</summary>
    public static bool Handles(int tokens) => KQuantKernels.UnpacksFor<Q4_KBlock>(tokens);

    /// <summary>Bytes of <see cref="MatMulTask.RowScratch"/> per thread: one group's unpacked row.</summary>
    public static long ScratchBytes(int cols) => (long)(cols / 256) * sizeof(RowGroupSuperBlock);

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Q4_KRows<TDot>(MatMulTask* task, int rowStart, int rowEnd, int threadIndex) where TDot : IIntegerDot
    {
        int tokens = task->Tokens;
        if (!Handles(tokens))
        {
            KQuantWideKernels.Rows<Q4_KBlock, TDot>(task, rowStart, rowEnd, threadIndex);
            return;
        }
        int cols = task->W.Cols, blocks = cols / 256;
        var unpacked = (RowGroupSuperBlock*)(task->RowScratch + threadIndex * task->RowScratchBytes);
        var accumulators = stackalloc Vector512<float>[8 * TokenTile];
        for (int group = rowStart; group < rowEnd; group += RowGroupSuperBlock.Rows)
        {
            int groupRows = Math.Min(RowGroupSuperBlock.Rows, rowEnd - group);
            for (int k = 0; k < blocks; k++)
                Unpack(task->W, group, groupRows, k, unpacked + k);
            // A last tile of fewer tokens repeats its last token, which stores the same values again.
            for (int t = 0; t < tokens; t += TokenTile)
                Tile(task, unpacked, group, groupRows, t, accumulators);
        }
    }

    /// <summary>Super-block <paramref name="k"/> of rows <paramref name="first"/> onwards (the last repeated to fill 16).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Unpack(in WeightMatrix w, int first, int count, int k, RowGroupSuperBlock* u)
    {
        // The nibble bytes of 32 lanes (4 pairs of sub-blocks × 8 lanes) by row, then split into low and high nibbles.
        uint* packed = stackalloc uint[4 * 8 * RowGroupSuperBlock.Rows];
        short* scalesAndMins = stackalloc short[16];
        for (int r = 0; r < RowGroupSuperBlock.Rows; r++)
        {
            byte* block = w.Row(first + Math.Min(r, count - 1)) + (long)k * Q4_KBlock.BlockBytes;
            var dAndMin = F16Row.PairToSingle(*(uint*)block);
            u->D[r] = dAndMin.ToScalar();
            u->DMin[r] = dAndMin.GetElement(1);
            Vector256.Store(KQuantKernels.UnpackScalesAndMins(block + 4), scalesAndMins);
            for (int c = 0; c < 8; c++)
            {
                u->Scales[32 * c + 2 * r] = scalesAndMins[c];
                u->Scales[32 * c + 2 * r + 1] = scalesAndMins[c];
                u->Mins[16 * c + r] = scalesAndMins[8 + c];
            }
            uint* nibbles = (uint*)(block + 16);
            for (int lane = 0; lane < 32; lane++)
                packed[lane * RowGroupSuperBlock.Rows + r] = nibbles[lane];
        }
        var nibbleMask = Vector512.Create((byte)0x0F);
        for (int pair = 0; pair < 4; pair++)
            for (int j = 0; j < 8; j++)
            {
                var bits = Vector512.Load((byte*)(packed + (8 * pair + j) * RowGroupSuperBlock.Rows));
                Vector512.Store(bits & nibbleMask, u->Quants + 64 * (8 * (2 * pair) + j));
                Vector512.Store(Avx512BW.ShiftRightLogical(bits.AsUInt16(), 4).AsByte() & nibbleMask, u->Quants + 64 * (8 * (2 * pair + 1) + j));
            }
    }

    /// <summary>
    /// One group's rows against tokens <paramref name="firstToken"/> to +7 (the last token repeated past the end),
    /// all super-blocks, results to <c>Y[token · Rows + row]</c>.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Tile(MatMulTask* task, RowGroupSuperBlock* unpacked, int group, int groupRows, int firstToken, Vector512<float>* acc)
    {
        int cols = task->W.Cols, rows = task->W.Rows, tokens = task->Tokens, blocks = cols / 256;
        ActivationQuantizer.Layout256(task->Activations, cols, tokens, out sbyte* quants, out float* scales, out short* groupSums);
        int* tokenOf = stackalloc int[TokenTile];
        for (int i = 0; i < TokenTile; i++) tokenOf[i] = Math.Min(firstToken + i, tokens - 1);
        sbyte* x0 = quants + (long)tokenOf[0] * cols, x1 = quants + (long)tokenOf[1] * cols;
        sbyte* x2 = quants + (long)tokenOf[2] * cols, x3 = quants + (long)tokenOf[3] * cols;
        sbyte* x4 = quants + (long)tokenOf[4] * cols, x5 = quants + (long)tokenOf[5] * cols;
        sbyte* x6 = quants + (long)tokenOf[6] * cols, x7 = quants + (long)tokenOf[7] * cols;
        var dScale = stackalloc Vector512<float>[TokenTile];
        var dMinScale = stackalloc Vector512<float>[TokenTile];
        float* subBlockSums = stackalloc float[8 * TokenTile];
        for (int i = 0; i < 8 * TokenTile; i++) acc[i] = default;

        for (int k = 0; k < blocks; k++)
        {
            RowGroupSuperBlock* u = unpacked + k;
            var d = Vector512.Load(u->D);
            var dMin = Vector512.Load(u->DMin);
            for (int i = 0; i < TokenTile; i++)
            {
                var xd = Vector512.Create(scales[(long)tokenOf[i] * blocks + k]);
                dScale[i] = d * xd;
                dMinScale[i] = dMin * xd;
                // Σx of sub-block j: its two group sums, added as integers as the 256-bit kernels' madd adds them.
                short* gs = groupSums + (long)tokenOf[i] * (cols / 16) + 16 * k;
                for (int j = 0; j < 8; j++)
                    subBlockSums[8 * i + j] = gs[2 * j] + gs[2 * j + 1];
            }
            int offset = 256 * k;
            for (int j = 0; j < 8; j++)
            {
                Vector512<int> s0 = default, s1 = default, s2 = default, s3 = default;
                Vector512<int> s4 = default, s5 = default, s6 = default, s7 = default;
                for (int c = 0; c < 8; c++)
                {
                    var q = Vector512.Load(u->Quants + 64 * (8 * c + j));
                    var scale = Vector512.Load(u->Scales + 32 * c);
                    int at = offset + 32 * c + 4 * j;
                    s0 += WeightedDot(q, x0 + at, scale);
                    s1 += WeightedDot(q, x1 + at, scale);
                    s2 += WeightedDot(q, x2 + at, scale);
                    s3 += WeightedDot(q, x3 + at, scale);
                    s4 += WeightedDot(q, x4 + at, scale);
                    s5 += WeightedDot(q, x5 + at, scale);
                    s6 += WeightedDot(q, x6 + at, scale);
                    s7 += WeightedDot(q, x7 + at, scale);
                }
                var mins = Vector512.Load(u->Mins + 16 * j);
                Vector512<float>* a = acc + TokenTile * j;
                a[0] = AddSuperBlock(a[0], s0, mins, subBlockSums[j], dScale[0], dMinScale[0]);
                a[1] = AddSuperBlock(a[1], s1, mins, subBlockSums[8 + j], dScale[1], dMinScale[1]);
                a[2] = AddSuperBlock(a[2], s2, mins, subBlockSums[16 + j], dScale[2], dMinScale[2]);
                a[3] = AddSuperBlock(a[3], s3, mins, subBlockSums[24 + j], dScale[3], dMinScale[3]);
                a[4] = AddSuperBlock(a[4], s4, mins, subBlockSums[32 + j], dScale[4], dMinScale[4]);
                a[5] = AddSuperBlock(a[5], s5, mins, subBlockSums[40 + j], dScale[5], dMinScale[5]);
                a[6] = AddSuperBlock(a[6], s6, mins, subBlockSums[48 + j], dScale[6], dMinScale[6]);
                a[7] = AddSuperBlock(a[7], s7, mins, subBlockSums[56 + j], dScale[7], dMinScale[7]);
            }
        }

        for (int i = 0; i < TokenTile; i++)
        {
            // Vector256.Sum's order, lane by lane.
            var sum = ((acc[i] + acc[TokenTile + i]) + (acc[2 * TokenTile + i] + acc[3 * TokenTile + i]))
                + ((acc[4 * TokenTile + i] + acc[5 * TokenTile + i]) + (acc[6 * TokenTile + i] + acc[7 * TokenTile + i]));
            float* y = task->Y + (long)tokenOf[i] * rows + group;
            if (groupRows == RowGroupSuperBlock.Rows)
                Vector512.Store(sum, y);
            else
                for (int r = 0; r < groupRows; r++) y[r] = sum.GetElement(r);
        }
    }

    /// <summary>Per int32 lane (one row), 4 products weighted by the row's sub-block scale: what <see cref="IIntegerDot.WeightedDotAdd"/> adds.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<int> WeightedDot(Vector512<byte> q, sbyte* x, Vector512<short> scales) =>
        Avx512BW.MultiplyAddAdjacent(Avx512BW.MultiplyAddAdjacent(q, Vector512.Create(*(int*)x).AsSByte()), scales);

    /// <summary>
    /// <c>KQuantKernels.AddSuperBlock</c> for 16 rows' lane j: the min term min · Σx is an exact integer below
    /// 2^18, which the float product gives exactly, as the 256-bit kernels' conversion of their integer madd does.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<float> AddSuperBlock(Vector512<float> acc, Vector512<int> sum, Vector512<float> mins, float subBlockSum,
        Vector512<float> dScale, Vector512<float> dMinScale)
    {
        acc = Avx512F.FusedMultiplyAdd(Avx512F.ConvertToVector512Single(sum), dScale, acc);
        return Avx512F.FusedMultiplyAddNegated(mins * Vector512.Create(subBlockSum), dMinScale, acc);
    }

    /// <summary>
    /// The definition in plain scalar code: Q4_K weights against activations quantized to 256-blocks, each row and
    /// token summed as the kernels sum it — 8 lanes of exact integer sums per super-block, each lane's float
    /// accumulator updated by an FMA of its sum and one of its min term, and the lanes added in
    /// <see cref="Vector256.Sum{T}(Vector256{T})"/>'s order.
    /// </summary>
    internal static void Reference(in WeightMatrix w, sbyte* quants, float* scales, short* groupSums, int tokens, float* y)
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
                    byte* block = w.Row(r) + (long)k * Q4_KBlock.BlockBytes;
                    sbyte* x = quants + (long)t * cols + 256 * k;
                    short* gs = groupSums + (long)t * (cols / 16) + 16 * k;
                    float xd = scales[(long)t * blocks + k];
                    float d = (float)BitConverter.UInt16BitsToHalf(*(ushort*)block);
                    float dMin = (float)BitConverter.UInt16BitsToHalf(*(ushort*)(block + 2));
                    sums.Clear();
                    for (int c = 0; c < 8; c++)
                    {
                        ScaleAndMin(block + 4, c, out int scale, out _);
                        for (int e = 0; e < 32; e++)
                        {
                            int nibbles = block[16 + 32 * (c / 2) + e];
                            int q = c % 2 == 0 ? nibbles & 0x0F : nibbles >> 4;
                            sums[e / 4] += scale * q * x[32 * c + e];
                        }
                    }
                    for (int j = 0; j < 8; j++)
                    {
                        ScaleAndMin(block + 4, j, out _, out int min);
                        float minTerm = min * (gs[2 * j] + gs[2 * j + 1]);
                        acc[j] = MathF.FusedMultiplyAdd(sums[j], d * xd, acc[j]);
                        acc[j] = MathF.FusedMultiplyAdd(-minTerm, dMin * xd, acc[j]);
                    }
                }
                y[(long)t * w.Rows + r] = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
            }
    }

    /// <summary>Sub-block <paramref name="j"/>'s 6-bit scale and min (llama.cpp's <c>get_scale_min_k4</c>).</summary>
    private static void ScaleAndMin(byte* packed, int j, out int scale, out int min)
    {
        if (j < 4)
        {
            scale = packed[j] & 63;
            min = packed[j + 4] & 63;
        }
        else
        {
            scale = (packed[j + 4] & 0x0F) | ((packed[j - 4] >> 6) << 4);
            min = (packed[j + 4] >> 4) | ((packed[j] >> 6) << 4);
        }
    }
}
