using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using Velo.Tensors;

namespace Velo.Kernels;

/// <summary>A K-quant type: 256-element super-blocks multiplied against activations in 256-blocks.</summary>
internal unsafe interface IKBlock
{
    static abstract int BlockBytes { get; }

    /// <summary>
    /// Adds one super-block's dot product with one token to <paramref name="acc"/> (its lanes are summed at the
    /// end): <paramref name="xd"/> is the activation block's scale, <paramref name="groupSums"/> its 16 sums of 16.
    /// </summary>
    static abstract Vector256<float> Accumulate<TDot>(byte* block, sbyte* xq, float xd, short* groupSums, Vector256<float> acc)
        where TDot : IIntegerDot;

    /// <summary>Rewrites one super-block in the common form of <see cref="UnpackedSuperBlock"/>, for prefill.</summary>
    static abstract void Unpack(byte* block, UnpackedSuperBlock* unpacked);

    /// <summary>
    /// Whether the mins are an offset of the quants scaled by d itself (<c>D == DMin</c>), so that a super-block's
    /// scaled sum and min sum subtract exactly as integers and take one conversion and one FMA.
    /// </summary>
    static virtual bool MinsScaledByD => false;

    /// <summary>
    /// Whether a super-block adds to one float accumulator per row and token from two exact integer totals,
    /// T1 = Σ_j scale_j·Σ_{i∈j} q_i·x_i and T2 = Σ_j min_j·Σ_{i∈j} x_i (<see cref="KQuantKernels.AddExactTotals"/>),
    /// instead of 8 lanes of partial sums each with an accumulator of its own. Exact totals do not depend on the
    /// order the products are summed in, which frees each kernel to sum them in whatever order suits its registers.
    /// The accumulator is lane 0 of the 256-bit one, the other lanes are unused (<see cref="KQuantKernels.Result{TBlock}"/>).
    /// </summary>
    static virtual bool SumsExactTotals => false;

    /// <summary>Whether the type has <see cref="PackedDot4"/>, a kernel for a few tokens that unpacks in registers.</summary>
    static virtual bool HasPackedDot4 => false;

    /// <summary>
    /// One packed row against the four tokens <paramref name="tokens"/> of the activations, each summed exactly as
    /// <see cref="Accumulate"/> sums it alone; the products of token k go to <c>y[tokens[k] * yStride]</c>.
    /// </summary>
    static virtual void PackedDot4<TDot>(byte* row, int blocks, sbyte* quants, float* scales, short* groupSums, int* tokens, float* y, int yStride)
        where TDot : IIntegerDot => throw new NotSupportedException();
}

/// <summary>A K-quant whose 8 sub-blocks of 32 carry their own 6-bit scale and min, packed as Q4_K packs them (Q4_K, Q5_K).</summary>
internal unsafe interface ISubBlockMinBlock : IKBlock
{
    /// <summary>The quants of sub-blocks 2j and 2j+1, j = 0..3, in element order.</summary>
    static abstract void SubBlockPairQuants(byte* block, int j, out Vector256<byte> low, out Vector256<byte> high);
}

/// <summary>
/// A K-quant super-block in the form all five types share: value = <c>D·scale·q − DMin·min</c> with q unsigned
/// bytes, the scale chosen per 16 values (and laid out per chunk of 32 as the 16 int16 lanes <c>maddubs</c>
/// produces) and the min per 16 values. Prefill unpacks a row chunk once and multiplies it with every token, so
/// the bit-twiddling of the packed formats is paid once per weight instead of once per token.
/// </summary>
internal unsafe struct UnpackedSuperBlock
{
    public fixed byte Quants[256];
    public fixed short ChunkScales[8 * 16];
    public fixed short Mins[16];
    public float D;
    public float DMin;
    private fixed float _padding[6]; // to 576 bytes, a whole number of cache lines

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void SetChunk(int chunk, Vector256<byte> quants, Vector256<short> scales)
    {
        fixed (byte* q = Quants) Avx.Store(q + 32 * chunk, quants);
        fixed (short* s = ChunkScales) Avx.Store(s + 16 * chunk, scales);
    }
}

/// <summary>
/// Q4_K: fp16 d and dmin, 12 bytes of packed 6-bit scales and mins for 8 sub-blocks of 32, 128 bytes of nibbles
/// (each 32 bytes hold two sub-blocks: low nibbles then high). Value = d·scale·q − dmin·min.
/// </summary>
internal unsafe struct Q4_KBlock : ISubBlockMinBlock
{
    public static int BlockBytes => 144;

    /// <summary>
    /// |T1| ≤ 8·63·32·15·128 &lt; 2^29 and |T2| ≤ 8·63·32·128 &lt; 2^21 (6-bit scales and mins, 4-bit quants,
    /// activation quants in [−128, 127]), so both are exact in int32.
    /// </summary>
    public static bool SumsExactTotals => true;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> Accumulate<TDot>(byte* block, sbyte* xq, float xd, short* groupSums, Vector256<float> acc)
        where TDot : IIntegerDot => KQuantKernels.AccumulateSubBlockMin<Q4_KBlock, TDot>(block, xq, xd, groupSums, acc);

    /// <summary>
    /// Σ min·x per sub-block of 32, as floats in 8 lanes: min · Σx, with Σx the sum of two activation group sums.
    /// Lane for lane what <see cref="KQuantKernels"/>' tiled kernels compute from <see cref="UnpackedSuperBlock.Mins"/>,
    /// so a token's result does not depend on its batch.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static Vector256<float> MinTerm(Vector256<short> minsPerGroup, short* groupSums) =>
        Avx.ConvertToVector256Single(Avx2.MultiplyAddAdjacent(minsPerGroup, Avx.LoadVector256(groupSums)));

    /// <summary>
    /// The 8 sub-block mins of <see cref="KQuantKernels.ScalesAndMins"/>' result as int16, each repeated for the two
    /// groups of 16 it covers: one vpshufb, whose zeroing indices (0x80) supply the high bytes.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static Vector256<short> MinsPerGroup(Vector256<byte> scalesAndMins) =>
        Avx2.Shuffle(scalesAndMins, Vector256.Create(
            (ushort)0x8008, 0x8008, 0x8009, 0x8009, 0x800A, 0x800A, 0x800B, 0x800B,
            0x800C, 0x800C, 0x800D, 0x800D, 0x800E, 0x800E, 0x800F, 0x800F).AsByte()).AsInt16();

    public static bool HasPackedDot4 => true;

    public static void PackedDot4<TDot>(byte* row, int blocks, sbyte* quants, float* scales, short* groupSums, int* tokens, float* y, int yStride)
        where TDot : IIntegerDot => KQuantKernels.PackedDot4<Q4_KBlock, TDot>(row, blocks, quants, scales, groupSums, tokens, y, yStride);

    /// <summary>The quants of sub-blocks 2j (low nibbles of 32 bytes) and 2j+1 (high nibbles).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void SubBlockPairQuants(byte* block, int j, out Vector256<byte> low, out Vector256<byte> high)
    {
        var nibbleMask = Vector256.Create((byte)0x0F);
        var bits = Avx.LoadVector256(block + 16 + 32 * j);
        low = bits & nibbleMask;
        high = KQuantKernels.HighNibbles(bits);
    }

    public static void Unpack(byte* block, UnpackedSuperBlock* unpacked) => KQuantKernels.UnpackSubBlockMin<Q4_KBlock>(block, unpacked);

