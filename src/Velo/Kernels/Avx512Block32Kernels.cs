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
/// From <see cref="MinPackedTokens"/> tokens a work item first packs its chunk of rows into the thread's scratch
/// (<see cref="IPairRow.Pack"/>: quants unpacked into the bytes the registers take, scales widened), so every tile
/// of the chunk reads plain 64-byte lines instead of unpacking and widening the file's blocks again; the packed copy
/// lives only for the work item, so it costs no memory beside the mapped file and no load time. Q8_0's activation
/// pairs also carry their quants negated, so a weight's sign costs one select. Long rows go in column blocks
/// (<see cref="TileActivationBytes"/>) so a tile's activations stay in L1 while a group of rows passes over them.
/// </para>
/// <para>
/// Every token's result is bit for bit the one <see cref="Block32Kernels"/> and <see cref="PairedBlock32Kernels"/>
/// compute for it, alone or in any tile: each half of a register gets the same exact integer sums in the same lanes,
/// the same scale products and the same FMAs in the same order (the offset term of Q4_0 first in each batch of 8
/// blocks), and Q8_0's tail blocks past the last whole batch widen their scales one by one as there.
/// </para>
/// </summary>
internal static unsafe class Avx512Block32Kernels
{
    /// <summary>Fewer tokens (decode, small batches) stay on the 256-bit tiles: at 4 the gain was already small (3–15 %).</summary>
    private const int MinTokens = 4;

    private const int Batch = 8;

    /// <summary>
    /// Whether these kernels multiply <paramref name="type"/> weights of <paramref name="cols"/> columns by
    /// <paramref name="tokens"/> tokens. Q4_0 rows must be whole batches of 8 blocks: its tail blocks, run token by
    /// token through the AVX2 code, made rows of 384 columns slower than the AVX2 tiles.
    /// </summary>
    public static bool Handles(GgmlType type, int cols, int tokens) =>
        tokens >= MinTokens && cols >= Batch * 32 && Avx512BW.IsSupported && type == GgmlType.Q8_0;

    /// <summary>The kernel for <paramref name="type"/>, one of those <see cref="Handles"/> accepts.</summary>
    public static delegate*<MatMulTask*, int, int, int, void> Kernel(GgmlType type) =>
        AvxVnni.IsSupported ? &Rows<Q8_0Row<VnniDot>> : &Rows<Q8_0Row<Avx2Dot>>;

    /// <summary>
    /// Bytes of activations: the 32-block layout of <see cref="ActivationQuantizer.Layout32"/> (paired for Q4_0),
    /// which an odd last token reads, then each whole token pair's interleaved copy.
    /// </summary>
    public static long ActivationBytes(GgmlType type, int cols, int tokens) =>
        PairsOffset(cols, tokens) + tokens / 2 * PairBytes(type, cols);

    private static long PairsOffset(int cols, int tokens) =>
        (ActivationQuantizer.Bytes32(cols, tokens) + NativeBuffer.Alignment - 1) / NativeBuffer.Alignment * NativeBuffer.Alignment;

    /// <summary>
    /// Bytes of one token pair's interleaved activations, a multiple of 64: the quants of each 32-byte chunk of
    /// both tokens side by side, <c>[x₀ | x₁]</c> (for Q4_0 the paired layout's chunks, the first and second halves of
    /// two blocks), for Q8_0 the same again negated, then per batch of 8 blocks the scales <c>[d₀ | d₁]</c> (16
    /// floats, the last batch padded). Q4_0 (whole batches only) adds the batches' sums <c>[s₀ | s₁]</c>.
    /// </summary>
    private static long PairBytes(GgmlType type, int cols)
    {
        int blocks = cols / 32;
        long bytes = type == GgmlType.Q8_0 ? blocks * 128L + BatchCount(blocks) * 64L : blocks * (64L + 8 + 8);
        return (bytes + 63) / 64 * 64;
    }

    private static int BatchCount(int blocks) => (blocks + Batch - 1) / Batch;

