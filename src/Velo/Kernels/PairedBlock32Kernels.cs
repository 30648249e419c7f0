using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Velo.Kernels;

/// <summary>
/// AVX2 kernels for Q4_1, Q5_0 and Q5_1, working on two blocks at a time: the 16 nibble bytes of two
/// blocks fill one 256-bit register, so one mask and one shift unpack 64 quants, and the activations are stored
/// in the matching order (<see cref="ActivationQuantizer.Quantize32"/> with <c>paired</c>). Per pair: two
/// <c>maddubs</c> and one <c>madd</c> (or two AVX-VNNI <c>vpdpbusd</c>), one conversion and one FMA whose scale
/// vector holds the first block's scale in the low half and the second's in the high half.
/// </summary>
internal static unsafe class PairedBlock32Kernels
{
    private const int Batch = 8;

    public static void Rows<TBlock, TDot>(MatMulTask* task, int rowStart, int rowEnd, int threadIndex)
        where TBlock : INibbleBlock32 where TDot : IIntegerDot =>
        Block32Kernels.TileRows<Dots<TBlock, TDot>>(task, rowStart, rowEnd);

    private struct Dots<TBlock, TDot> : IBlock32RowDots where TBlock : INibbleBlock32 where TDot : IIntegerDot
    {
        public static float Dot1(byte* row, int blocks, sbyte* xq, float* xd, float* xs) =>
            Dot1<TBlock, TDot>(row, blocks, xq, xd, xs);

        public static void Dot4(byte* row, int blocks, sbyte* xq, float* xd, float* xs, float* y, int yStride) =>
            Dot4<TBlock, TDot>(row, blocks, xq, xd, xs, y, yStride);

        public static void Dot2(byte* row, int blocks, sbyte* xq, float* xd, float* xs, float* y, int yStride) =>
            Dot2<TBlock, TDot>(row, blocks, xq, xd, xs, y, yStride);

        public static void Dot8(byte* row, int blocks, sbyte* xq, float* xd, float* xs, float* y, int yStride) =>
            Dot8<TBlock, TDot>(row, blocks, xq, xd, xs, y, yStride);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    internal static float Dot1<TBlock, TDot>(byte* row, int blocks, sbyte* xq, float* xd, float* xs)
        where TBlock : INibbleBlock32 where TDot : IIntegerDot
    {
        // One accumulator, in the order of each token of Dot4, so a token's result does not depend on how many
        // others share its batch.
        Vector256<float> acc = default;
        var pair0 = Vector256.Create(0, 0, 0, 0, 1, 1, 1, 1);
        var pair1 = Vector256.Create(2, 2, 2, 2, 3, 3, 3, 3);
        var pair2 = Vector256.Create(4, 4, 4, 4, 5, 5, 5, 5);
        var pair3 = Vector256.Create(6, 6, 6, 6, 7, 7, 7, 7);
        int whole = blocks - blocks % Batch;
        byte* block = row;
        sbyte* x = xq;
        for (int b0 = 0; b0 < whole; b0 += Batch, block += Batch * TBlock.BlockBytes, x += Batch * 32)
        {
            Block32Kernels.WeightScales<TBlock>(block, out var d, out var offset);
            var scales = Block32Kernels.TokenScales<TBlock>(d, offset, xd + b0, xs + b0, ref acc);
            acc = Fma.MultiplyAdd(PairDot<TBlock, TDot>(block, x), Avx2.PermuteVar8x32(scales, pair0), acc);
            acc = Fma.MultiplyAdd(PairDot<TBlock, TDot>(block + 2 * TBlock.BlockBytes, x + 64), Avx2.PermuteVar8x32(scales, pair1), acc);
            acc = Fma.MultiplyAdd(PairDot<TBlock, TDot>(block + 4 * TBlock.BlockBytes, x + 128), Avx2.PermuteVar8x32(scales, pair2), acc);
            acc = Fma.MultiplyAdd(PairDot<TBlock, TDot>(block + 6 * TBlock.BlockBytes, x + 192), Avx2.PermuteVar8x32(scales, pair3), acc);
        }
        float offsetTail = 0;
        for (int b = whole; b < blocks; b += 2, block += 2 * TBlock.BlockBytes, x += 64)
            AddTail<TBlock, TDot>(block, b, blocks, x, xd, xs, ref acc, ref offsetTail);
        return Vector256.Sum(acc) + offsetTail;
    }

