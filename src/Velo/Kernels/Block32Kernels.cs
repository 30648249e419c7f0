using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Velo.Kernels;

/// <summary>
/// A weight type made of 32-element blocks that start with an fp16 scale d, whose values are
/// <c>d * q + c</c>: q unsigned and c either a stored fp16 min right after d or <c>-Offset * d</c>. (Q4_0 and
/// Q8_0 are repacked at load and run in <see cref="RowGroupKernels"/>.)
/// </summary>
internal unsafe interface IBlock32
{
    static abstract int BlockBytes { get; }
    static abstract bool HasMin { get; }
    static abstract float Offset { get; }

    /// <summary>The block's 32 quants in element order.</summary>
    static abstract Vector256<byte> Quants(byte* block);
}

/// <summary>A 32-block type of 4-bit nibbles (plus a fifth bit for Q5), which two blocks at a time unpack best.</summary>
internal unsafe interface INibbleBlock32 : IBlock32
{
    /// <summary>
    /// The quants of <paramref name="first"/> and the block after it: <paramref name="low"/> holds elements
    /// 0..15 of each (first block in the low 128 bits), <paramref name="high"/> elements 16..31.
    /// </summary>
    static abstract void PairQuants(byte* first, out Vector256<byte> low, out Vector256<byte> high);
}

internal unsafe struct Q4_1Block : INibbleBlock32
{
    public static int BlockBytes => 20;
    public static bool HasMin => true;
    public static float Offset => 0;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<byte> Quants(byte* block) => Block32Kernels.Nibbles(block + 4);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void PairQuants(byte* first, out Vector256<byte> low, out Vector256<byte> high) =>
        Block32Kernels.PairNibbles(first + 4, first + BlockBytes + 4, out low, out high);
}

internal unsafe struct Q5_0Block : INibbleBlock32
{
    public static int BlockBytes => 22;
    public static bool HasMin => false;
    public static float Offset => 16;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<byte> Quants(byte* block) =>
        Block32Kernels.Nibbles(block + 6) | Block32Kernels.FifthBits(*(uint*)(block + 2));

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void PairQuants(byte* first, out Vector256<byte> low, out Vector256<byte> high)
    {
        Block32Kernels.PairNibbles(first + 6, first + BlockBytes + 6, out low, out high);
        uint bits0 = *(uint*)(first + 2), bits1 = *(uint*)(first + BlockBytes + 2);
        low |= Block32Kernels.FifthBits((bits0 & 0xFFFF) | (bits1 << 16));
        high |= Block32Kernels.FifthBits((bits0 >> 16) | (bits1 & 0xFFFF0000));
    }
}

internal unsafe struct Q5_1Block : INibbleBlock32
{
    public static int BlockBytes => 24;
    public static bool HasMin => true;
    public static float Offset => 0;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<byte> Quants(byte* block) =>
        Block32Kernels.Nibbles(block + 8) | Block32Kernels.FifthBits(*(uint*)(block + 4));

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void PairQuants(byte* first, out Vector256<byte> low, out Vector256<byte> high)
    {
        Block32Kernels.PairNibbles(first + 8, first + BlockBytes + 8, out low, out high);
        uint bits0 = *(uint*)(first + 4), bits1 = *(uint*)(first + BlockBytes + 4);
        low |= Block32Kernels.FifthBits((bits0 & 0xFFFF) | (bits1 << 16));
        high |= Block32Kernels.FifthBits((bits0 >> 16) | (bits1 & 0xFFFF0000));
    }
}

/// <summary>
/// One row's dot products with a token, and with a tile of <see cref="Block32Kernels.TokenTile"/> tokens, against
/// activations in the 32-block layout; <see cref="Block32Kernels.TileRows{TDots}"/> walks rows and tokens with them.
/// </summary>
internal unsafe interface IBlock32RowDots
{
    static abstract float Dot1(byte* row, int blocks, sbyte* xq, float* xd, float* xs);

    static abstract void Dot4(byte* row, int blocks, sbyte* xq, float* xd, float* xs, float* y, int yStride);

    /// <summary>One row against two tokens, which a type whose unpacking costs little may do as two <see cref="Dot1"/>.</summary>
    static abstract void Dot2(byte* row, int blocks, sbyte* xq, float* xd, float* xs, float* y, int yStride);

    /// <summary>One row against two tiles of tokens, which a type whose unpacking costs little may do as two <see cref="Dot4"/>.</summary>
    static abstract void Dot8(byte* row, int blocks, sbyte* xq, float* xd, float* xs, float* y, int yStride);
}

/// <summary>
/// What the AVX2 kernels of Q4_1, Q5_0 and Q5_1 (<see cref="PairedBlock32Kernels"/>, two blocks at a time) share,
/// against activations quantized to 32-blocks. Per block the integer dot <c>Σ q·xq</c> comes from an
/// <see cref="IIntegerDot"/> (<c>maddubs</c> + <c>madd</c>, or AVX-VNNI's <c>vpdpbusd</c>); the offset or min term
/// needs no per-element work because <c>Σ c·x = c · (dx·Σxq)</c> and the activation quantizer stores <c>dx·Σxq</c>.
/// Scales are widened eight blocks at a time.
/// </summary>
internal static unsafe class Block32Kernels
{
    internal const int TokenTile = 4;
    private const int Batch = 8;

