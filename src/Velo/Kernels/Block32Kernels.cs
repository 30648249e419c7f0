using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Velo.Kernels;

/// <summary>
/// A weight type made of 32-element blocks that start with an fp16 scale d, whose values are
/// <c>d * q + c</c>: q unsigned (or signed for Q8_0) and c either a stored fp16 min right after d or
/// <c>-Offset * d</c>.
/// </summary>
internal unsafe interface IBlock32
{
    static abstract int BlockBytes { get; }
    static abstract bool SignedQuants { get; }
    static abstract bool HasMin { get; }
    static abstract float Offset { get; }

    /// <summary>The block's 32 quants in element order.</summary>
    static abstract Vector256<byte> Quants(byte* block);
}

internal unsafe struct Q8_0Block : IBlock32
{
    public static int BlockBytes => 34;
    public static bool SignedQuants => true;
    public static bool HasMin => false;
    public static float Offset => 0;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<byte> Quants(byte* block) => Avx.LoadVector256(block + 2);
}

internal unsafe struct Q4_0Block : IBlock32
{
    public static int BlockBytes => 18;
    public static bool SignedQuants => false;
    public static bool HasMin => false;
    public static float Offset => 8;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<byte> Quants(byte* block) => Block32Kernels.Nibbles(block + 2);
}

internal unsafe struct Q4_1Block : IBlock32
{
    public static int BlockBytes => 20;
    public static bool SignedQuants => false;
    public static bool HasMin => true;
    public static float Offset => 0;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<byte> Quants(byte* block) => Block32Kernels.Nibbles(block + 4);
}

internal unsafe struct Q5_0Block : IBlock32
{
    public static int BlockBytes => 22;
    public static bool SignedQuants => false;
    public static bool HasMin => false;
    public static float Offset => 16;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<byte> Quants(byte* block) =>
        Block32Kernels.Nibbles(block + 6) | Block32Kernels.FifthBits(*(uint*)(block + 2));
}

internal unsafe struct Q5_1Block : IBlock32
{
    public static int BlockBytes => 24;
    public static bool SignedQuants => false;
    public static bool HasMin => true;
    public static float Offset => 0;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<byte> Quants(byte* block) =>
        Block32Kernels.Nibbles(block + 8) | Block32Kernels.FifthBits(*(uint*)(block + 4));
}

/// <summary>
/// AVX2 kernels for the 32-block types against activations quantized to 32-blocks. Per block the integer dot
/// <c>Σ q·xq</c> comes from <c>maddubs</c> + <c>madd</c>; the offset or min term needs no per-element work because
/// <c>Σ c·x = c · (dx·Σxq)</c> and the activation quantizer stores <c>dx·Σxq</c>. Scales are widened eight blocks
/// at a time with one gather.
/// </summary>
internal static unsafe class Block32Kernels
{
    private const int TokenTile = 4;
    private const int Batch = 8;

    public static void Rows<TBlock>(MatMulTask* task, int rowStart, int rowEnd, int threadIndex) where TBlock : IBlock32
    {
        int cols = task->W.Cols, rows = task->W.Rows, tokens = task->Tokens, blocks = cols / 32;
        ActivationQuantizer.Layout32(task->Activations, cols, tokens, out sbyte* quants, out float* scales, out float* sums);
        for (int token = 0; token < tokens; token += TokenTile)
        {
            int tileTokens = Math.Min(TokenTile, tokens - token);
            sbyte* xq = quants + (long)token * cols;
            float* xd = scales + (long)token * blocks;
            float* xs = sums + (long)token * blocks;
            float* y = task->Y + (long)token * rows;
            for (int r = rowStart; r < rowEnd; r++)
            {
                byte* row = task->W.Row(r);
                if (tileTokens == TokenTile)
                    Dot4<TBlock>(row, blocks, xq, xd, xs, y + r, rows);
                else
                    for (int t = 0; t < tileTokens; t++)
                        y[(long)t * rows + r] = Dot1<TBlock>(row, blocks, xq + (long)t * cols, xd + t * blocks, xs + t * blocks);
            }
        }
    }