    /// <summary>One row against two tokens: each pair of blocks is unpacked once for both, in the order of <see cref="Dot1{TBlock, TDot}"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Dot2<TBlock, TDot>(byte* row, int blocks, sbyte* xq, float* xd, float* xs, float* y, int yStride)
        where TBlock : INibbleBlock32 where TDot : IIntegerDot
    {
        long cols = blocks * 32L;
        Vector256<float> acc0 = default, acc1 = default;
        var pairs = Vector256.Create(0, 0, 0, 0, 1, 1, 1, 1);
        int whole = blocks - blocks % Batch;
        byte* block = row;
        sbyte* x = xq;
        for (int b0 = 0; b0 < whole; b0 += Batch)
        {
            Block32Kernels.WeightScales<TBlock>(block, out var d, out var offset);
            var scales0 = Block32Kernels.TokenScales<TBlock>(d, offset, xd + b0, xs + b0, ref acc0);
            var scales1 = Block32Kernels.TokenScales<TBlock>(d, offset, xd + blocks + b0, xs + blocks + b0, ref acc1);
            for (int pair = 0; pair < Batch / 2; pair++, block += 2 * TBlock.BlockBytes, x += 64)
            {
                TBlock.PairQuants(block, out var low, out var high);
                var select = Vector256.Create(2 * pair) + pairs;
                acc0 = Fma.MultiplyAdd(PairDot<TDot>(low, high, x), Avx2.PermuteVar8x32(scales0, select), acc0);
                acc1 = Fma.MultiplyAdd(PairDot<TDot>(low, high, x + cols), Avx2.PermuteVar8x32(scales1, select), acc1);
            }
        }
        float tail0 = 0, tail1 = 0;
        for (int b = whole; b < blocks; b += 2, block += 2 * TBlock.BlockBytes, x += 64)
        {
            AddTail<TBlock, TDot>(block, b, blocks, x, xd, xs, ref acc0, ref tail0);
            AddTail<TBlock, TDot>(block, b, blocks, x + cols, xd + blocks, xs + blocks, ref acc1, ref tail1);
        }
        y[0] = Vector256.Sum(acc0) + tail0;
        y[yStride] = Vector256.Sum(acc1) + tail1;
    }

    /// <summary>One row against four tokens: each pair of blocks is unpacked once for all four.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Dot4<TBlock, TDot>(byte* row, int blocks, sbyte* xq, float* xd, float* xs, float* y, int yStride)
        where TBlock : INibbleBlock32 where TDot : IIntegerDot
    {
        long cols = blocks * 32L;
        float* scales = stackalloc float[Batch * Block32Kernels.TokenTile];
        // The offset terms go straight into the accumulators: four more live vectors would not fit the registers.
        Vector256<float> acc0 = default, acc1 = default, acc2 = default, acc3 = default;
        int whole = blocks - blocks % Batch;
        byte* block = row;
        sbyte* x = xq;
        for (int b0 = 0; b0 < whole; b0 += Batch)
        {
            Block32Kernels.WeightScales<TBlock>(block, out var d, out var offset);
            Avx.Store(scales, Block32Kernels.TokenScales<TBlock>(d, offset, xd + b0, xs + b0, ref acc0));
            Avx.Store(scales + Batch, Block32Kernels.TokenScales<TBlock>(d, offset, xd + blocks + b0, xs + blocks + b0, ref acc1));
            Avx.Store(scales + 2 * Batch, Block32Kernels.TokenScales<TBlock>(d, offset, xd + 2 * blocks + b0, xs + 2 * blocks + b0, ref acc2));
            Avx.Store(scales + 3 * Batch, Block32Kernels.TokenScales<TBlock>(d, offset, xd + 3 * blocks + b0, xs + 3 * blocks + b0, ref acc3));
            for (int pair = 0; pair < Batch / 2; pair++, block += 2 * TBlock.BlockBytes, x += 64)
            {
                TBlock.PairQuants(block, out var low, out var high);
                var select = Vector256.Create(2 * pair) + Vector256.Create(0, 0, 0, 0, 1, 1, 1, 1);
                acc0 = Fma.MultiplyAdd(PairDot<TDot>(low, high, x), Avx2.PermuteVar8x32(Avx.LoadVector256(scales), select), acc0);
                acc1 = Fma.MultiplyAdd(PairDot<TDot>(low, high, x + cols), Avx2.PermuteVar8x32(Avx.LoadVector256(scales + Batch), select), acc1);
                acc2 = Fma.MultiplyAdd(PairDot<TDot>(low, high, x + 2 * cols), Avx2.PermuteVar8x32(Avx.LoadVector256(scales + 2 * Batch), select), acc2);
                acc3 = Fma.MultiplyAdd(PairDot<TDot>(low, high, x + 3 * cols), Avx2.PermuteVar8x32(Avx.LoadVector256(scales + 3 * Batch), select), acc3);
            }
        }
        float tail0 = 0, tail1 = 0, tail2 = 0, tail3 = 0;
        for (int b = whole; b < blocks; b += 2, block += 2 * TBlock.BlockBytes, x += 64)
        {
            AddTail<TBlock, TDot>(block, b, blocks, x, xd, xs, ref acc0, ref tail0);
            AddTail<TBlock, TDot>(block, b, blocks, x + cols, xd + blocks, xs + blocks, ref acc1, ref tail1);
            AddTail<TBlock, TDot>(block, b, blocks, x + 2 * cols, xd + 2 * blocks, xs + 2 * blocks, ref acc2, ref tail2);
            AddTail<TBlock, TDot>(block, b, blocks, x + 3 * cols, xd + 3 * blocks, xs + 3 * blocks, ref acc3, ref tail3);
        }
        y[0] = Vector256.Sum(acc0) + tail0;
        y[yStride] = Vector256.Sum(acc1) + tail1;
        y[2L * yStride] = Vector256.Sum(acc2) + tail2;
        y[3L * yStride] = Vector256.Sum(acc3) + tail3;
    }