    /// <summary>
    /// Rows <paramref name="rowStart"/>..<paramref name="rowEnd"/> of the output for every token: tiles of
    /// 2 × <see cref="TokenTile"/> tokens through <see cref="IBlock32RowDots.Dot8"/>, then at most one tile each of
    /// <see cref="TokenTile"/>, two and one tokens.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    internal static void TileRows<TDots>(MatMulTask* task, int rowStart, int rowEnd) where TDots : IBlock32RowDots
    {
        int cols = task->W.Cols, rows = task->W.Rows, tokens = task->Tokens, blocks = cols / 32;
        ActivationQuantizer.Layout32(task->Activations, cols, tokens, out sbyte* quants, out float* scales, out float* sums);
        for (int token = 0; token < tokens; )
        {
            int left = tokens - token, tileTokens = left >= 2 * TokenTile ? 2 * TokenTile : left >= TokenTile ? TokenTile : Math.Min(left, 2);
            sbyte* xq = quants + (long)token * cols;
            float* xd = scales + (long)token * blocks;
            float* xs = sums + (long)token * blocks;
            float* y = task->Y + (long)token * rows;
            for (int r = rowStart; r < rowEnd; r++)
            {
                byte* row = task->W.Row(r);
                if (tileTokens == 2 * TokenTile)
                    TDots.Dot8(row, blocks, xq, xd, xs, y + r, rows);
                else if (tileTokens == TokenTile)
                    TDots.Dot4(row, blocks, xq, xd, xs, y + r, rows);
                else if (tileTokens == 2)
                    TDots.Dot2(row, blocks, xq, xd, xs, y + r, rows);
                else
                    y[r] = TDots.Dot1(row, blocks, xq, xd, xs);
            }
            token += tileTokens;
        }
    }

    /// <summary>The offset or min term <c>c·(dx·Σxq)</c> of one block, c being the stored min or <c>-Offset·d</c>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static float OffsetTerm<TBlock>(byte* block, float d, float activationSum) where TBlock : IBlock32
    {
        return (TBlock.HasMin ? F16Row.ToSingle(*(ushort*)(block + 2)) : -TBlock.Offset * d) * activationSum;
    }

    /// <summary>
    /// The scales of 8 whole blocks: <paramref name="d"/> and <paramref name="offset"/>, the stored min or
    /// <c>-Offset·d</c> (zero for signed quants). The 4 bytes at each block's start hold d in the low half and,
    /// for types with a min, the min in the high half.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static void WeightScales<TBlock>(byte* batch, out Vector256<float> d, out Vector256<float> offset) where TBlock : IBlock32
    {
        // Eight scalar loads and inserts: a hardware gather is several times slower on AMD cores.
        int stride = TBlock.BlockBytes;
        var raw = Vector256.Create(
            *(int*)batch, *(int*)(batch + stride), *(int*)(batch + 2 * stride), *(int*)(batch + 3 * stride),
            *(int*)(batch + 4 * stride), *(int*)(batch + 5 * stride), *(int*)(batch + 6 * stride), *(int*)(batch + 7 * stride));
        d = F16Row.LowHalvesToSingle(raw);
        offset = TBlock.HasMin ? F16Row.HighHalvesToSingle(raw)
            : d * Vector256.Create(-TBlock.Offset);
    }

    /// <summary>
    /// Per block of a batch, <c>d·dx</c> (returned), while the offset or min terms <c>c·(dx·Σxq)</c> of the token
    /// whose activation scales and sums are <paramref name="xd"/> and <paramref name="xs"/> go into <paramref name="acc"/>.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static Vector256<float> TokenScales<TBlock>(Vector256<float> d, Vector256<float> offset, float* xd, float* xs, ref Vector256<float> acc)
        where TBlock : IBlock32
    {
        acc = Fma.MultiplyAdd(offset, Avx.LoadVector256(xs), acc);
        return d * Avx.LoadVector256(xd);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static Vector256<float> BlockDot<TBlock, TDot>(byte* block, sbyte* x) where TBlock : IBlock32 where TDot : IIntegerDot =>
        QuantDot<TBlock, TDot>(TBlock.Quants(block), x);

    /// <summary>Σ q·x over 32 values, as 8 partial int32 sums converted to float.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> QuantDot<TBlock, TDot>(Vector256<byte> q, sbyte* x) where TBlock : IBlock32 where TDot : IIntegerDot
    {
        return Avx.ConvertToVector256Single(TDot.Dot(q, Avx.LoadVector256(x)));
    }

    /// <summary>The 32 nibbles of 16 bytes in element order: low nibbles are elements 0..15, high ones 16..31.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static Vector256<byte> Nibbles(byte* qs)
    {
        var packed = Sse2.LoadVector128(qs);
        return Vector256.Create(packed, Sse2.ShiftRightLogical(packed.AsUInt16(), 4).AsByte()) & Vector256.Create((byte)0x0F);
    }

    /// <summary>The nibbles of two blocks: low nibbles of both (first block's in the low 128 bits), then high ones.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static void PairNibbles(byte* first, byte* second, out Vector256<byte> low, out Vector256<byte> high)
    {
        var packed = Vector256.Create(Sse2.LoadVector128(first), Sse2.LoadVector128(second));
        var mask = Vector256.Create((byte)0x0F);
        low = packed & mask;
        high = Avx2.ShiftRightLogical(packed.AsUInt16(), 4).AsByte() & mask;
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