    /// <summary>
    /// Copies tokens 2·<paramref name="pair"/> and 2·<paramref name="pair"/>+1, both already quantized into the
    /// 32-block layout at the start of <paramref name="activations"/>, into their pair's interleaved form.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Interleave(GgmlType type, byte* activations, int cols, int tokens, int pair)
    {
        ActivationQuantizer.Layout32(activations, cols, tokens, out sbyte* quants, out float* scales, out float* sums);
        int blocks = cols / 32;
        int t0 = 2 * pair;
        sbyte* x0 = quants + (long)t0 * cols, x1 = x0 + cols;
        float* d0 = scales + (long)t0 * blocks, d1 = d0 + blocks;
        float* s0 = sums + (long)t0 * blocks, s1 = s0 + blocks;
        byte* dst = activations + PairsOffset(cols, tokens) + pair * PairBytes(type, cols);
        bool q8 = type == GgmlType.Q8_0;
        sbyte* negated = (sbyte*)dst + blocks * 64L;
        for (int c = 0; c < blocks; c++)
        {
            var a = Avx.LoadVector256(x0 + c * 32);
            var b = Avx.LoadVector256(x1 + c * 32);
            Avx.Store((sbyte*)dst + c * 64, a);
            Avx.Store((sbyte*)dst + c * 64 + 32, b);
            if (q8)
            {
                Avx.Store(negated + c * 64, Vector256<sbyte>.Zero - a);
                Avx.Store(negated + c * 64 + 32, Vector256<sbyte>.Zero - b);
            }
        }
        float* batchScales = (float*)(dst + (q8 ? blocks * 128L : blocks * 64L));
        float* batchSums = batchScales + blocks * 2L;
        for (int b0 = 0; b0 < blocks; b0 += Batch)
            for (int j = 0; j < Batch; j++)
            {
                bool inside = b0 + j < blocks;
                batchScales[b0 * 2 + j] = inside ? d0[b0 + j] : 0;
                batchScales[b0 * 2 + Batch + j] = inside ? d1[b0 + j] : 0;
                if (!q8)
                {
                    batchSums[b0 * 2 + j] = s0[b0 + j];
                    batchSums[b0 * 2 + Batch + j] = s1[b0 + j];
                }
            }
    }

    /// <summary>
    /// One row against a tile of token pairs, read from the file's blocks or from the row's packed copy
    /// (<see cref="Pack"/>), and a lone token through the AVX2 kernels.
    /// </summary>
    private interface IPairRow
    {
        /// <summary>
        /// Blocks <paramref name="blockStart"/>..<paramref name="blockEnd"/> (whole batches but for a tail at the row's
        /// end) of one row against a tile: the accumulators start from <paramref name="carried"/> unless the range
        /// starts the row, and go back there unless it ends the row, where the results are stored.
        /// </summary>
        static abstract void Multiply<TPairs, TLayout>(in Tile tile, byte* row, int r, int firstPair, int blockStart, int blockEnd, Vector512<float>* carried)
            where TPairs : IPairCount where TLayout : IWeightLayout;

        /// <summary>Bytes of one token pair's activations per block, which the column blocks keep in L1.</summary>
        static abstract int PairBytesPerBlock { get; }

        static abstract float Alone(in Tile tile, byte* row, int token);

        /// <summary>Bytes of one row of <paramref name="blocks"/> blocks packed, a multiple of 64.</summary>
        static abstract long PackedBytes(int blocks);

        /// <summary>
        /// Copies a row into the form the tiles read without unpacking: quants laid out as the registers take them,
        /// scales widened to floats by the same conversions the kernel used on the file's blocks.
        /// </summary>
        static abstract void Pack(byte* row, int blocks, byte* packed);
    }

    /// <summary>Where a tile's weights come from, as a type so the JIT compiles each kernel for one of them.</summary>
    private interface IWeightLayout
    {
        static abstract bool Packed { get; }
    }