    /// <summary>
    /// One row against eight tokens: each pair of blocks is unpacked, and each batch's weight scales widened, once
    /// for all eight. Each token's sum runs in the same order as in <see cref="Dot1{TBlock, TDot}"/>.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Dot8<TBlock, TDot>(byte* row, int blocks, sbyte* xq, float* xd, float* xs, float* y, int yStride)
        where TBlock : INibbleBlock32 where TDot : IIntegerDot
    {
        long cols = blocks * 32L;
        float* scales = stackalloc float[Batch * 8];
        Vector256<float> acc0 = default, acc1 = default, acc2 = default, acc3 = default;
        Vector256<float> acc4 = default, acc5 = default, acc6 = default, acc7 = default;
        int whole = blocks - blocks % Batch;
        byte* block = row;
        sbyte* x = xq;
        for (int b0 = 0; b0 < whole; b0 += Batch)
        {
            Block32Kernels.WeightScales<TBlock>(block, out var d, out var offset);
            Avx.Store(scales, Block32Kernels.TokenScales<TBlock>(d, offset, xd + b0, xs + b0, ref acc0));
            Avx.Store(scales + Batch, Block32Kernels.TokenScales<TBlock>(d, offset, xd + blocks + b0, xs + blocks + b0, ref acc1));
            Avx.Store(scales + 2 * Batch, Block32Kernels.TokenScales<TBlock>(d, offset, xd + 2 * blocks + b0, xs + 2 * blocks + b0, ref acc2));
            Avx.Store(scales + 3 * Batch, Block32Kernels.TokenScales<TBlock>(d, offset, xd + 3 * blocks + b0, xs + 3 * blocks + b0, ref acc3));
            Avx.Store(scales + 4 * Batch, Block32Kernels.TokenScales<TBlock>(d, offset, xd + 4 * blocks + b0, xs + 4 * blocks + b0, ref acc4));
            Avx.Store(scales + 5 * Batch, Block32Kernels.TokenScales<TBlock>(d, offset, xd + 5 * blocks + b0, xs + 5 * blocks + b0, ref acc5));
            Avx.Store(scales + 6 * Batch, Block32Kernels.TokenScales<TBlock>(d, offset, xd + 6 * blocks + b0, xs + 6 * blocks + b0, ref acc6));
            Avx.Store(scales + 7 * Batch, Block32Kernels.TokenScales<TBlock>(d, offset, xd + 7 * blocks + b0, xs + 7 * blocks + b0, ref acc7));
            for (int pair = 0; pair < Batch / 2; pair++, block += 2 * TBlock.BlockBytes, x += 64)
            {
                TBlock.PairQuants(block, out var low, out var high);
                var select = Vector256.Create(2 * pair) + Vector256.Create(0, 0, 0, 0, 1, 1, 1, 1);
                acc0 = Fma.MultiplyAdd(PairDot<TDot>(low, high, x), Avx2.PermuteVar8x32(Avx.LoadVector256(scales), select), acc0);
                acc1 = Fma.MultiplyAdd(PairDot<TDot>(low, high, x + cols), Avx2.PermuteVar8x32(Avx.LoadVector256(scales + Batch), select), acc1);
                acc2 = Fma.MultiplyAdd(PairDot<TDot>(low, high, x + 2 * cols), Avx2.PermuteVar8x32(Avx.LoadVector256(scales + 2 * Batch), select), acc2);
                acc3 = Fma.MultiplyAdd(PairDot<TDot>(low, high, x + 3 * cols), Avx2.PermuteVar8x32(Avx.LoadVector256(scales + 3 * Batch), select), acc3);
                acc4 = Fma.MultiplyAdd(PairDot<TDot>(low, high, x + 4 * cols), Avx2.PermuteVar8x32(Avx.LoadVector256(scales + 4 * Batch), select), acc4);
                acc5 = Fma.MultiplyAdd(PairDot<TDot>(low, high, x + 5 * cols), Avx2.PermuteVar8x32(Avx.LoadVector256(scales + 5 * Batch), select), acc5);
                acc6 = Fma.MultiplyAdd(PairDot<TDot>(low, high, x + 6 * cols), Avx2.PermuteVar8x32(Avx.LoadVector256(scales + 6 * Batch), select), acc6);
                acc7 = Fma.MultiplyAdd(PairDot<TDot>(low, high, x + 7 * cols), Avx2.PermuteVar8x32(Avx.LoadVector256(scales + 7 * Batch), select), acc7);
            }
        }
        float tail0 = 0, tail1 = 0, tail2 = 0, tail3 = 0, tail4 = 0, tail5 = 0, tail6 = 0, tail7 = 0;
        for (int b = whole; b < blocks; b += 2, block += 2 * TBlock.BlockBytes, x += 64)
        {
            AddTail<TBlock, TDot>(block, b, blocks, x, xd, xs, ref acc0, ref tail0);
            AddTail<TBlock, TDot>(block, b, blocks, x + cols, xd + blocks, xs + blocks, ref acc1, ref tail1);
            AddTail<TBlock, TDot>(block, b, blocks, x + 2 * cols, xd + 2 * blocks, xs + 2 * blocks, ref acc2, ref tail2);
            AddTail<TBlock, TDot>(block, b, blocks, x + 3 * cols, xd + 3 * blocks, xs + 3 * blocks, ref acc3, ref tail3);
            AddTail<TBlock, TDot>(block, b, blocks, x + 4 * cols, xd + 4 * blocks, xs + 4 * blocks, ref acc4, ref tail4);
            AddTail<TBlock, TDot>(block, b, blocks, x + 5 * cols, xd + 5 * blocks, xs + 5 * blocks, ref acc5, ref tail5);
            AddTail<TBlock, TDot>(block, b, blocks, x + 6 * cols, xd + 6 * blocks, xs + 6 * blocks, ref acc6, ref tail6);
            AddTail<TBlock, TDot>(block, b, blocks, x + 7 * cols, xd + 7 * blocks, xs + 7 * blocks, ref acc7, ref tail7);
        }
        y[0] = Vector256.Sum(acc0) + tail0;
        y[yStride] = Vector256.Sum(acc1) + tail1;
        y[2L * yStride] = Vector256.Sum(acc2) + tail2;
        y[3L * yStride] = Vector256.Sum(acc3) + tail3;
        y[4L * yStride] = Vector256.Sum(acc4) + tail4;
        y[5L * yStride] = Vector256.Sum(acc5) + tail5;
        y[6L * yStride] = Vector256.Sum(acc6) + tail6;
        y[7L * yStride] = Vector256.Sum(acc7) + tail7;
    }