    /// <summary>
    /// The scale part of unpacking Q4_K and Q5_K: d, dmin and the mins (each covering two groups of 16) into
    /// <paramref name="unpacked"/>; the scales and mins as <see cref="KQuantKernels.ScalesAndMins"/> gives them into
    /// <paramref name="scalesAndMins"/>.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static void UnpackScalesOf(byte* block, UnpackedSuperBlock* unpacked, out Vector256<byte> scalesAndMins)
    {
        var dAndMin = F16Row.PairToSingle(*(uint*)block);
        unpacked->D = dAndMin.ToScalar();
        unpacked->DMin = dAndMin.GetElement(1);
        scalesAndMins = KQuantKernels.ScalesAndMins(block + 4);
        Avx.Store(unpacked->Mins, MinsPerGroup(scalesAndMins));
    }
}

/// <summary>
/// Q6_K: 128 bytes of low nibbles, 64 bytes of high 2-bit pairs, 16 signed 8-bit scales (one per 16 values) and
/// fp16 d. Value = d·scale·(q − 32).
/// </summary>
internal unsafe struct Q6_KBlock : IKBlock
{
    public static int BlockBytes => 210;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> Accumulate<TDot>(byte* block, sbyte* xq, float xd, short* groupSums, Vector256<float> acc)
        where TDot : IIntegerDot
    {
        float d = F16Row.ToSingle(*(ushort*)(block + 208)) * xd;
        var scales = Sse2.LoadVector128((sbyte*)(block + 192));

        // The −32 offset contributes −32 · Σ scale·Σx over the 16 groups: one madd against the group sums
        // instead of a subtraction per value.
        var wideScales = Avx2.ConvertToVector256Int16(scales);
        var offsetTerm = Avx2.MultiplyAddAdjacent(wideScales, Avx.LoadVector256(groupSums));
        var sum = Vector256<int>.Zero - Avx2.ShiftLeftLogical(offsetTerm, 5);

        // The int16 scales of each half's 8 groups in both 128-bit lanes, so that a chunk's two takes one vpshufb
        // (ChunkScales takes a vpshufb and a vpmovsxbw per chunk).
        // Each half a call of its own: as a loop the JIT kept it rolled, selecting the half's scales with branches.
        sum = HalfDot<TDot>(sum, block, xq, Avx2.Permute4x64(wideScales.AsInt64(), 0b01_00_01_00).AsByte(), 0);
        sum = HalfDot<TDot>(sum, block, xq, Avx2.Permute4x64(wideScales.AsInt64(), 0b11_10_11_10).AsByte(), 1);
        return Fma.MultiplyAdd(Avx.ConvertToVector256Single(sum), Vector256.Create(d), acc);
    }

    /// <summary>
    /// <paramref name="sum"/> plus half <paramref name="half"/> (128 values) of a super-block against the token,
    /// weighted by <paramref name="halfScales"/>, the int16 scales of the half's 8 groups in both 128-bit lanes.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<int> HalfDot<TDot>(Vector256<int> sum, byte* block, sbyte* xq, Vector256<byte> halfScales, int half)
        where TDot : IIntegerDot
    {
        var nibbleMask = Vector256.Create((byte)0x0F);
        byte* ql = block + 64 * half;
        sbyte* x = xq + 128 * half;
        var low0 = Avx.LoadVector256(ql);
        var low1 = Avx.LoadVector256(ql + 32);
        var high = Avx.LoadVector256(block + 128 + 32 * half);
        var q0 = (low0 & nibbleMask) | KQuantKernels.PairToBits4And5(high, 0);
        var q1 = (low1 & nibbleMask) | KQuantKernels.PairToBits4And5(high, 2);
        var q2 = KQuantKernels.HighNibbles(low0) | (high & Vector256.Create((byte)0x30));
        var q3 = KQuantKernels.HighNibbles(low1) | KQuantKernels.PairToBits4And5(high, 6);
        sum = TDot.WeightedDotAdd(sum, q0, Avx.LoadVector256(x), KQuantKernels.ChunkScalesOfWords(halfScales, 0));
        sum = TDot.WeightedDotAdd(sum, q1, Avx.LoadVector256(x + 32), KQuantKernels.ChunkScalesOfWords(halfScales, 1));
        sum = TDot.WeightedDotAdd(sum, q2, Avx.LoadVector256(x + 64), KQuantKernels.ChunkScalesOfWords(halfScales, 2));
        return TDot.WeightedDotAdd(sum, q3, Avx.LoadVector256(x + 96), KQuantKernels.ChunkScalesOfWords(halfScales, 3));
    }

    public static bool MinsScaledByD => true;

    public static bool HasPackedDot4 => true;

