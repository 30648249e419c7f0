using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using Velo.Tensors;

namespace Velo.Kernels;

/// <summary>
/// AVX-512 prefill kernels for Q4_0 and Q8_0 weights against activations quantized to 32-blocks. One 512-bit
/// register holds the 8 float lanes of two tokens of one row: the row's quants are loaded and unpacked once into
/// both halves and serve a tile of up to 8 token pairs (16 tokens), whose activations have been interleaved pair by
/// pair (<see cref="Interleave"/>) so each is one aligned load. .NET 10 exposes no 512-bit <c>vpdpbusd</c>, so the
/// integer sums come from AVX-512BW's <c>vpmaddubsw</c> + <c>vpmaddwd</c>; the float work per block (conversion,
/// scale, FMA) is done for two tokens per instruction.
/// <para>
/// Every token's result is bit for bit the one <see cref="Block32Kernels"/> and <see cref="PairedBlock32Kernels"/>
/// compute for it, alone or in any tile: each half of a register gets the same exact integer sums in the same lanes,
/// the same scale products and the same FMAs in the same order (the offset term of Q4_0 first in each batch of 8
/// blocks), and the tail blocks past the last whole batch run through the AVX2 kernels' own code.
/// </para>
/// </summary>
internal static unsafe class Avx512Block32Kernels
{
    /// <summary>Fewer tokens run through the AVX2 tiles: interleaving them would cost more than it saves.</summary>
    private const int MinTokens = 4;

    private const int Batch = 8;

    /// <summary>Whether these kernels multiply <paramref name="type"/> weights of <paramref name="cols"/> columns by <paramref name="tokens"/> tokens.</summary>
    public static bool Handles(GgmlType type, int cols, int tokens) =>
        type is GgmlType.Q4_0 or GgmlType.Q8_0 && tokens >= MinTokens && cols >= Batch * 32 && Avx512BW.IsSupported;

    /// <summary>The kernel for <paramref name="type"/>, one of those <see cref="Handles"/> accepts.</summary>
    public static delegate*<MatMulTask*, int, int, int, void> Kernel(GgmlType type) =>
        type == GgmlType.Q8_0
            ? AvxVnni.IsSupported ? &Rows<Q8_0Row<VnniDot>> : &Rows<Q8_0Row<Avx2Dot>>
            : AvxVnni.IsSupported ? &Rows<Q4_0Row<VnniDot>> : &Rows<Q4_0Row<Avx2Dot>>;

    /// <summary>
    /// Bytes of activations: the 32-block layout of <see cref="ActivationQuantizer.Layout32"/> (paired for Q4_0),
    /// which the tail blocks and an odd last token read, then each whole token pair's interleaved copy.
    /// </summary>
    public static long ActivationBytes(GgmlType type, int cols, int tokens) =>
        PairsOffset(cols, tokens) + tokens / 2 * PairBytes(type, cols);

    private static long PairsOffset(int cols, int tokens) =>
        (ActivationQuantizer.Bytes32(cols, tokens) + NativeBuffer.Alignment - 1) / NativeBuffer.Alignment * NativeBuffer.Alignment;

    /// <summary>
    /// Bytes of one token pair's interleaved activations, a multiple of 64. Q8_0, every block: quants
    /// <c>[x₀ | x₁]</c>, negated quants <c>[-x₀ | -x₁]</c>, scales <c>[d₀ ×8 | d₁ ×8]</c>, 64 bytes each. Q4_0,
    /// the whole batches only: per pair of blocks the paired quants' halves <c>[lo₀ | lo₁ | hi₀ | hi₁]</c> (128 bytes)
    /// and scales <c>[d₀(2p) ×4, d₀(2p+1) ×4, d₁(2p) ×4, d₁(2p+1) ×4]</c>; per batch of 8 blocks the sums
    /// <c>[s₀ | s₁]</c>.
    /// </summary>
    private static long PairBytes(GgmlType type, int cols)
    {
        int blocks = cols / 32, whole = blocks - blocks % Batch;
        long bytes = type == GgmlType.Q8_0 ? blocks * 192L : whole * (64L + 32 + 8);
        return (bytes + 63) / 64 * 64;
    }