    /// <summary>
    /// Adds block <paramref name="b"/> of the tail after the whole batches and, unless it is the last block, the
    /// one after it, with scales widened one by one.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void AddTail<TBlock, TDot>(byte* block, int b, int blocks, sbyte* x, float* xd, float* xs,
        ref Vector256<float> acc, ref float offsetTail) where TBlock : INibbleBlock32 where TDot : IIntegerDot
    {
        float d0 = F16Row.ToSingle(*(ushort*)block);
        offsetTail += Block32Kernels.OffsetTerm<TBlock>(block, d0, xs[b]);
        if (b + 1 == blocks)
        {
            acc = Fma.MultiplyAdd(Block32Kernels.BlockDot<TBlock, TDot>(block, x), Vector256.Create(d0 * xd[b]), acc);
            return;
        }
        float d1 = F16Row.ToSingle(*(ushort*)(block + TBlock.BlockBytes));
        offsetTail += Block32Kernels.OffsetTerm<TBlock>(block + TBlock.BlockBytes, d1, xs[b + 1]);
        var scales = Vector256.Create(Vector128.Create(d0 * xd[b]), Vector128.Create(d1 * xd[b + 1]));
        acc = Fma.MultiplyAdd(PairDot<TBlock, TDot>(block, x), scales, acc);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> PairDot<TBlock, TDot>(byte* first, sbyte* x) where TBlock : INibbleBlock32 where TDot : IIntegerDot
    {
        TBlock.PairQuants(first, out var low, out var high);
        return PairDot<TDot>(low, high, x);
    }

    /// <summary>Two blocks' Σ q·x: lanes 0..3 hold partial sums of the first block, lanes 4..7 of the second.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> PairDot<TDot>(Vector256<byte> low, Vector256<byte> high, sbyte* x) where TDot : IIntegerDot =>
        // Two products of at most 31·127 from each block: their sum fits the int16 that AVX2 adds them in.
        Avx.ConvertToVector256Single(TDot.Dot(low, Avx.LoadVector256(x), high, Avx.LoadVector256(x + 32)));
}