    /// <summary>
    /// For batches too small to repay <see cref="Unpack"/>'s stores: each 32 quants are unpacked once, in
    /// registers, for all four tokens.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void PackedDot4<TDot>(byte* row, int blocks, sbyte* quants, float* xScales, short* groupSums, int* tokens, float* y, int yStride)
        where TDot : IIntegerDot
    {
        long cols = blocks * 256L;
        sbyte* x0 = quants + tokens[0] * cols, x1 = quants + tokens[1] * cols, x2 = quants + tokens[2] * cols, x3 = quants + tokens[3] * cols;
        Vector256<float> acc0 = default, acc1 = default, acc2 = default, acc3 = default;
        for (int b = 0; b < blocks; b++)
        {
            byte* block = row + (long)b * BlockBytes;
            var scales = Sse2.LoadVector128((sbyte*)(block + 192));
            var wideScales = Avx2.ConvertToVector256Int16(scales);
            // As in Accumulate: the −32 offset as −32 · Σ scale·Σx, all in exact int32.
            var sum0 = OffsetSum(wideScales, groupSums + tokens[0] * cols / 16 + 16 * b);
            var sum1 = OffsetSum(wideScales, groupSums + tokens[1] * cols / 16 + 16 * b);
            var sum2 = OffsetSum(wideScales, groupSums + tokens[2] * cols / 16 + 16 * b);
            var sum3 = OffsetSum(wideScales, groupSums + tokens[3] * cols / 16 + 16 * b);
            var nibbleMask = Vector256.Create((byte)0x0F);
            var pairMask = Vector256.Create((byte)0x30);
            for (int half = 0; half < 2; half++)
            {
                byte* ql = block + 64 * half;
                byte* qh = block + 128 + 32 * half;
                int offset = b * 256 + 128 * half;
                var high = Avx.LoadVector256(qh).AsUInt16();
                var low0 = Avx.LoadVector256(ql);
                ScaledDot4<TDot>((low0 & nibbleMask) | (Avx2.ShiftLeftLogical(high, 4).AsByte() & pairMask),
                    x0 + offset, x1 + offset, x2 + offset, x3 + offset, KQuantKernels.ChunkScales(scales.AsByte(), 4 * half, signedScales: true), ref sum0, ref sum1, ref sum2, ref sum3);
                ScaledDot4<TDot>((Avx2.ShiftRightLogical(low0.AsUInt16(), 4).AsByte() & nibbleMask) | (high.AsByte() & pairMask),
                    x0 + offset + 64, x1 + offset + 64, x2 + offset + 64, x3 + offset + 64, KQuantKernels.ChunkScales(scales.AsByte(), 4 * half + 2, signedScales: true), ref sum0, ref sum1, ref sum2, ref sum3);
                var low1 = Avx.LoadVector256(ql + 32);
                ScaledDot4<TDot>((low1 & nibbleMask) | (Avx2.ShiftLeftLogical(high, 2).AsByte() & pairMask),
                    x0 + offset + 32, x1 + offset + 32, x2 + offset + 32, x3 + offset + 32, KQuantKernels.ChunkScales(scales.AsByte(), 4 * half + 1, signedScales: true), ref sum0, ref sum1, ref sum2, ref sum3);
                ScaledDot4<TDot>((Avx2.ShiftRightLogical(low1.AsUInt16(), 4).AsByte() & nibbleMask) | (Avx2.ShiftRightLogical(high, 2).AsByte() & pairMask),
                    x0 + offset + 96, x1 + offset + 96, x2 + offset + 96, x3 + offset + 96, KQuantKernels.ChunkScales(scales.AsByte(), 4 * half + 3, signedScales: true), ref sum0, ref sum1, ref sum2, ref sum3);
            }
            float d = F16Row.ToSingle(*(ushort*)(block + 208));
            acc0 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(sum0), Vector256.Create(d * xScales[tokens[0] * blocks + b]), acc0);
            acc1 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(sum1), Vector256.Create(d * xScales[tokens[1] * blocks + b]), acc1);
            acc2 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(sum2), Vector256.Create(d * xScales[tokens[2] * blocks + b]), acc2);
            acc3 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(sum3), Vector256.Create(d * xScales[tokens[3] * blocks + b]), acc3);
        }
        y[(long)tokens[0] * yStride] = Vector256.Sum(acc0);
        y[(long)tokens[1] * yStride] = Vector256.Sum(acc1);
        y[(long)tokens[2] * yStride] = Vector256.Sum(acc2);
        y[(long)tokens[3] * yStride] = Vector256.Sum(acc3);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<int> OffsetSum(Vector256<short> wideScales, short* groupSums) =>
        Vector256<int>.Zero - Avx2.ShiftLeftLogical(Avx2.MultiplyAddAdjacent(wideScales, Avx.LoadVector256(groupSums)), 5);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void ScaledDot4<TDot>(Vector256<byte> q, sbyte* x0, sbyte* x1, sbyte* x2, sbyte* x3, Vector256<short> scales,
        ref Vector256<int> sum0, ref Vector256<int> sum1, ref Vector256<int> sum2, ref Vector256<int> sum3) where TDot : IIntegerDot
    {
        sum0 = TDot.WeightedDotAdd(sum0, q, Avx.LoadVector256(x0), scales);
        sum1 = TDot.WeightedDotAdd(sum1, q, Avx.LoadVector256(x1), scales);
        sum2 = TDot.WeightedDotAdd(sum2, q, Avx.LoadVector256(x2), scales);
        sum3 = TDot.WeightedDotAdd(sum3, q, Avx.LoadVector256(x3), scales);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Unpack(byte* block, UnpackedSuperBlock* unpacked)
    {
        float d = F16Row.ToSingle(*(ushort*)(block + 208));
        unpacked->D = d;
        unpacked->DMin = d;
        var scales = Sse2.LoadVector128(block + 192);
        // q − 32 becomes a min of 32·scale per group.
        Avx.Store(unpacked->Mins, Avx2.ShiftLeftLogical(Avx2.ConvertToVector256Int16(scales.AsSByte()), 5));
        var nibbleMask = Vector256.Create((byte)0x0F);
        var pairMask = Vector256.Create((byte)0x30);
        for (int half = 0; half < 2; half++)
        {
            var low0 = Avx.LoadVector256(block + 64 * half);
            var low1 = Avx.LoadVector256(block + 64 * half + 32);
            var high = Avx.LoadVector256(block + 128 + 32 * half).AsUInt16();
            unpacked->SetChunk(4 * half, (low0 & nibbleMask) | (Avx2.ShiftLeftLogical(high, 4).AsByte() & pairMask),
                KQuantKernels.ChunkScales(scales, 4 * half, signedScales: true));
            unpacked->SetChunk(4 * half + 1, (low1 & nibbleMask) | (Avx2.ShiftLeftLogical(high, 2).AsByte() & pairMask),
                KQuantKernels.ChunkScales(scales, 4 * half + 1, signedScales: true));
            unpacked->SetChunk(4 * half + 2, (Avx2.ShiftRightLogical(low0.AsUInt16(), 4).AsByte() & nibbleMask) | (high.AsByte() & pairMask),
                KQuantKernels.ChunkScales(scales, 4 * half + 2, signedScales: true));
            unpacked->SetChunk(4 * half + 3, (Avx2.ShiftRightLogical(low1.AsUInt16(), 4).AsByte() & nibbleMask) | (Avx2.ShiftRightLogical(high, 2).AsByte() & pairMask),
                KQuantKernels.ChunkScales(scales, 4 * half + 3, signedScales: true));
        }
    }
}

/// <summary>
/// Q5_K: as Q4_K plus 32 bytes of fifth bits: bit 2j of byte l belongs to element l of sub-block 2j (low nibbles
/// of chunk j), bit 2j+1 to element l of sub-block 2j+1.
/// </summary>
internal unsafe struct Q5_KBlock : ISubBlockMinBlock
{
    public static int BlockBytes => 176;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> Accumulate<TDot>(byte* block, sbyte* xq, float xd, short* groupSums, Vector256<float> acc)
        where TDot : IIntegerDot => KQuantKernels.AccumulateSubBlockMin<Q5_KBlock, TDot>(block, xq, xd, groupSums, acc);

    public static bool HasPackedDot4 => true;

    public static void PackedDot4<TDot>(byte* row, int blocks, sbyte* quants, float* scales, short* groupSums, int* tokens, float* y, int yStride)
        where TDot : IIntegerDot => KQuantKernels.PackedDot4<Q5_KBlock, TDot>(row, blocks, quants, scales, groupSums, tokens, y, yStride);

    /// <summary>The quants of sub-blocks 2j and 2j+1: nibbles as in Q4_K, and fifth bits 2j and 2j+1 of each byte moved to bit 4.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void SubBlockPairQuants(byte* block, int j, out Vector256<byte> low, out Vector256<byte> high)
    {
        var nibbleMask = Vector256.Create((byte)0x0F);
        var bit4 = Vector256.Create((byte)0x10);
        var bits = Avx.LoadVector256(block + 48 + 32 * j);
        var fifthBits = Avx.LoadVector256(block + 16).AsUInt16();
        low = (bits & nibbleMask) | (MoveToBit4(fifthBits, 2 * j).AsByte() & bit4);
        high = (Avx2.ShiftRightLogical(bits.AsUInt16(), 4).AsByte() & nibbleMask) | (MoveToBit4(fifthBits, 2 * j + 1).AsByte() & bit4);
    }

    /// <summary>Shifts 16-bit lanes so that bit <paramref name="bit"/> of each byte lands on bit 4 (other bits spill, and the caller masks).</summary>
    /// <remarks>The count varies with the sub-block pair, so it goes in a register (vpsllw/vpsrlw xmm), which is what
    /// the JIT emitted anyway for the immediate form with a non-constant count.</remarks>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<ushort> MoveToBit4(Vector256<ushort> v, int bit) =>
        bit <= 4
            ? Avx2.ShiftLeftLogical(v, Vector128.CreateScalar((ushort)(4 - bit)))
            : Avx2.ShiftRightLogical(v, Vector128.CreateScalar((ushort)(bit - 4)));

    public static void Unpack(byte* block, UnpackedSuperBlock* unpacked) => KQuantKernels.UnpackSubBlockMin<Q5_KBlock>(block, unpacked);
}

