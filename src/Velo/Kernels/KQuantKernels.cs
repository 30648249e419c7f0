using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Velo.Kernels;

/// <summary>A K-quant type: 256-element super-blocks multiplied against activations in 256-blocks.</summary>
internal unsafe interface IKBlock
{
    static abstract int BlockBytes { get; }

    /// <summary>
    /// Adds one super-block's dot product with one token to <paramref name="acc"/> (its lanes are summed at the
    /// end): <paramref name="xd"/> is the activation block's scale, <paramref name="groupSums"/> its 16 sums of 16.
    /// </summary>
    static abstract Vector256<float> Accumulate(byte* block, sbyte* xq, float xd, short* groupSums, Vector256<float> acc);
}

/// <summary>
/// Q4_K: fp16 d and dmin, 12 bytes of packed 6-bit scales and mins for 8 sub-blocks of 32, 128 bytes of nibbles
/// (each 32 bytes hold two sub-blocks: low nibbles then high). Value = d·scale·q − dmin·min.
/// </summary>
internal unsafe struct Q4_KBlock : IKBlock
{
    public static int BlockBytes => 144;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> Accumulate(byte* block, sbyte* xq, float xd, short* groupSums, Vector256<float> acc)
    {
        var dAndMin = F16Row.PairToSingle(*(uint*)block) * Vector128.Create(xd); // d·dx, dmin·dx
        var scalesAndMins = KQuantKernels.UnpackScalesAndMins(block + 4); // int16: 8 scales, then 8 mins

        // Σ min·x over a sub-block is min · Σx, and Σx per 32 is the sum of two activation group sums.
        var sums16 = Avx.LoadVector256(groupSums);
        var pairSums = Ssse3.HorizontalAdd(sums16.GetLower(), sums16.GetUpper());
        var minTerm = Sse2.ConvertToVector128Single(Sse2.MultiplyAddAdjacent(scalesAndMins.GetUpper(), pairSums));

        var scales = Vector256.Create(scalesAndMins.GetLower(), scalesAndMins.GetLower()).AsByte();
        byte* qs = block + 16;
        var sum = SubBlockPair(qs, xq, scales, 0) + SubBlockPair(qs + 32, xq + 64, scales, 1)
                + SubBlockPair(qs + 64, xq + 128, scales, 2) + SubBlockPair(qs + 96, xq + 192, scales, 3);
        acc = Fma.MultiplyAdd(Avx.ConvertToVector256Single(sum), Vector256.Create(dAndMin.ToScalar()), acc);
        return Fma.MultiplyAddNegated(minTerm.ToVector256(), Avx2.BroadcastScalarToVector256(Sse3.MoveHighAndDuplicate(dAndMin)), acc);
    }