    /// <summary>
    /// Copies tokens 2·<paramref name="pair"/> and 2·<paramref name="pair"/>+1, both already quantized into the
    /// 32-block layout at the start of <paramref name="activations"/>, into their pair's interleaved form.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Interleave(GgmlType type, byte* activations, int cols, int tokens, int pair)
    {
        ActivationQuantizer.Layout32(activations, cols, tokens, out sbyte* quants, out float* scales, out float* sums);
        int blocks = cols / 32, whole = blocks - blocks % Batch;
        int t0 = 2 * pair;
        sbyte* x0 = quants + (long)t0 * cols, x1 = x0 + cols;
        float* d0 = scales + (long)t0 * blocks, d1 = d0 + blocks;
        float* s0 = sums + (long)t0 * blocks, s1 = s0 + blocks;
        byte* dst = activations + PairsOffset(cols, tokens) + pair * PairBytes(type, cols);
        int chunks = type == GgmlType.Q8_0 ? blocks : whole;
        for (int c = 0; c < chunks; c++)
        {
            var a = Avx.LoadVector256(x0 + c * 32);
            var b = Avx.LoadVector256(x1 + c * 32);
            Avx.Store((sbyte*)dst + c * 64, a);
            Avx.Store((sbyte*)dst + c * 64 + 32, b);
            if (type == GgmlType.Q8_0)
            {
                sbyte* negated = (sbyte*)dst + blocks * 64L + c * 64;
                Avx.Store(negated, Vector256<sbyte>.Zero - a);
                Avx.Store(negated + 32, Vector256<sbyte>.Zero - b);
                float* scale = (float*)(dst + blocks * 128L) + c * 16;
                Avx.Store(scale, Vector256.Create(d0[c]));
                Avx.Store(scale + 8, Vector256.Create(d1[c]));
            }
        }
        if (type == GgmlType.Q8_0) return;
        float* pairScales = (float*)(dst + whole * 64L);
        for (int p = 0; p < whole / 2; p++)
        {
            float* scale = pairScales + p * 16;
            Avx.Store(scale, Vector256.Create(Vector128.Create(d0[2 * p]), Vector128.Create(d0[2 * p + 1])));
            Avx.Store(scale + 8, Vector256.Create(Vector128.Create(d1[2 * p]), Vector128.Create(d1[2 * p + 1])));
        }
        float* batchSums = (float*)(dst + whole * 96L);
        for (int b0 = 0; b0 < whole; b0 += Batch)
        {
            Avx.Store(batchSums + b0 * 2, Avx.LoadVector256(s0 + b0));
            Avx.Store(batchSums + b0 * 2 + 8, Avx.LoadVector256(s1 + b0));
        }
    }

    /// <summary>One row against a tile of token pairs, and a lone token through the AVX2 kernels.</summary>
    private interface IPairRow
    {
        static abstract void Multiply<TPairs>(in Tile tile, byte* row, int r, int firstPair) where TPairs : IPairCount;

        static abstract float Alone(in Tile tile, byte* row, int token);
    }

    /// <summary>How many token pairs a tile holds, as a type so the JIT compiles one kernel per size with only its accumulators.</summary>
    private interface IPairCount
    {
        static abstract int Count { get; }
    }

    private struct OnePair : IPairCount { public static int Count => 1; }

    private struct TwoPairs : IPairCount { public static int Count => 2; }

    private struct FourPairs : IPairCount { public static int Count => 4; }

    private struct EightPairs : IPairCount { public static int Count => 8; }

    /// <summary>What a row kernel needs besides its row: both activation layouts and where results go.</summary>
    private readonly struct Tile
    {
        public required int Cols { get; init; }
        public required int Blocks { get; init; }
        public required int Rows { get; init; }
        public required sbyte* Quants { get; init; }
        public required float* Scales { get; init; }
        public required float* Sums { get; init; }
        public required byte* Pairs { get; init; }
        public required long PairBytes { get; init; }
        public required float* Y { get; init; }

        /// <summary>Stores token <paramref name="t"/>'s result for row <paramref name="r"/>.</summary>
        public void Store(int t, int r, float value) => Y[(long)t * Rows + r] = value;
    }