/// <summary>
/// Q2_K: 16 bytes of 4-bit scale (low nibble) and min (high nibble) per group of 16, 64 bytes of 2-bit quants,
/// fp16 d and dmin. Each half of 128 values takes 32 bytes; bits 2s..2s+1 of byte l are element 32s + l.
/// Value = d·scale·q − dmin·min.
/// </summary>
internal unsafe struct Q2_KBlock : IKBlock
{
    public static int BlockBytes => 84;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> Accumulate<TDot>(byte* block, sbyte* xq, float xd, short* groupSums, Vector256<float> acc)
        where TDot : IIntegerDot
    {
        var dAndMin = F16Row.PairToSingle(*(uint*)(block + 80)) * Vector128.Create(xd);
        var packed = Sse2.LoadVector128(block);
        var scales = packed & Vector128.Create((byte)0x0F);
        var mins = Avx2.ConvertToVector256Int16(Sse2.ShiftRightLogical(packed.AsUInt16(), 4).AsByte() & Vector128.Create((byte)0x0F));
        var minTerm = Avx.ConvertToVector256Single(Avx2.MultiplyAddAdjacent(mins, Avx.LoadVector256(groupSums)));

        Vector256<int> sum = default;
        var twoBits = Vector256.Create((byte)3);
        for (int half = 0; half < 2; half++)
        {
            var bits = Avx.LoadVector256(block + 16 + 32 * half).AsUInt16();
            sbyte* x = xq + 128 * half;
            sum = KQuantKernels.ScaledDot<TDot>(sum, bits.AsByte() & twoBits, x, scales, 4 * half, signedScales: false);
            sum = KQuantKernels.ScaledDot<TDot>(sum, Avx2.ShiftRightLogical(bits, 2).AsByte() & twoBits, x + 32, scales, 4 * half + 1, signedScales: false);
            sum = KQuantKernels.ScaledDot<TDot>(sum, Avx2.ShiftRightLogical(bits, 4).AsByte() & twoBits, x + 64, scales, 4 * half + 2, signedScales: false);
            sum = KQuantKernels.ScaledDot<TDot>(sum, Avx2.ShiftRightLogical(bits, 6).AsByte() & twoBits, x + 96, scales, 4 * half + 3, signedScales: false);
        }
        return KQuantKernels.AddSuperBlock(acc, sum, minTerm, dAndMin.ToScalar(), dAndMin.GetElement(1));
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Unpack(byte* block, UnpackedSuperBlock* unpacked)
    {
        var dAndMin = F16Row.PairToSingle(*(uint*)(block + 80));
        unpacked->D = dAndMin.ToScalar();
        unpacked->DMin = dAndMin.GetElement(1);
        var packed = Sse2.LoadVector128(block);
        var scales = packed & Vector128.Create((byte)0x0F);
        Avx.Store(unpacked->Mins, Avx2.ConvertToVector256Int16(Sse2.ShiftRightLogical(packed.AsUInt16(), 4).AsByte() & Vector128.Create((byte)0x0F)).AsInt16());
        var twoBits = Vector256.Create((byte)3);
        for (int half = 0; half < 2; half++)
        {
            var bits = Avx.LoadVector256(block + 16 + 32 * half).AsUInt16();
            for (int shift = 0; shift < 4; shift++)
                unpacked->SetChunk(4 * half + shift, Avx2.ShiftRightLogical(bits, Vector128.CreateScalar((ushort)(2 * shift))).AsByte() & twoBits,
                    KQuantKernels.ChunkScales(scales, 4 * half + shift, signedScales: false));
        }
    }
}

/// <summary>
/// Q3_K: 32 bytes of third bits (bit 4h+s of byte l for element 32s + l of half h), 64 bytes of low 2 bits packed as
/// in Q2_K, 12 bytes of packed 6-bit group scales (biased by 32), fp16 d. Value = d·(scale − 32)·(q − 4).
/// </summary>
internal unsafe struct Q3_KBlock : IKBlock
{
    public static int BlockBytes => 110;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> Accumulate<TDot>(byte* block, sbyte* xq, float xd, short* groupSums, Vector256<float> acc)
        where TDot : IIntegerDot
    {
        float d = F16Row.ToSingle(*(ushort*)(block + 108)) * xd;
        var scales = UnpackScales(block + 96);

        // The −4 offset contributes −4 · Σ scale·Σx over the 16 groups.
        var offsetTerm = Avx2.MultiplyAddAdjacent(Avx2.ConvertToVector256Int16(scales), Avx.LoadVector256(groupSums));
        var sum = Vector256<int>.Zero - Avx2.ShiftLeftLogical(offsetTerm, 2);

        var twoBits = Vector256.Create((byte)3);
        var bit2 = Vector256.Create((byte)4);
        var third = Avx.LoadVector256(block).AsUInt16();
        for (int half = 0; half < 2; half++)
        {
            var bits = Avx.LoadVector256(block + 32 + 32 * half).AsUInt16();
            sbyte* x = xq + 128 * half;
            // Third bit 4h+s of each byte moved to bit 2; 16-bit shifts only spill into bits the mask drops.
            var third0 = half == 0 ? Avx2.ShiftLeftLogical(third, 2) : Avx2.ShiftRightLogical(third, 2);
            var third1 = half == 0 ? Avx2.ShiftLeftLogical(third, 1) : Avx2.ShiftRightLogical(third, 3);
            var third2 = half == 0 ? third : Avx2.ShiftRightLogical(third, 4);
            var third3 = half == 0 ? Avx2.ShiftRightLogical(third, 1) : Avx2.ShiftRightLogical(third, 5);
            sum = KQuantKernels.ScaledDot<TDot>(sum, (bits.AsByte() & twoBits) | (third0.AsByte() & bit2), x, scales.AsByte(), 4 * half, signedScales: true);
            sum = KQuantKernels.ScaledDot<TDot>(sum, (Avx2.ShiftRightLogical(bits, 2).AsByte() & twoBits) | (third1.AsByte() & bit2), x + 32, scales.AsByte(), 4 * half + 1, signedScales: true);
            sum = KQuantKernels.ScaledDot<TDot>(sum, (Avx2.ShiftRightLogical(bits, 4).AsByte() & twoBits) | (third2.AsByte() & bit2), x + 64, scales.AsByte(), 4 * half + 2, signedScales: true);
            sum = KQuantKernels.ScaledDot<TDot>(sum, (Avx2.ShiftRightLogical(bits, 6).AsByte() & twoBits) | (third3.AsByte() & bit2), x + 96, scales.AsByte(), 4 * half + 3, signedScales: true);
        }
        return Fma.MultiplyAdd(Avx.ConvertToVector256Single(sum), Vector256.Create(d), acc);
    }

    /// <summary>The 16 group scales minus 32, from their 12-byte packing (llama.cpp's kmask shuffle on 32-bit words).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector128<sbyte> UnpackScales(byte* packed)
    {
        const uint low4 = 0x0f0f0f0f, low2 = 0x03030303;
        uint w0 = *(uint*)packed, w1 = *(uint*)(packed + 4), top = *(uint*)(packed + 8);
        var unbiased = Vector128.Create(
            (w0 & low4) | ((top & low2) << 4),
            (w1 & low4) | (((top >> 2) & low2) << 4),
            ((w0 >> 4) & low4) | (((top >> 4) & low2) << 4),
            ((w1 >> 4) & low4) | (((top >> 6) & low2) << 4)).AsSByte();
        return unbiased - Vector128.Create((sbyte)32);
    }