    /// <summary>Sub-blocks 2j (low nibbles of 32 bytes) and 2j+1 (high nibbles), weighted by their scales.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<int> SubBlockPair(byte* qs, sbyte* x, Vector256<byte> scales, int j)
    {
        var nibbleMask = Vector256.Create((byte)0x0F);
        var bits = Avx.LoadVector256(qs);
        var lowDot = Avx2.MultiplyAddAdjacent(bits & nibbleMask, Avx.LoadVector256(x));
        var highDot = Avx2.MultiplyAddAdjacent(Avx2.ShiftRightLogical(bits.AsUInt16(), 4).AsByte() & nibbleMask, Avx.LoadVector256(x + 32));
        return Avx2.MultiplyAddAdjacent(lowDot, Avx2.Shuffle(scales, KQuantKernels.BroadcastInt16(2 * j)).AsInt16())
             + Avx2.MultiplyAddAdjacent(highDot, Avx2.Shuffle(scales, KQuantKernels.BroadcastInt16(2 * j + 1)).AsInt16());
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
    public static Vector256<float> Accumulate(byte* block, sbyte* xq, float xd, short* groupSums, Vector256<float> acc)
    {
        float d = F16Row.ToSingle(*(ushort*)(block + 208)) * xd;
        var scales = Sse2.LoadVector128((sbyte*)(block + 192));

        // The −32 offset contributes −32 · Σ scale·Σx over the 16 groups: one madd against the group sums
        // instead of a subtraction per value.
        var offsetTerm = Avx2.MultiplyAddAdjacent(Avx2.ConvertToVector256Int16(scales), Avx.LoadVector256(groupSums));
        var sum = Vector256<int>.Zero - Avx2.ShiftLeftLogical(offsetTerm, 5);

        var nibbleMask = Vector256.Create((byte)0x0F);
        var pairMask = Vector256.Create((byte)0x30);
        for (int half = 0; half < 2; half++)
        {
            byte* ql = block + 64 * half;
            byte* qh = block + 128 + 32 * half;
            sbyte* x = xq + 128 * half;
            var low0 = Avx.LoadVector256(ql);
            var low1 = Avx.LoadVector256(ql + 32);
            var high = Avx.LoadVector256(qh).AsUInt16();
            // Shifting 16-bit lanes moves bits across the byte boundary too, but the mask keeps only bits 4-5.
            var q0 = (low0 & nibbleMask) | (Avx2.ShiftLeftLogical(high, 4).AsByte() & pairMask);
            var q1 = (low1 & nibbleMask) | (Avx2.ShiftLeftLogical(high, 2).AsByte() & pairMask);
            var q2 = (Avx2.ShiftRightLogical(low0.AsUInt16(), 4).AsByte() & nibbleMask) | (high.AsByte() & pairMask);
            var q3 = (Avx2.ShiftRightLogical(low1.AsUInt16(), 4).AsByte() & nibbleMask) | (Avx2.ShiftRightLogical(high, 2).AsByte() & pairMask);
            sum += ScaledDot(q0, x, scales, 4 * half);
            sum += ScaledDot(q1, x + 32, scales, 4 * half + 1);
            sum += ScaledDot(q2, x + 64, scales, 4 * half + 2);
            sum += ScaledDot(q3, x + 96, scales, 4 * half + 3);
        }
        return Fma.MultiplyAdd(Avx.ConvertToVector256Single(sum), Vector256.Create(d), acc);
    }

    /// <summary>Σ q·x over 32 values whose first 16 use scale 2·<paramref name="pair"/> and the rest the next one.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<int> ScaledDot(Vector256<byte> q, sbyte* x, Vector128<sbyte> scales, int pair)
    {
        var scale16 = Avx2.ConvertToVector256Int16(Ssse3.Shuffle(scales, KQuantKernels.SplitPair(pair)));
        return Avx2.MultiplyAddAdjacent(Avx2.MultiplyAddAdjacent(q, Avx.LoadVector256(x)), scale16);
    }
}

/// <summary>
/// AVX2 kernels for the K-quants. Per super-block the integer dots of each sub-block are weighted by its integer
/// scale with <c>madd</c> and summed as int32, so there is one float conversion per 256 values; the mins and
/// offsets multiply the activation group sums instead of every value.
/// </summary>
internal static unsafe class KQuantKernels
{
    /// <summary>Shuffle masks: 32 bytes repeating bytes 2k and 2k+1 (int16 element k of each lane), for k = 0..7.</summary>
    private static readonly byte* BroadcastInt16Masks = CreateMasks(32, k => i => (byte)(2 * k + (i & 1)));

    /// <summary>Shuffle masks: 8 copies of byte 2p then 8 of byte 2p+1, for p = 0..7.</summary>
    private static readonly byte* SplitPairMasks = CreateMasks(16, p => i => (byte)(2 * p + (i >= 8 ? 1 : 0)));

    public static void Rows<TBlock>(MatMulTask* task, int rowStart, int rowEnd, int threadIndex) where TBlock : IKBlock
    {
        int cols = task->W.Cols, rows = task->W.Rows, tokens = task->Tokens, blocks = cols / 256;
        ActivationQuantizer.Layout256(task->Activations, cols, tokens, out sbyte* quants, out float* scales, out short* groupSums);
        // The chunk's rows stay in cache while every token passes over them.
        for (int t = 0; t < tokens; t++)
        {
            sbyte* xq = quants + (long)t * cols;
            float* xd = scales + (long)t * blocks;
            short* xs = groupSums + (long)t * (cols / 16);
            for (int r = rowStart; r < rowEnd; r++)
            {
                byte* row = task->W.Row(r);
                Vector256<float> acc = default;
                for (int b = 0; b < blocks; b++)
                    acc = TBlock.Accumulate(row + (long)b * TBlock.BlockBytes, xq + b * 256, xd[b], xs + b * 16, acc);
                task->Y[(long)t * rows + r] = Vector256.Sum(acc);
            }
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static Vector256<byte> BroadcastInt16(int k) => Avx.LoadVector256(BroadcastInt16Masks + 32 * k);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static Vector128<sbyte> SplitPair(int p) => Sse2.LoadVector128((sbyte*)SplitPairMasks + 16 * p);

    /// <summary>
    /// Unpacks the 12-byte 6-bit scales and mins of Q4_K and Q5_K (llama.cpp's <c>get_scale_min_k4</c>, done on
    /// 32-bit words) into 16 int16: scales 0..7, then mins 0..7.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static Vector256<short> UnpackScalesAndMins(byte* packed)
    {
        const uint low6 = 0x3f3f3f3f, low4 = 0x0f0f0f0f, low2 = 0x03030303;
        uint w0 = *(uint*)packed, w1 = *(uint*)(packed + 4), w2 = *(uint*)(packed + 8);
        uint scales0to3 = w0 & low6;
        uint scales4to7 = (w2 & low4) | (((w0 >> 6) & low2) << 4);
        uint mins0to3 = w1 & low6;
        uint mins4to7 = ((w2 >> 4) & low4) | (((w1 >> 6) & low2) << 4);
        return Avx2.ConvertToVector256Int16(Vector128.Create(scales0to3, scales4to7, mins0to3, mins4to7).AsByte()).AsInt16();
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