    /// <summary>
    /// Rows <paramref name="rowStart"/>..<paramref name="rowEnd"/> for every token: tiles of 8, 4, 2 and 1 token
    /// pairs with rows inside (a tile's activations stay in L1 while the chunk's rows stream from L2), then an odd
    /// last token alone.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Rows<TRow>(MatMulTask* task, int rowStart, int rowEnd, int threadIndex) where TRow : IPairRow
    {
        int cols = task->W.Cols, tokens = task->Tokens;
        ActivationQuantizer.Layout32(task->Activations, cols, tokens, out sbyte* quants, out float* scales, out float* sums);
        var tile = new Tile
        {
            Cols = cols, Blocks = cols / 32, Rows = task->W.Rows, Quants = quants, Scales = scales, Sums = sums,
            Pairs = task->Activations + PairsOffset(cols, tokens), PairBytes = PairBytes(task->W.Type, cols), Y = task->Y,
        };
        int pairs = tokens / 2;
        for (int p = 0; p < pairs;)
        {
            int left = pairs - p;
            int count = left >= 8 ? 8 : left >= 4 ? 4 : left >= 2 ? 2 : 1;
            for (int r = rowStart; r < rowEnd; r++)
            {
                byte* row = task->W.Row(r);
                if (count == 8) TRow.Multiply<EightPairs>(tile, row, r, p);
                else if (count == 4) TRow.Multiply<FourPairs>(tile, row, r, p);
                else if (count == 2) TRow.Multiply<TwoPairs>(tile, row, r, p);
                else TRow.Multiply<OnePair>(tile, row, r, p);
            }
            p += count;
        }
        if (tokens % 2 == 1)
            for (int r = rowStart; r < rowEnd; r++)
                tile.Store(tokens - 1, r, TRow.Alone(tile, task->W.Row(r), tokens - 1));
    }

    /// <summary>Q4_0: two blocks' 32 nibble bytes in both halves of a register, unpacked once for the whole tile.</summary>
    private struct Q4_0Row<TDot> : IPairRow where TDot : IIntegerDot
    {
        private const int BlockBytes = 18;

        public static float Alone(in Tile tile, byte* row, int token) =>
            PairedBlock32Kernels.Dot1<Q4_0Block, TDot>(row, tile.Blocks, tile.Quants + (long)token * tile.Cols,
                tile.Scales + (long)token * tile.Blocks, tile.Sums + (long)token * tile.Blocks);

        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        public static void Multiply<TPairs>(in Tile tile, byte* row, int r, int firstPair) where TPairs : IPairCount
        {
            int blocks = tile.Blocks, whole = blocks - blocks % Batch;
            long stride = tile.PairBytes;
            byte* quants = tile.Pairs + firstPair * stride;
            byte* scales = quants + whole * 64L;
            byte* sums = quants + whole * 96L;
            Vector512<float> acc0 = default, acc1 = default, acc2 = default, acc3 = default;
            Vector512<float> acc4 = default, acc5 = default, acc6 = default, acc7 = default;
            var nibbles = Vector512.Create((byte)0x0F);
            var halves = Vector512.Create(0, 0, 0, 0, 1, 1, 1, 1, 0, 0, 0, 0, 1, 1, 1, 1);
            for (int b0 = 0; b0 < whole; b0 += Batch)
            {
                byte* batch = row + b0 * BlockBytes;
                Block32Kernels.WeightScales<Q4_0Block>(batch, out var d8, out var offset8);
                var d = Vector512.Create(d8, d8);
                var offset = Vector512.Create(offset8, offset8);
                byte* s = sums + b0 * 8L;
                acc0 = Avx512F.FusedMultiplyAdd(offset, Avx512F.LoadVector512((float*)s), acc0);
                if (TPairs.Count > 1) acc1 = Avx512F.FusedMultiplyAdd(offset, Avx512F.LoadVector512((float*)(s + stride)), acc1);
                if (TPairs.Count > 2)
                {
                    acc2 = Avx512F.FusedMultiplyAdd(offset, Avx512F.LoadVector512((float*)(s + 2 * stride)), acc2);
                    acc3 = Avx512F.FusedMultiplyAdd(offset, Avx512F.LoadVector512((float*)(s + 3 * stride)), acc3);
                }
                if (TPairs.Count > 4)
                {
                    acc4 = Avx512F.FusedMultiplyAdd(offset, Avx512F.LoadVector512((float*)(s + 4 * stride)), acc4);
                    acc5 = Avx512F.FusedMultiplyAdd(offset, Avx512F.LoadVector512((float*)(s + 5 * stride)), acc5);
                    acc6 = Avx512F.FusedMultiplyAdd(offset, Avx512F.LoadVector512((float*)(s + 6 * stride)), acc6);
                    acc7 = Avx512F.FusedMultiplyAdd(offset, Avx512F.LoadVector512((float*)(s + 7 * stride)), acc7);
                }
                for (int p = 0; p < Batch / 2; p++)
                {
                    byte* block = batch + 2 * p * BlockBytes;
                    var packed = Vector256.Create(Sse2.LoadVector128(block + 2), Sse2.LoadVector128(block + BlockBytes + 2));
                    var raw = Vector512.Create(packed, packed);
                    var low = raw & nibbles;
                    var high = Avx512BW.ShiftRightLogical(raw.AsUInt16(), 4).AsByte() & nibbles;
                    var dq = Avx512F.PermuteVar16x32(d, halves + Vector512.Create(2 * p));
                    long at = (b0 / 2 + p) * 128L;
                    byte* q = quants + at;
                    byte* sc = scales + at / 2;
                    acc0 = Step(acc0, low, high, dq, q, sc);
                    if (TPairs.Count > 1) acc1 = Step(acc1, low, high, dq, q + stride, sc + stride);
                    if (TPairs.Count > 2)
                    {
                        acc2 = Step(acc2, low, high, dq, q + 2 * stride, sc + 2 * stride);
                        acc3 = Step(acc3, low, high, dq, q + 3 * stride, sc + 3 * stride);
                    }
                    if (TPairs.Count > 4)
                    {
                        acc4 = Step(acc4, low, high, dq, q + 4 * stride, sc + 4 * stride);
                        acc5 = Step(acc5, low, high, dq, q + 5 * stride, sc + 5 * stride);
                        acc6 = Step(acc6, low, high, dq, q + 6 * stride, sc + 6 * stride);
                        acc7 = Step(acc7, low, high, dq, q + 7 * stride, sc + 7 * stride);
                    }
                }
            }
            int t = 2 * firstPair;
            Finish(tile, row, r, t, acc0);
            if (TPairs.Count > 1) Finish(tile, row, r, t + 2, acc1);
            if (TPairs.Count > 2)
            {
                Finish(tile, row, r, t + 4, acc2);
                Finish(tile, row, r, t + 6, acc3);
            }
            if (TPairs.Count > 4)
            {
                Finish(tile, row, r, t + 8, acc4);
                Finish(tile, row, r, t + 10, acc5);
                Finish(tile, row, r, t + 12, acc6);
                Finish(tile, row, r, t + 14, acc7);
            }
        }