    public static bool MinsScaledByD => true;

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Unpack(byte* block, UnpackedSuperBlock* unpacked)
    {
        float d = F16Row.ToSingle(*(ushort*)(block + 108));
        unpacked->D = d;
        unpacked->DMin = d;
        var scales = UnpackScales(block + 96);
        // q − 4 becomes a min of 4·scale per group.
        Avx.Store(unpacked->Mins, Avx2.ShiftLeftLogical(Avx2.ConvertToVector256Int16(scales), 2));
        var twoBits = Vector256.Create((byte)3);
        var bit2 = Vector256.Create((byte)4);
        var third = Avx.LoadVector256(block);
        for (int half = 0; half < 2; half++)
        {
            var bits = Avx.LoadVector256(block + 32 + 32 * half).AsUInt16();
            for (int shift = 0; shift < 4; shift++)
            {
                var thirdClear = Vector256.Equals(third & Vector256.Create((byte)(1 << (4 * half + shift))), Vector256<byte>.Zero);
                unpacked->SetChunk(4 * half + shift,
                    (Avx2.ShiftRightLogical(bits, Vector128.CreateScalar((ushort)(2 * shift))).AsByte() & twoBits) | Vector256.AndNot(bit2, thirdClear),
                    KQuantKernels.ChunkScales(scales.AsByte(), 4 * half + shift, signedScales: true));
            }
        }
    }
}

/// <summary>
/// AVX2 kernels for the K-quants. Per super-block the integer dots of each sub-block are weighted by its integer
/// scale with <c>madd</c> (or AVX-VNNI's <c>vpdpwssd</c>, which also accumulates) and summed as int32, so there is
/// one float conversion per 256 values; the mins and offsets multiply the activation group sums instead of every
/// value.
/// </summary>
internal static unsafe class KQuantKernels
{
    /// <summary>Shuffle masks: 8 copies of byte 2p then 8 of byte 2p+1, for p = 0..7.</summary>
    private static readonly byte* SplitPairMasks = CreateMasks(16, p => i => (byte)(2 * p + (i >= 8 ? 1 : 0)));

    private const int TokenTile = 4;

    /// <summary>
    /// Fewest tokens for which types with <see cref="IKBlock.PackedDot4"/> unpack a row chunk to memory: below it
    /// the stores of <see cref="IKBlock.Unpack"/> cost more than unpacking in registers once per four tokens.
    /// </summary>
    private const int UnpackTokens = 16;

    /// <summary>
    /// Bytes of <see cref="MatMulTask.RowScratch"/> per thread that <see cref="Rows{TBlock, TDot}"/> needs, or with
    /// <paramref name="wide"/> <see cref="KQuantWideKernels.Rows{TBlock, TDot}"/>.
    /// </summary>
    public static long ScratchBytes(GgmlType type, int cols, int tokens, int chunkRows, bool wide) =>
        tokens < (type is GgmlType.Q6_K or GgmlType.Q4_K or GgmlType.Q5_K ? UnpackTokens : TokenTile) || GgmlTypeInfo.BlockSize(type) != GgmlTypeInfo.QK_K ? 0
            : wide && type is GgmlType.Q4_K ? Q4_KRowGroupKernels.ScratchBytes(cols)
            : wide && type is GgmlType.Q6_K ? Math.Max(KQuantWideKernels.ScratchBytes(cols, chunkRows), Q6_KRowGroupKernels.ScratchBytes(cols))
            : wide ? KQuantWideKernels.ScratchBytes(cols, chunkRows)
            : (long)chunkRows * (cols / GgmlTypeInfo.QK_K) * sizeof(UnpackedSuperBlock);

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Rows<TBlock, TDot>(MatMulTask* task, int rowStart, int rowEnd, int threadIndex)
        where TBlock : IKBlock where TDot : IIntegerDot
    {
        int cols = task->W.Cols, rows = task->W.Rows, tokens = task->Tokens, blocks = cols / 256;
        ActivationQuantizer.Layout256(task->Activations, cols, tokens, out sbyte* quants, out float* scales, out short* groupSums);
        int tiled = 0;
        if (TBlock.HasPackedDot4 && tokens < UnpackTokens)
        {
            // Three tokens left over fill a tile by repeating the last: one tile costs less than three tokens alone,
            // but about as much as two.
            int* tile = stackalloc int[TokenTile];
            for (; tokens - tiled >= 3; tiled = Math.Min(tiled + TokenTile, tokens))
            {
                for (int k = 0; k < TokenTile; k++) tile[k] = Math.Min(tiled + k, tokens - 1);
                for (int r = rowStart; r < rowEnd; r++)
                    TBlock.PackedDot4<TDot>(task->W.Row(r), blocks, quants, scales, groupSums, tile, task->Y + r, rows);
            }
        }
        else if (UnpacksFor<TBlock>(tokens))
        {
            var unpacked = (UnpackedSuperBlock*)(task->RowScratch + threadIndex * task->RowScratchBytes);
            for (int r = rowStart; r < rowEnd; r++)
                for (int b = 0; b < blocks; b++)
                    TBlock.Unpack(task->W.Row(r) + (long)b * TBlock.BlockBytes, unpacked + (long)(r - rowStart) * blocks + b);
            // Token tiles outside, rows inside: a tile's activations stay in L1 while the unpacked chunk streams from L2.
            for (; tiled + TokenTile <= tokens; tiled += TokenTile)
                for (int r = rowStart; r < rowEnd; r++)
                    Dot4<TBlock, TDot>(unpacked + (long)(r - rowStart) * blocks, blocks, quants + (long)tiled * cols, cols,
                        scales + (long)tiled * blocks, groupSums + (long)tiled * (cols / 16), task->Y + (long)tiled * rows + r, rows);
        }
        TokensAlone<TBlock, TDot>(task, rowStart, rowEnd, tiled);
    }

    /// <summary>Whether prefill of <paramref name="tokens"/> tokens unpacks a row chunk to memory.</summary>
    internal static bool UnpacksFor<TBlock>(int tokens) where TBlock : IKBlock =>
        tokens >= (TBlock.HasPackedDot4 ? UnpackTokens : TokenTile);

    /// <summary>Tokens <paramref name="firstToken"/> onwards, each alone against the packed rows.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    internal static void TokensAlone<TBlock, TDot>(MatMulTask* task, int rowStart, int rowEnd, int firstToken)
        where TBlock : IKBlock where TDot : IIntegerDot
    {
        int cols = task->W.Cols, rows = task->W.Rows, tokens = task->Tokens, blocks = cols / 256;
        ActivationQuantizer.Layout256(task->Activations, cols, tokens, out sbyte* quants, out float* scales, out short* groupSums);
        for (int t = firstToken; t < tokens; t++)
        {
            sbyte* xq = quants + (long)t * cols;
            float* xd = scales + (long)t * blocks;
            short* xs = groupSums + (long)t * (cols / 16);
            for (int r = rowStart; r < rowEnd; r++)
            {
                byte* row = task->W.Row(r);
                Vector256<float> acc = default;
                for (int b = 0; b < blocks; b++)
                    acc = TBlock.Accumulate<TDot>(row + (long)b * TBlock.BlockBytes, xq + b * 256, xd[b], xs + b * 16, acc);
                task->Y[(long)t * rows + r] = Result<TBlock>(acc);
            }
        }
    }