    /// <summary>The file's blocks, unpacked and their scales widened by every tile.</summary>
    private struct FileLayout : IWeightLayout { public static bool Packed => false; }

    /// <summary>The chunk's rows packed once into the thread's scratch (<see cref="IPairRow.Pack"/>), read by every tile.</summary>
    private struct PackedLayout : IWeightLayout { public static bool Packed => true; }

    /// <summary>
    /// Tokens from which a chunk's rows are packed before its tiles run: packing a row costs about what one tile
    /// spends unpacking it, so it pays once several tiles share it.
    /// </summary>
    private const int MinPackedTokens = 16;

    /// <summary>
    /// Bytes of <see cref="MatMulTask.RowScratch"/> per row that <see cref="Kernel"/> needs for <paramref name="tokens"/>
    /// tokens: room for its packed copy, or none where rows are read from the file.
    /// </summary>
    public static long RowScratchBytes(GgmlType type, int cols, int tokens) =>
        tokens < MinPackedTokens ? 0
        : Q8_0Row<Avx2Dot>.PackedBytes(cols / 32);

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
        if (RowScratchBytes(task->W.Type, cols, tokens) == 0)
        {
            Tiles<TRow, FileLayout>(tile, task->W.Data + rowStart * task->W.RowBytes, task->W.RowBytes, rowStart, rowEnd, tokens);
        }
        else
        {
            byte* packed = task->RowScratch + threadIndex * task->RowScratchBytes;
            long packedBytes = TRow.PackedBytes(tile.Blocks);
            for (int r = rowStart; r < rowEnd; r++)
                TRow.Pack(task->W.Row(r), tile.Blocks, packed + (r - rowStart) * packedBytes);
            Tiles<TRow, PackedLayout>(tile, packed, packedBytes, rowStart, rowEnd, tokens);
        }
        if (tokens % 2 == 1)
            for (int r = rowStart; r < rowEnd; r++)
                tile.Store(tokens - 1, r, TRow.Alone(tile, task->W.Row(r), tokens - 1));
    }

    /// <summary>Rows whose accumulators wait between column blocks: a tile's activations for a block are read from L1 by all of them.</summary>
    private const int GroupRows = 16;

    /// <summary>
    /// The most bytes of a tile's activations for one column block. Whole rows of 3072 and 8192 columns made a tile's
    /// activations 60–160 KiB, past L1, and Q4_0 ran at half its speed on rows of 768 (Q8_0, whose pairs take 136
    /// bytes a block, from 2048 columns).
    /// </summary>
    private const int TileActivationBytes = 24 << 10;

    /// <summary>Blocks per column block: whole batches, as even as the fewest blocks that keep a tile's activations within <see cref="TileActivationBytes"/>.</summary>
    private static int ColumnBlockBlocks(int blocks, int pairBytesPerBlock)
    {
        int most = Math.Max(Batch, TileActivationBytes / (8 * pairBytesPerBlock) / Batch * Batch);
        int count = (blocks + most - 1) / most;
        return (blocks / count + Batch - 1) / Batch * Batch;
    }

    /// <summary>
    /// The token pairs' tiles over rows <paramref name="rowStart"/>..<paramref name="rowEnd"/>, the first at
    /// <paramref name="rows"/>: per tile, groups of rows, each over the columns block by block, the accumulators
    /// stored and reloaded exactly between blocks (which changes no rounding).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Tiles<TRow, TLayout>(in Tile tile, byte* rows, long rowBytes, int rowStart, int rowEnd, int tokens)
        where TRow : IPairRow where TLayout : IWeightLayout
    {
        int pairs = tokens / 2, blocks = tile.Blocks;
        int columnBlock = ColumnBlockBlocks(blocks, TRow.PairBytesPerBlock);
        var carried = stackalloc Vector512<float>[GroupRows * 8];
        for (int p = 0; p < pairs;)
        {
            int left = pairs - p;
            int count = left >= 8 ? 8 : left >= 4 ? 4 : left >= 2 ? 2 : 1;
            for (int group = rowStart; group < rowEnd; group += GroupRows)
            {
                int groupEnd = Math.Min(rowEnd, group + GroupRows);
                for (int start = 0; start < blocks; start += columnBlock)
                {
                    int end = Math.Min(blocks, start + columnBlock);
                    for (int r = group; r < groupEnd; r++)
                    {
                        byte* row = rows + (r - rowStart) * rowBytes;
                        var acc = carried + (r - group) * 8;
                        if (count == 8) TRow.Multiply<EightPairs, TLayout>(tile, row, r, p, start, end, acc);
                        else if (count == 4) TRow.Multiply<FourPairs, TLayout>(tile, row, r, p, start, end, acc);
                        else if (count == 2) TRow.Multiply<TwoPairs, TLayout>(tile, row, r, p, start, end, acc);
                        else TRow.Multiply<OnePair, TLayout>(tile, row, r, p, start, end, acc);
                    }
                }
            }
            p += count;
        }
    }

    /// <summary>The accumulators a range of blocks starts from: zero at the row's start, else those carried from the range before.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Carry<TPairs>(int blockStart, Vector512<float>* carried, out Vector512<float> acc0, out Vector512<float> acc1, out Vector512<float> acc2,
        out Vector512<float> acc3, out Vector512<float> acc4, out Vector512<float> acc5, out Vector512<float> acc6, out Vector512<float> acc7)
        where TPairs : IPairCount
    {
        acc0 = acc1 = acc2 = acc3 = acc4 = acc5 = acc6 = acc7 = default;
        if (blockStart == 0) return;
        acc0 = carried[0];
        if (TPairs.Count > 1) acc1 = carried[1];
        if (TPairs.Count > 2)
        {
            acc2 = carried[2];
            acc3 = carried[3];
        }
        if (TPairs.Count > 4)
        {
            acc4 = carried[4];
            acc5 = carried[5];
            acc6 = carried[6];
            acc7 = carried[7];
        }
    }

    /// <summary>
    /// Ends a range of blocks: at the row's end each token's sum of its 8 lanes (plus the AVX2 kernels' tail term,
    /// zero here) is stored, else the accumulators wait in <paramref name="carried"/>.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Finish<TPairs>(in Tile tile, int r, int firstPair, bool rowEnds, Vector512<float>* carried, Vector512<float> acc0, Vector512<float> acc1,
        Vector512<float> acc2, Vector512<float> acc3, Vector512<float> acc4, Vector512<float> acc5, Vector512<float> acc6, Vector512<float> acc7)
        where TPairs : IPairCount
    {
        Spill(carried, acc0, acc1, acc2, acc3, acc4, acc5, acc6, acc7);
        if (!rowEnds) return;
        float tail = 0;
        for (int i = 0; i < TPairs.Count; i++)
        {
            tile.Store(2 * (firstPair + i), r, Vector256.Sum(carried[i].GetLower()) + tail);
            tile.Store(2 * (firstPair + i) + 1, r, Vector256.Sum(carried[i].GetUpper()) + tail);
        }
    }

    /// <summary>
    /// Stores a tile's accumulators before anything is called with them: every vector register is caller-saved on
    /// x64, so accumulators live across a call would be kept in memory through the whole loop.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Spill(Vector512<float>* to, Vector512<float> acc0, Vector512<float> acc1, Vector512<float> acc2, Vector512<float> acc3,
        Vector512<float> acc4, Vector512<float> acc5, Vector512<float> acc6, Vector512<float> acc7)
    {
        to[0] = acc0;
        to[1] = acc1;
        to[2] = acc2;
        to[3] = acc3;
        to[4] = acc4;
        to[5] = acc5;
        to[6] = acc6;
        to[7] = acc7;
    }

    /// <summary>
    /// Q8_0: a block's 32 quants in both halves of a register. <c>vpmaddubsw</c> multiplies unsigned by signed
    /// bytes, so the weights' signs move onto the activations: negated under a mask of the negative weights.
    /// </summary>
    private struct Q8_0Row<TDot> : IPairRow where TDot : IIntegerDot
    {
        private const int BlockBytes = 34;

        public static float Alone(in Tile tile, byte* row, int token) =>
            Block32Kernels.Dot1<Q8_0Block, TDot>(row, tile.Blocks, tile.Quants + (long)token * tile.Cols,
                tile.Scales + (long)token * tile.Blocks, tile.Sums + (long)token * tile.Blocks);

        /// <summary>
        /// Per block the quants' magnitudes and a byte mask of the negative ones, each in both halves (128 bytes),
        /// then per batch of 8 blocks their d as floats: whole batches widened 8 at a time into both halves, tail
        /// blocks one by one, as the kernel widens the file's.
        /// </summary>
        public static long PackedBytes(int blocks) => blocks * 128L + BatchCount(blocks) * 64L;

        public static void Pack(byte* row, int blocks, byte* packed)
        {
            int whole = blocks - blocks % Batch;
            float* scales = (float*)(packed + blocks * 128L);
            for (int b = 0; b < blocks; b++)
            {
                byte* block = row + b * BlockBytes;
                var w = Avx.LoadVector256((sbyte*)(block + 2));
                var magnitudes = Avx2.Abs(w);
                var negative = Avx2.CompareGreaterThan(Vector256<sbyte>.Zero, w);
                Avx512F.Store(packed + b * 128L, Vector512.Create(magnitudes, magnitudes));
                Avx512F.Store((sbyte*)(packed + b * 128L + 64), Vector512.Create(negative, negative));
                if (b >= whole) scales[whole * 2 + b - whole] = F16Row.ToSingle(*(ushort*)block);
            }
            for (int b0 = 0; b0 < whole; b0 += Batch)
            {
                Block32Kernels.WeightScales<Q8_0Block>(row + b0 * BlockBytes, out var d8, out _);
                Avx512F.Store(scales + b0 * 2, Vector512.Create(d8, d8));
            }
        }

        public static int PairBytesPerBlock => 128 + 8;

        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        public static void Multiply<TPairs, TLayout>(in Tile tile, byte* row, int r, int firstPair, int blockStart, int blockEnd, Vector512<float>* carried)
            where TPairs : IPairCount where TLayout : IWeightLayout
        {
            int blocks = tile.Blocks, whole = blocks - blocks % Batch;
            long stride = tile.PairBytes;
            byte* quants = tile.Pairs + firstPair * stride;
            long negated = blocks * 64L;
            byte* scales = quants + 2 * negated;
            Carry<TPairs>(blockStart, carried, out var acc0, out var acc1, out var acc2, out var acc3, out var acc4, out var acc5, out var acc6, out var acc7);
            Vector512<float> sc0 = default, sc1 = default, sc2 = default, sc3 = default;
            Vector512<float> sc4 = default, sc5 = default, sc6 = default, sc7 = default;
            var halves = Vector512.Create(0, 0, 0, 0, 0, 0, 0, 0, 8, 8, 8, 8, 8, 8, 8, 8);
            for (int b = blockStart; b < blockEnd; b++)
            {
                byte* block = TLayout.Packed ? row + b * 128L : row + b * BlockBytes;
                float* packedScales = (float*)(row + blocks * 128L);
                var select = halves + Vector512.Create(b % Batch);
                // Whole batches form their products d·dx 8 at a time, as the AVX2 kernels do; tail blocks one by one.
                if (b % Batch == 0 || b >= whole)
                {
                    Vector512<float> d;
                    if (TLayout.Packed)
                    {
                        d = b < whole ? Avx512F.LoadVector512(packedScales + b * 2) : Vector512.Create(packedScales[whole * 2 + b - whole]);
                    }
                    else if (b < whole)
                    {
                        Block32Kernels.WeightScales<Q8_0Block>(block, out var d8, out _);
                        d = Vector512.Create(d8, d8);
                    }
                    else
                    {
                        d = Vector512.Create(F16Row.ToSingle(*(ushort*)block));
                    }
                    byte* at = scales + (b - b % Batch) * 8L;
                    sc0 = d * Avx512F.LoadVector512((float*)at);
                    if (TPairs.Count > 1) sc1 = d * Avx512F.LoadVector512((float*)(at + stride));
                    if (TPairs.Count > 2)
                    {
                        sc2 = d * Avx512F.LoadVector512((float*)(at + 2 * stride));
                        sc3 = d * Avx512F.LoadVector512((float*)(at + 3 * stride));
                    }
                    if (TPairs.Count > 4)
                    {
                        sc4 = d * Avx512F.LoadVector512((float*)(at + 4 * stride));
                        sc5 = d * Avx512F.LoadVector512((float*)(at + 5 * stride));
                        sc6 = d * Avx512F.LoadVector512((float*)(at + 6 * stride));
                        sc7 = d * Avx512F.LoadVector512((float*)(at + 7 * stride));
                    }
                }
                Vector512<byte> magnitudes;
                Vector512<sbyte> negative;
                if (TLayout.Packed)
                {
                    magnitudes = Avx512F.LoadVector512(block);
                    negative = Avx512F.LoadVector512((sbyte*)(block + 64));
                }
                else
                {
                    var w = Avx512F.BroadcastVector256ToVector512((long*)(block + 2)).AsSByte();
                    magnitudes = Avx512BW.Abs(w);
                    negative = Vector512.LessThan(w, Vector512<sbyte>.Zero);
                }
                byte* q = quants + b * 64L;
                acc0 = Step(acc0, magnitudes, negative, Avx512F.PermuteVar16x32(sc0, select), q, negated);
                if (TPairs.Count > 1) acc1 = Step(acc1, magnitudes, negative, Avx512F.PermuteVar16x32(sc1, select), q + stride, negated);
                if (TPairs.Count > 2)
                {
                    acc2 = Step(acc2, magnitudes, negative, Avx512F.PermuteVar16x32(sc2, select), q + 2 * stride, negated);
                    acc3 = Step(acc3, magnitudes, negative, Avx512F.PermuteVar16x32(sc3, select), q + 3 * stride, negated);
                }
                if (TPairs.Count > 4)
                {
                    acc4 = Step(acc4, magnitudes, negative, Avx512F.PermuteVar16x32(sc4, select), q + 4 * stride, negated);
                    acc5 = Step(acc5, magnitudes, negative, Avx512F.PermuteVar16x32(sc5, select), q + 5 * stride, negated);
                    acc6 = Step(acc6, magnitudes, negative, Avx512F.PermuteVar16x32(sc6, select), q + 6 * stride, negated);
                    acc7 = Step(acc7, magnitudes, negative, Avx512F.PermuteVar16x32(sc7, select), q + 7 * stride, negated);
                }
            }
            Finish<TPairs>(tile, r, firstPair, blockEnd == blocks, carried, acc0, acc1, acc2, acc3, acc4, acc5, acc6, acc7);
        }

        /// <summary>
        /// One block for one token pair, whose quants are at <paramref name="quants"/> and negated
        /// <paramref name="negated"/> bytes further: the weights' signs cost one select, not a negation too.
        /// </summary>
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        private static Vector512<float> Step(Vector512<float> acc, Vector512<byte> magnitudes, Vector512<sbyte> negative, Vector512<float> scale, byte* quants, long negated)
        {
            var x = Vector512.ConditionalSelect(negative, Avx512F.LoadVector512((sbyte*)(quants + negated)), Avx512F.LoadVector512((sbyte*)quants));
            // Products of at most 128·127, two to an int16: no saturation.
            var sums = Avx512BW.MultiplyAddAdjacent(Avx512BW.MultiplyAddAdjacent(magnitudes, x), Vector512<short>.One);
            return Avx512F.FusedMultiplyAdd(Avx512F.ConvertToVector512Single(sums), scale, acc);
        }
    }
}