        /// <summary>
        /// One pair of blocks for one token pair: per half, lanes 0..3 sum the first block's products and lanes
        /// 4..7 the second's, as <see cref="PairedBlock32Kernels"/>' pair dot does.
        /// </summary>
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        private static Vector512<float> Step(Vector512<float> acc, Vector512<byte> low, Vector512<byte> high, Vector512<float> d, byte* quants, byte* scales)
        {
            // Two products of at most 15·127 from each half: their sum fits the int16 they are added in.
            var pairs = Avx512BW.MultiplyAddAdjacent(low, Avx512F.LoadVector512((sbyte*)quants))
                + Avx512BW.MultiplyAddAdjacent(high, Avx512F.LoadVector512((sbyte*)quants + 64));
            var sums = Avx512BW.MultiplyAddAdjacent(pairs, Vector512<short>.One);
            return Avx512F.FusedMultiplyAdd(Avx512F.ConvertToVector512Single(sums), d * Avx512F.LoadVector512((float*)scales), acc);
        }

        /// <summary>Adds the tail blocks to both tokens of a pair, as the AVX2 kernels do, and stores their results.</summary>
        private static void Finish(in Tile tile, byte* row, int r, int t, Vector512<float> acc)
        {
            Finish(tile, row, r, t, acc.GetLower());
            Finish(tile, row, r, t + 1, acc.GetUpper());
        }

        private static void Finish(in Tile tile, byte* row, int r, int t, Vector256<float> acc)
        {
            int blocks = tile.Blocks, whole = blocks - blocks % Batch;
            sbyte* x = tile.Quants + (long)t * tile.Cols;
            float* xd = tile.Scales + (long)t * blocks, xs = tile.Sums + (long)t * blocks;
            float offsetTail = 0;
            for (int b = whole; b < blocks; b += 2)
                PairedBlock32Kernels.AddTail<Q4_0Block, TDot>(row + b * BlockBytes, b, blocks, x + b * 32, xd, xs, ref acc, ref offsetTail);
            tile.Store(t, r, Vector256.Sum(acc) + offsetTail);
        }
    }

    /// <summary>
    /// Q8_0: a block's 32 quants in both halves of a register. <c>vpmaddubsw</c> multiplies unsigned by signed
    /// bytes, so the weights' signs move onto the activations, picked per byte from the stored negated copy.
    /// </summary>
    private struct Q8_0Row<TDot> : IPairRow where TDot : IIntegerDot
    {
        private const int BlockBytes = 34;