    private static float Dot1<TBlock>(byte* row, int blocks, sbyte* xq, float* xd, float* xs) where TBlock : IBlock32
    {
        // No calls inside the loops: every vector register is caller-saved on x64, so a call would make the JIT
        // keep the accumulators in memory.
        float* combined = stackalloc float[Batch];
        Vector256<float> acc0 = default, acc1 = default, offsetAcc = default;
        int whole = blocks - blocks % Batch;
        for (int b0 = 0; b0 < whole; b0 += Batch)
        {
            byte* batch = row + b0 * TBlock.BlockBytes;
            offsetAcc = ScaleBatch<TBlock>(batch, xd + b0, xs + b0, combined, offsetAcc);
            // Two accumulators: one chain of dependent FMAs would wait on the FMA latency every block.
            for (int j = 0; j < Batch; j += 2)
            {
                acc0 = Fma.MultiplyAdd(BlockDot<TBlock>(batch + j * TBlock.BlockBytes, xq + (b0 + j) * 32), Vector256.Create(combined[j]), acc0);
                acc1 = Fma.MultiplyAdd(BlockDot<TBlock>(batch + (j + 1) * TBlock.BlockBytes, xq + (b0 + j + 1) * 32), Vector256.Create(combined[j + 1]), acc1);
            }
        }
        float offsetTail = 0;
        for (int b = whole; b < blocks; b++)
        {
            byte* block = row + b * TBlock.BlockBytes;
            float d = F16Row.ToSingle(*(ushort*)block);
            acc0 = Fma.MultiplyAdd(BlockDot<TBlock>(block, xq + b * 32), Vector256.Create(d * xd[b]), acc0);
            offsetTail += OffsetTerm<TBlock>(block, d, xs[b]);
        }
        return Vector256.Sum(acc0 + acc1) + Vector256.Sum(offsetAcc) + offsetTail;
    }

    /// <summary>
    /// One row against four tokens: each block is unpacked once for all four. Each token is summed exactly as
    /// <see cref="Dot1{TBlock}"/> sums it (even blocks, odd blocks and offsets apart, the tail into the even
    /// accumulator), so a token's result does not depend on whether it shares a tile.
    /// </summary>
    private static void Dot4<TBlock>(byte* row, int blocks, sbyte* xq, float* xd, float* xs, float* y, int yStride)
        where TBlock : IBlock32
    {
        long cols = blocks * 32L;
        float* combined = stackalloc float[Batch * TokenTile];
        Vector256<float> even0 = default, even1 = default, even2 = default, even3 = default;
        Vector256<float> odd0 = default, odd1 = default, odd2 = default, odd3 = default;
        Vector256<float> off0 = default, off1 = default, off2 = default, off3 = default;
        int whole = blocks - blocks % Batch;
        for (int b0 = 0; b0 < whole; b0 += Batch)
        {
            byte* batch = row + b0 * TBlock.BlockBytes;
            off0 = ScaleBatch<TBlock>(batch, xd + b0, xs + b0, combined, off0);
            off1 = ScaleBatch<TBlock>(batch, xd + blocks + b0, xs + blocks + b0, combined + Batch, off1);
            off2 = ScaleBatch<TBlock>(batch, xd + 2 * blocks + b0, xs + 2 * blocks + b0, combined + 2 * Batch, off2);
            off3 = ScaleBatch<TBlock>(batch, xd + 3 * blocks + b0, xs + 3 * blocks + b0, combined + 3 * Batch, off3);
            for (int j = 0; j < Batch; j += 2)
            {
                var q = TBlock.Quants(batch + j * TBlock.BlockBytes);
                sbyte* x = xq + (b0 + j) * 32;
                even0 = Fma.MultiplyAdd(QuantDot<TBlock>(q, x), Vector256.Create(combined[j]), even0);
                even1 = Fma.MultiplyAdd(QuantDot<TBlock>(q, x + cols), Vector256.Create(combined[Batch + j]), even1);
                even2 = Fma.MultiplyAdd(QuantDot<TBlock>(q, x + 2 * cols), Vector256.Create(combined[2 * Batch + j]), even2);
                even3 = Fma.MultiplyAdd(QuantDot<TBlock>(q, x + 3 * cols), Vector256.Create(combined[3 * Batch + j]), even3);
                q = TBlock.Quants(batch + (j + 1) * TBlock.BlockBytes);
                x += 32;
                odd0 = Fma.MultiplyAdd(QuantDot<TBlock>(q, x), Vector256.Create(combined[j + 1]), odd0);
                odd1 = Fma.MultiplyAdd(QuantDot<TBlock>(q, x + cols), Vector256.Create(combined[Batch + j + 1]), odd1);
                odd2 = Fma.MultiplyAdd(QuantDot<TBlock>(q, x + 2 * cols), Vector256.Create(combined[2 * Batch + j + 1]), odd2);
                odd3 = Fma.MultiplyAdd(QuantDot<TBlock>(q, x + 3 * cols), Vector256.Create(combined[3 * Batch + j + 1]), odd3);
            }
        }
        float tail0 = 0, tail1 = 0, tail2 = 0, tail3 = 0;
        for (int b = whole; b < blocks; b++)
        {
            byte* block = row + b * TBlock.BlockBytes;
            float d = F16Row.ToSingle(*(ushort*)block);
            var q = TBlock.Quants(block);
            sbyte* x = xq + b * 32;
            even0 = Fma.MultiplyAdd(QuantDot<TBlock>(q, x), Vector256.Create(d * xd[b]), even0);
            even1 = Fma.MultiplyAdd(QuantDot<TBlock>(q, x + cols), Vector256.Create(d * xd[blocks + b]), even1);
            even2 = Fma.MultiplyAdd(QuantDot<TBlock>(q, x + 2 * cols), Vector256.Create(d * xd[2 * blocks + b]), even2);
            even3 = Fma.MultiplyAdd(QuantDot<TBlock>(q, x + 3 * cols), Vector256.Create(d * xd[3 * blocks + b]), even3);
            tail0 += OffsetTerm<TBlock>(block, d, xs[b]);
            tail1 += OffsetTerm<TBlock>(block, d, xs[blocks + b]);
            tail2 += OffsetTerm<TBlock>(block, d, xs[2 * blocks + b]);
            tail3 += OffsetTerm<TBlock>(block, d, xs[3 * blocks + b]);
        }
        y[0] = Vector256.Sum(even0 + odd0) + Vector256.Sum(off0) + tail0;
        y[yStride] = Vector256.Sum(even1 + odd1) + Vector256.Sum(off1) + tail1;
        y[2L * yStride] = Vector256.Sum(even2 + odd2) + Vector256.Sum(off2) + tail2;
        y[3L * yStride] = Vector256.Sum(even3 + odd3) + Vector256.Sum(off3) + tail3;
    }