    /// <summary>One unpacked row against four tokens.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Dot4<TBlock, TDot>(UnpackedSuperBlock* row, int blocks, sbyte* xq, long cols, float* xd, short* groupSums, float* y, int yStride)
        where TBlock : IKBlock where TDot : IIntegerDot
    {
        long sumsStride = cols / 16;
        Vector256<float> acc0 = default, acc1 = default, acc2 = default, acc3 = default;
        for (int b = 0; b < blocks; b++)
        {
            UnpackedSuperBlock* u = row + b;
            sbyte* x = xq + b * 256;
            Vector256<int> sum0 = default, sum1 = default, sum2 = default, sum3 = default;
            for (int chunk = 0; chunk < 8; chunk++)
            {
                var q = Avx.LoadVector256(u->Quants + 32 * chunk);
                var scale = Avx.LoadVector256(u->ChunkScales + 16 * chunk);
                sbyte* xc = x + 32 * chunk;
                sum0 = TDot.WeightedDotAdd(sum0, q, Avx.LoadVector256(xc), scale);
                sum1 = TDot.WeightedDotAdd(sum1, q, Avx.LoadVector256(xc + cols), scale);
                sum2 = TDot.WeightedDotAdd(sum2, q, Avx.LoadVector256(xc + 2 * cols), scale);
                sum3 = TDot.WeightedDotAdd(sum3, q, Avx.LoadVector256(xc + 3 * cols), scale);
            }
            var mins = Avx.LoadVector256(u->Mins);
            short* gs = groupSums + 16 * b;
            acc0 = AddSuperBlock<TBlock>(acc0, sum0, Avx2.MultiplyAddAdjacent(mins, Avx.LoadVector256(gs)), u, xd[b]);
            acc1 = AddSuperBlock<TBlock>(acc1, sum1, Avx2.MultiplyAddAdjacent(mins, Avx.LoadVector256(gs + sumsStride)), u, xd[blocks + b]);
            acc2 = AddSuperBlock<TBlock>(acc2, sum2, Avx2.MultiplyAddAdjacent(mins, Avx.LoadVector256(gs + 2 * sumsStride)), u, xd[2 * blocks + b]);
            acc3 = AddSuperBlock<TBlock>(acc3, sum3, Avx2.MultiplyAddAdjacent(mins, Avx.LoadVector256(gs + 3 * sumsStride)), u, xd[3 * blocks + b]);
        }
        y[0] = Result<TBlock>(acc0);
        y[yStride] = Result<TBlock>(acc1);
        y[2L * yStride] = Result<TBlock>(acc2);
        y[3L * yStride] = Result<TBlock>(acc3);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> AddSuperBlock<TBlock>(Vector256<float> acc, Vector256<int> scaledSum, Vector256<int> minSum, UnpackedSuperBlock* u, float xd)
        where TBlock : IKBlock
    {
        // Then the lanes and the one rounding are those of Accumulate, so a token's result does not depend on
        // whether its batch was large enough to unpack.
        if (TBlock.MinsScaledByD)
            return Fma.MultiplyAdd(Avx.ConvertToVector256Single(scaledSum - minSum), Vector256.Create(u->D * xd), acc);
        if (TBlock.SumsExactTotals)
            return AddExactTotals(acc, scaledSum, minSum, u->D * xd, u->DMin * xd);
        return AddSuperBlock(acc, scaledSum, Avx.ConvertToVector256Single(minSum), u->D * xd, u->DMin * xd);
    }

    /// <summary>
    /// One super-block of Q4_K or Q5_K against one token: the sub-blocks' integer dots weighted by their 6-bit
    /// scales, and Σ min·x from the activation group sums.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static Vector256<float> AccumulateSubBlockMin<TBlock, TDot>(byte* block, sbyte* xq, float xd, short* groupSums, Vector256<float> acc)
        where TBlock : ISubBlockMinBlock where TDot : IIntegerDot
    {
        var dAndMin = F16Row.PairToSingle(*(uint*)block) * Vector128.Create(xd); // d·dx, dmin·dx
        var scalesAndMins = ScalesAndMins(block + 4);
        var sum = SubBlockPairDot<TBlock, TDot>(default, block, xq, scalesAndMins, 0);
        sum = SubBlockPairDot<TBlock, TDot>(sum, block, xq, scalesAndMins, 1);
        sum = SubBlockPairDot<TBlock, TDot>(sum, block, xq, scalesAndMins, 2);
        sum = SubBlockPairDot<TBlock, TDot>(sum, block, xq, scalesAndMins, 3);
        return AddSubBlockMinSuperBlock<TBlock>(acc, sum, Q4_KBlock.MinsPerGroup(scalesAndMins), groupSums, dAndMin.ToScalar(), dAndMin.GetElement(1));
    }

    /// <summary>Sub-blocks 2j and 2j+1 against the token's activations, weighted by their scales.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<int> SubBlockPairDot<TBlock, TDot>(Vector256<int> sum, byte* block, sbyte* xq, Vector256<byte> scalesAndMins, int j)
        where TBlock : ISubBlockMinBlock where TDot : IIntegerDot
    {
        TBlock.SubBlockPairQuants(block, j, out var low, out var high);
        sum = TDot.WeightedDotAdd(sum, low, Avx.LoadVector256(xq + 64 * j), SubBlockScale(scalesAndMins, 2 * j));
        return TDot.WeightedDotAdd(sum, high, Avx.LoadVector256(xq + 64 * j + 32), SubBlockScale(scalesAndMins, 2 * j + 1));
    }

    /// <summary>Rewrites a Q4_K or Q5_K super-block in the common unpacked form.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    internal static void UnpackSubBlockMin<TBlock>(byte* block, UnpackedSuperBlock* unpacked) where TBlock : ISubBlockMinBlock
    {
        Q4_KBlock.UnpackScalesOf(block, unpacked, out var scalesAndMins);
        for (int j = 0; j < 4; j++)
        {
            TBlock.SubBlockPairQuants(block, j, out var low, out var high);
            unpacked->SetChunk(2 * j, low, SubBlockScale(scalesAndMins, 2 * j));
            unpacked->SetChunk(2 * j + 1, high, SubBlockScale(scalesAndMins, 2 * j + 1));
        }
    }

    /// <summary>
    /// For batches too small to repay <see cref="IKBlock.Unpack"/>'s stores, in types with 8 sub-blocks that carry
    /// their own 6-bit scale and min (Q4_K, Q5_K): each pair of sub-blocks is unpacked once, in registers, for all
    /// four tokens, and each token is summed exactly as the type's Accumulate sums it.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    internal static void PackedDot4<TBlock, TDot>(byte* row, int blocks, sbyte* quants, float* xScales, short* groupSums, int* tokens, float* y, int yStride)
        where TBlock : ISubBlockMinBlock where TDot : IIntegerDot
    {
        long cols = blocks * 256L;
        sbyte* x0 = quants + tokens[0] * cols, x1 = quants + tokens[1] * cols, x2 = quants + tokens[2] * cols, x3 = quants + tokens[3] * cols;
        short* g0 = groupSums + tokens[0] * cols / 16, g1 = groupSums + tokens[1] * cols / 16;
        short* g2 = groupSums + tokens[2] * cols / 16, g3 = groupSums + tokens[3] * cols / 16;
        Vector256<float> acc0 = default, acc1 = default, acc2 = default, acc3 = default;
        Vector256<float> exactAccs = default; // token t's accumulator in lane 2t, for exact totals
        for (int b = 0; b < blocks; b++)
        {
            byte* block = row + (long)b * TBlock.BlockBytes;
            var scalesAndMins = ScalesAndMins(block + 4);
            Vector256<int> sum0 = default, sum1 = default, sum2 = default, sum3 = default;
            for (int j = 0; j < 4; j++)
            {
                TBlock.SubBlockPairQuants(block, j, out var low, out var high);
                var lowScales = SubBlockScale(scalesAndMins, 2 * j);
                var highScales = SubBlockScale(scalesAndMins, 2 * j + 1);
                int offset = b * 256 + 64 * j;
                sum0 = TDot.WeightedDotAdd(TDot.WeightedDotAdd(sum0, low, Avx.LoadVector256(x0 + offset), lowScales), high, Avx.LoadVector256(x0 + offset + 32), highScales);
                sum1 = TDot.WeightedDotAdd(TDot.WeightedDotAdd(sum1, low, Avx.LoadVector256(x1 + offset), lowScales), high, Avx.LoadVector256(x1 + offset + 32), highScales);
                sum2 = TDot.WeightedDotAdd(TDot.WeightedDotAdd(sum2, low, Avx.LoadVector256(x2 + offset), lowScales), high, Avx.LoadVector256(x2 + offset + 32), highScales);
                sum3 = TDot.WeightedDotAdd(TDot.WeightedDotAdd(sum3, low, Avx.LoadVector256(x3 + offset), lowScales), high, Avx.LoadVector256(x3 + offset + 32), highScales);
            }
            var dAndMin = F16Row.PairToSingle(*(uint*)block);
            float d = dAndMin.ToScalar(), dMin = dAndMin.GetElement(1);
            var mins = Q4_KBlock.MinsPerGroup(scalesAndMins);
            float xd0 = xScales[tokens[0] * blocks + b], xd1 = xScales[tokens[1] * blocks + b];
            float xd2 = xScales[tokens[2] * blocks + b], xd3 = xScales[tokens[3] * blocks + b];
            if (TBlock.SumsExactTotals)
            {
                exactAccs = AddExactTotals4(exactAccs, sum0, sum1, sum2, sum3,
                    Avx2.MultiplyAddAdjacent(mins, Avx.LoadVector256(g0 + 16 * b)), Avx2.MultiplyAddAdjacent(mins, Avx.LoadVector256(g1 + 16 * b)),
                    Avx2.MultiplyAddAdjacent(mins, Avx.LoadVector256(g2 + 16 * b)), Avx2.MultiplyAddAdjacent(mins, Avx.LoadVector256(g3 + 16 * b)),
                    dAndMin, Vector256.Create(xd0, xd0, xd1, xd1, xd2, xd2, xd3, xd3));
                continue;
            }
            acc0 = AddSubBlockMinSuperBlock<TBlock>(acc0, sum0, mins, g0 + 16 * b, d * xd0, dMin * xd0);
            acc1 = AddSubBlockMinSuperBlock<TBlock>(acc1, sum1, mins, g1 + 16 * b, d * xd1, dMin * xd1);
            acc2 = AddSubBlockMinSuperBlock<TBlock>(acc2, sum2, mins, g2 + 16 * b, d * xd2, dMin * xd2);
            acc3 = AddSubBlockMinSuperBlock<TBlock>(acc3, sum3, mins, g3 + 16 * b, d * xd3, dMin * xd3);
        }
        if (TBlock.SumsExactTotals)
        {
            y[(long)tokens[0] * yStride] = exactAccs.GetElement(0);
            y[(long)tokens[1] * yStride] = exactAccs.GetElement(2);
            y[(long)tokens[2] * yStride] = exactAccs.GetElement(4);
            y[(long)tokens[3] * yStride] = exactAccs.GetElement(6);
            return;
        }
        y[(long)tokens[0] * yStride] = Vector256.Sum(acc0);
        y[(long)tokens[1] * yStride] = Vector256.Sum(acc1);
        y[(long)tokens[2] * yStride] = Vector256.Sum(acc2);
        y[(long)tokens[3] * yStride] = Vector256.Sum(acc3);
    }

    /// <summary>
    /// Reorders each 64 bytes of a token's quants (<paramref name="cols"/> of them) as 32 words, output word i being
    /// input word <paramref name="order"/>[i]: the activation layouts of the AVX-512 row-group kernels.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    internal static void PermuteWords(sbyte* quants, int cols, Vector512<ushort> order)
    {
        for (int i = 0; i < cols; i += 64)
            Vector512.Store(Avx512BW.PermuteVar32x16(Vector512.Load((ushort*)(quants + i)), order), (ushort*)(quants + i));
    }

    /// <summary>
    /// One super-block of a type with sub-block mins (Q4_K, Q5_K) added to <paramref name="acc"/>: its scaled sums
    /// <paramref name="sum"/> and Σ min·x from <paramref name="minsPerGroup"/> and the activation group sums, as exact
    /// totals where the type sums them (<see cref="IKBlock.SumsExactTotals"/>), else lane by lane.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> AddSubBlockMinSuperBlock<TBlock>(Vector256<float> acc, Vector256<int> sum, Vector256<short> minsPerGroup, short* groupSums,
        float scale, float minScale) where TBlock : IKBlock =>
        TBlock.SumsExactTotals
            ? AddExactTotals(acc, sum, Avx2.MultiplyAddAdjacent(minsPerGroup, Avx.LoadVector256(groupSums)), scale, minScale)
            : AddSuperBlock(acc, sum, Q4_KBlock.MinTerm(minsPerGroup, groupSums), scale, minScale);