        public static float Alone(in Tile tile, byte* row, int token) =>
            Block32Kernels.Dot1<Q8_0Block, TDot>(row, tile.Blocks, tile.Quants + (long)token * tile.Cols,
                tile.Scales + (long)token * tile.Blocks, tile.Sums + (long)token * tile.Blocks);

        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        public static void Multiply<TPairs>(in Tile tile, byte* row, int r, int firstPair) where TPairs : IPairCount
        {
            int blocks = tile.Blocks, whole = blocks - blocks % Batch;
            long stride = tile.PairBytes;
            byte* quants = tile.Pairs + firstPair * stride;
            Vector512<float> acc0 = default, acc1 = default, acc2 = default, acc3 = default;
            Vector512<float> acc4 = default, acc5 = default, acc6 = default, acc7 = default;
            Vector256<float> d8 = default;
            for (int b = 0; b < blocks; b++)
            {
                byte* block = row + b * BlockBytes;
                // Whole batches widen their scales eight at a time, the tail one by one, as the AVX2 kernels do.
                Vector512<float> d;
                if (b < whole)
                {
                    if (b % Batch == 0) Block32Kernels.WeightScales<Q8_0Block>(block, out d8, out _);
                    d = Avx512F.PermuteVar16x32(Vector512.Create(d8, d8), Vector512.Create(b % Batch));
                }
                else
                {
                    d = Vector512.Create(F16Row.ToSingle(*(ushort*)block));
                }
                var w = Avx512F.BroadcastVector256ToVector512((long*)(block + 2)).AsSByte();
                var magnitudes = Avx512BW.Abs(w);
                var negative = Vector512.LessThan(w, Vector512<sbyte>.Zero);
                byte* q = quants + b * 64L;
                acc0 = Step(acc0, magnitudes, negative, d, q, blocks);
                if (TPairs.Count > 1) acc1 = Step(acc1, magnitudes, negative, d, q + stride, blocks);
                if (TPairs.Count > 2)
                {
                    acc2 = Step(acc2, magnitudes, negative, d, q + 2 * stride, blocks);
                    acc3 = Step(acc3, magnitudes, negative, d, q + 3 * stride, blocks);
                }
                if (TPairs.Count > 4)
                {
                    acc4 = Step(acc4, magnitudes, negative, d, q + 4 * stride, blocks);
                    acc5 = Step(acc5, magnitudes, negative, d, q + 5 * stride, blocks);
                    acc6 = Step(acc6, magnitudes, negative, d, q + 6 * stride, blocks);
                    acc7 = Step(acc7, magnitudes, negative, d, q + 7 * stride, blocks);
                }
            }
            int t = 2 * firstPair;
            Finish(tile, r, t, acc0);
            if (TPairs.Count > 1) Finish(tile, r, t + 2, acc1);
            if (TPairs.Count > 2)
            {
                Finish(tile, r, t + 4, acc2);
                Finish(tile, r, t + 6, acc3);
            }
            if (TPairs.Count > 4)
            {
                Finish(tile, r, t + 8, acc4);
                Finish(tile, r, t + 10, acc5);
                Finish(tile, r, t + 12, acc6);
                Finish(tile, r, t + 14, acc7);
            }
        }

        /// <summary>One block for one token pair; <paramref name="quants"/> is the pair's block, the negated copy and the scales follow at <paramref name="blocks"/> · 64-byte steps.</summary>
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        private static Vector512<float> Step(Vector512<float> acc, Vector512<byte> magnitudes, Vector512<sbyte> negative, Vector512<float> d, byte* quants, int blocks)
        {
            var x = Vector512.ConditionalSelect(negative,
                Avx512F.LoadVector512((sbyte*)quants + blocks * 64L), Avx512F.LoadVector512((sbyte*)quants));
            // Products of at most 128·127, two to an int16: no saturation.
            var sums = Avx512BW.MultiplyAddAdjacent(Avx512BW.MultiplyAddAdjacent(magnitudes, x), Vector512<short>.One);
            return Avx512F.FusedMultiplyAdd(Avx512F.ConvertToVector512Single(sums), d * Avx512F.LoadVector512((float*)(quants + blocks * 128L)), acc);
        }

        private static void Finish(in Tile tile, int r, int t, Vector512<float> acc)
        {
            // The AVX2 kernels add each token's offset tail, zero for signed quants, after the lanes' sum.
            float tail = 0;
            tile.Store(t, r, Vector256.Sum(acc.GetLower()) + tail);
            tile.Store(t + 1, r, Vector256.Sum(acc.GetUpper()) + tail);
        }
    }
}