    /// <summary>The offset or min term <c>c·(dx·Σxq)</c> of one block, c being the stored min or <c>-Offset·d</c>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float OffsetTerm<TBlock>(byte* block, float d, float activationSum) where TBlock : IBlock32
    {
        if (TBlock.SignedQuants) return 0;
        return (TBlock.HasMin ? F16Row.ToSingle(*(ushort*)(block + 2)) : -TBlock.Offset * d) * activationSum;
    }

    /// <summary>
    /// For 8 whole blocks: stores <c>d·dx</c> per block in <paramref name="combined"/> and adds the offset or min
    /// terms <c>c·(dx·Σxq)</c> to <paramref name="offsetAcc"/>. The gather reads the 4 bytes at each block's start:
    /// d in the low half and, for types with a min, the min in the high half.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> ScaleBatch<TBlock>(byte* batch, float* xd, float* xs, float* combined, Vector256<float> offsetAcc)
        where TBlock : IBlock32
    {
        var raw = Avx2.GatherVector256((int*)batch, Vector256.Create(0, 1, 2, 3, 4, 5, 6, 7) * TBlock.BlockBytes, 1);
        var d = F16Row.LowHalvesToSingle(raw);
        Avx.Store(combined, d * Avx.LoadVector256(xd));
        if (TBlock.SignedQuants) return offsetAcc;
        var c = TBlock.HasMin ? F16Row.HighHalvesToSingle(raw) : d * Vector256.Create(-TBlock.Offset);
        return Fma.MultiplyAdd(c, Avx.LoadVector256(xs), offsetAcc);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> BlockDot<TBlock>(byte* block, sbyte* x) where TBlock : IBlock32 =>
        QuantDot<TBlock>(TBlock.Quants(block), x);

    /// <summary>Σ q·x over 32 values, as 8 partial int32 sums converted to float.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> QuantDot<TBlock>(Vector256<byte> q, sbyte* x) where TBlock : IBlock32
    {
        var xv = Avx.LoadVector256(x);
        // maddubs multiplies unsigned by signed bytes, so signed weights move their sign onto the activation.
        var pairs = TBlock.SignedQuants
            ? Avx2.MultiplyAddAdjacent(Avx2.Abs(q.AsSByte()), Avx2.Sign(xv, q.AsSByte()))
            : Avx2.MultiplyAddAdjacent(q, xv);
        return Avx.ConvertToVector256Single(Avx2.MultiplyAddAdjacent(pairs, Vector256.Create((short)1)));
    }

    /// <summary>The 32 nibbles of 16 bytes in element order: low nibbles are elements 0..15, high ones 16..31.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static Vector256<byte> Nibbles(byte* qs)
    {
        var packed = Sse2.LoadVector128(qs);
        return Vector256.Create(packed, Sse2.ShiftRightLogical(packed.AsUInt16(), 4).AsByte()) & Vector256.Create((byte)0x0F);
    }

    /// <summary>Bit i of <paramref name="bits"/> as 0x10 in byte i: the fifth bit of Q5 quants.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static Vector256<byte> FifthBits(uint bits)
    {
        var spread = Avx2.Shuffle(Vector256.Create(bits).AsByte(),
            Vector256.Create((byte)0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3));
        // Each byte ORed with all bits but the one it tests is all-ones exactly when that bit is set.
        var allButOwnBit = Vector256.Create(0x7fbfdfeff7fbfdfeUL).AsByte();
        var isSet = Avx2.CompareEqual(spread | allButOwnBit, Vector256<byte>.AllBitsSet);
        return isSet & Vector256.Create((byte)0x10);
    }
}