    /// <summary>
    /// The definition of <see cref="IKBlock.SumsExactTotals"/>: T1, the sum of <paramref name="scaledSums"/>' 8
    /// lanes, and T2, the sum of <paramref name="minSums"/>' (exact integers, so any order gives them), converted to
    /// float, then acc = fma(T1, scale, acc) and acc = fma(−T2, minScale, acc) on lane 0, the row and token's one
    /// accumulator, super-block by super-block. Every kernel of such a type adds a super-block this way, so a
    /// token's result is the same float whichever kernel and batch computed it.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static Vector256<float> AddExactTotals(Vector256<float> acc, Vector256<int> scaledSums, Vector256<int> minSums, float scale, float minScale)
    {
        var pairs = Avx2.HorizontalAdd(scaledSums, minSums); // s01 s23 m01 m23 | s45 s67 m45 m67
        var quads = Avx2.HorizontalAdd(pairs, pairs); // s0123 m0123 (twice) | s4567 m4567 (twice)
        var totals = Sse2.ConvertToVector128Single(quads.GetLower() + quads.GetUpper()); // T1, T2, T1, T2
        float a = MathF.FusedMultiplyAdd(totals.ToScalar(), scale, acc.ToScalar());
        return Vector256.CreateScalarUnsafe(MathF.FusedMultiplyAdd(-totals.GetElement(1), minScale, a));
    }

    /// <summary>
    /// <see cref="AddExactTotals"/> for four tokens at once, token t's accumulator in lane 2t of <paramref name="accs"/>
    /// (the odd lanes are unused): the eight totals reduced together and the float updates in one vector, the same
    /// operations on each token's values. <paramref name="xdPairs"/> holds each token's activation scale twice.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> AddExactTotals4(Vector256<float> accs, Vector256<int> sum0, Vector256<int> sum1, Vector256<int> sum2, Vector256<int> sum3,
        Vector256<int> minSum0, Vector256<int> minSum1, Vector256<int> minSum2, Vector256<int> minSum3, Vector128<float> dAndMin, Vector256<float> xdPairs)
    {
        var tokens01 = Avx2.HorizontalAdd(Avx2.HorizontalAdd(sum0, minSum0), Avx2.HorizontalAdd(sum1, minSum1)); // T1, T2 of tokens 0, 1: lanes 0-3 | 4-7
        var tokens23 = Avx2.HorizontalAdd(Avx2.HorizontalAdd(sum2, minSum2), Avx2.HorizontalAdd(sum3, minSum3));
        var totals = Avx.ConvertToVector256Single(Avx2.Permute2x128(tokens01, tokens23, 0x20) + Avx2.Permute2x128(tokens01, tokens23, 0x31));
        var scales = Avx2.BroadcastScalarToVector256(dAndMin.AsDouble()).AsSingle() * xdPairs; // d·dx, dmin·dx per token
        accs = Fma.MultiplyAdd(totals, scales, accs);
        return Fma.MultiplyAddNegated(Avx.DuplicateOddIndexed(totals), Avx.DuplicateOddIndexed(scales), accs);
    }

    /// <summary>
    /// A row and token's result from its accumulator: lane 0 where the type sums exact totals
    /// (<see cref="IKBlock.SumsExactTotals"/>), else the sum of the 8 lanes in <see cref="Vector256.Sum{T}(Vector256{T})"/>'s order.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static float Result<TBlock>(Vector256<float> acc) where TBlock : IKBlock =>
        TBlock.SumsExactTotals ? acc.ToScalar() : Vector256.Sum(acc);

    /// <summary>
    /// acc + scale·sum − minScale·minTerm, for the types whose mins have their own scale: every kernel adds a
    /// super-block through here, so a token's sum rounds the same way whichever kernel computed it.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static Vector256<float> AddSuperBlock(Vector256<float> acc, Vector256<int> sum, Vector256<float> minTerm, float scale, float minScale)
    {
        acc = Fma.MultiplyAdd(Avx.ConvertToVector256Single(sum), Vector256.Create(scale), acc);
        return Fma.MultiplyAddNegated(minTerm, Vector256.Create(minScale), acc);
    }

    /// <summary>
    /// Sub-block <paramref name="k"/>'s scale of <see cref="ScalesAndMins"/>' result in all 16 int16 lanes: one
    /// vpshufb whose zeroing indices (0x80) supply the high bytes, with a constant mask (k is a constant once inlined).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static Vector256<short> SubBlockScale(Vector256<byte> scalesAndMins, int k) =>
        Avx2.Shuffle(scalesAndMins, Vector256.Create((ushort)(0x8000 | k)).AsByte()).AsInt16();

    /// <summary>
    /// <paramref name="sum"/> plus Σ q·x over 32 values in two groups of 16 with their own 8-bit scales, entries
    /// 2·<paramref name="pair"/> and 2·<paramref name="pair"/>+1 of <paramref name="scales"/>, signed or unsigned.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static Vector256<int> ScaledDot<TDot>(Vector256<int> sum, Vector256<byte> q, sbyte* x, Vector128<byte> scales, int pair, bool signedScales)
        where TDot : IIntegerDot =>
        TDot.WeightedDotAdd(sum, q, Avx.LoadVector256(x), ChunkScales(scales, pair, signedScales));

    /// <summary>Each byte shifted right by 4 (its high nibble): with GFNI one <c>gf2p8affineqb</c> instead of a shift and a mask.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static Vector256<byte> HighNibbles(Vector256<byte> bits) =>
        // Row 7−i of the bit matrix picks the input bit that becomes output bit i: bits 4..7 for i = 0..3, none above.
        Gfni.V256.IsSupported ? Gfni.V256.GaloisFieldAffineTransform(bits, Vector256.Create(0x10_20_40_80_00_00_00_00UL).AsByte(), 0)
            : Avx2.ShiftRightLogical(bits.AsUInt16(), 4).AsByte() & Vector256.Create((byte)0x0F);

    /// <summary>
    /// Bits <paramref name="from"/> and <paramref name="from"/>+1 of each byte moved to bits 4-5, the others cleared
    /// (Q6_K's high pairs): with GFNI one <c>gf2p8affineqb</c> instead of a shift and a mask.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static Vector256<byte> PairToBits4And5(Vector256<byte> bits, int from)
    {
        if (Gfni.V256.IsSupported)
            return Gfni.V256.GaloisFieldAffineTransform(bits, Vector256.Create((ulong)(1 << from) << 24 | (ulong)(2 << from) << 16).AsByte(), 0);
        // Shifting 16-bit lanes moves bits across the byte boundary too, but the mask keeps only bits 4-5.
        var pairMask = Vector256.Create((byte)0x30);
        var words = bits.AsUInt16();
        return from switch
        {
            0 => Avx2.ShiftLeftLogical(words, 4).AsByte() & pairMask,
            2 => Avx2.ShiftLeftLogical(words, 2).AsByte() & pairMask,
            4 => bits & pairMask,
            6 => Avx2.ShiftRightLogical(words, 2).AsByte() & pairMask,
            _ => throw new ArgumentOutOfRangeException(nameof(from)),
        };
    }

    /// <summary>
    /// Int16 elements 2·<paramref name="pair"/> and 2·<paramref name="pair"/>+1 of 8, which <paramref name="words"/>
    /// holds in both 128-bit lanes, each in 8 int16 lanes: what <see cref="ChunkScales"/> makes of the same scales as bytes.
    /// The mask is a constant once inlined (pair is), so it is a memory operand of the vpshufb rather than a load
    /// from a table whose address takes an instruction of its own.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static Vector256<short> ChunkScalesOfWords(Vector256<byte> words, int pair) =>
        Avx2.Shuffle(words, Vector256.Create(
            Vector128.Create((ushort)((4 * pair + 1) << 8 | 4 * pair)),
            Vector128.Create((ushort)((4 * pair + 3) << 8 | (4 * pair + 2)))).AsByte()).AsInt16();

    /// <summary>Scales 2·<paramref name="pair"/> and 2·<paramref name="pair"/>+1 of 16 8-bit ones, each in 8 int16 lanes.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static Vector256<short> ChunkScales(Vector128<byte> scales, int pair, bool signedScales)
    {
        var split = Ssse3.Shuffle(scales, Sse2.LoadVector128(SplitPairMasks + 16 * pair));
        return signedScales ? Avx2.ConvertToVector256Int16(split.AsSByte()) : Avx2.ConvertToVector256Int16(split).AsInt16();
    }

    /// <summary>
    /// Unpacks the 12-byte 6-bit scales and mins of Q4_K and Q5_K (llama.cpp's <c>get_scale_min_k4</c> on 32-bit
    /// words) into 16 bytes, scales 0..7 then mins 0..7, in both 128-bit lanes. The four words are computed side by
    /// side in vector lanes: scales 0..3 = w0 &amp; 0x3f.., scales 4..7 = (w2 &amp; 0x0f..) | (w0 bits 6-7 at 4-5),
    /// mins 0..3 = w1 &amp; 0x3f.., mins 4..7 = (w2 &gt;&gt; 4 &amp; 0x0f..) | (w1 bits 6-7 at 4-5): eight vector
    /// instructions where the scalar form took some thirty (loads, shifts, masks and inserts into a vector).
    /// Reads 16 bytes from <paramref name="packed"/>; the last 4 belong to the quants and are ignored.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static Vector256<byte> ScalesAndMins(byte* packed)
    {
        var words = Avx2.BroadcastVector128ToVector256((uint*)packed); // w0 w1 w2 (w3) in each lane
        var lowBits = Avx2.ShiftRightLogicalVariable(Avx2.Shuffle(words, 0b10_01_10_00), Vector256.Create(0u, 0, 0, 4, 0, 0, 0, 4)); // w0, w2, w1, w2 >> 4
        var highPairs = Avx2.ShiftRightLogical(Avx2.Shuffle(words, 0b01_01_00_00), 2); // w0, w0, w1, w1: bits 6-7 of each byte at 4-5
        return ((lowBits & Vector256.Create(0x3f3f3f3fu, 0x0f0f0f0f, 0x3f3f3f3f, 0x0f0f0f0f, 0x3f3f3f3f, 0x0f0f0f0f, 0x3f3f3f3f, 0x0f0f0f0f))
            | (highPairs & Vector256.Create(0u, 0x30303030, 0, 0x30303030, 0, 0x30303030, 0, 0x30303030))).AsByte();
    }

    private static byte* CreateMasks(int width, Func<int, Func<int, byte>> maskByte)
    {
        // Process-lifetime constants, in native memory so the kernels load them without bounds checks.
        byte* masks = (byte*)NativeMemory.AlignedAlloc((nuint)(8 * width), 32);
        for (int k = 0; k < 8; k++)
            for (int i = 0; i < width; i++)
                masks[width * k + i] = maskByte(k)(i);
        return masks;
    }
}
