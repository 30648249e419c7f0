using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using Velo.Tensors;

namespace Velo.Kernels;

/// <summary>
/// Q4_0 and Q8_0 weights repacked into <see cref="RowGroups"/> (16 rows interleaved) times activations quantized to
/// exact 32-blocks (<see cref="ActivationQuantizer.QuantizeExact32"/>), for any number of tokens. Every path sums in
/// one order, so a token's result is bit for bit the same on every instruction set and alone or in any batch: for
/// each row and token, over the blocks in order,
/// <code>acc = fma((float)isum_b, d_w[b] * d_x[b], acc)</code>
/// where <c>isum_b</c> is the block's exact integer dot, <c>Σ q·x − 8·Σx</c> for Q4_0 (q the unsigned nibbles, Σx
/// the integer sum of the token's block quants) and <c>Σ w·x</c> for Q8_0, and the result is acc. The integer sums are exact on every path; the float steps
/// are the same two roundings per block.
/// <para>
/// AVX-512: a register holds one block's four quant bytes of 16 rows; each of the token's four-quant groups is
/// broadcast against it, and <c>vpmaddubsw</c> products of the block's 8 steps are summed in int16 (at most
/// 8·2·15·127 = 30480) before one <c>vpmaddwd</c> by ones gives each row's block total in its int32 lane: 9
/// multiply instructions per 512 multiply-adds, then one conversion, one multiply and one FMA for 16 rows. Tiles of
/// up to 8 tokens share each unpacked block. The 256-bit path reads the same layout 8 rows per register, summing
/// with <c>vpdpbusd</c> (AVX-VNNI) or <c>vpmaddubsw</c> + <c>vpmaddwd</c>; Q8_0 runs there with AVX-VNNI or
/// without AVX-512 (<see cref="HalfQ8{TDot, TCount}"/>), else on AVX-512 as two nibbles per weight
/// (<see cref="GroupQ8_512{TCount}"/>).
/// </para>
/// </summary>
internal static unsafe class RowGroupKernels
{
    /// <summary>Whether these kernels multiply <paramref name="type"/> weights.</summary>
    public static bool Handles(GgmlType type) => RowGroups.Repacks(type);

    /// <summary>
    /// The kernel for <paramref name="type"/> on <paramref name="path"/>; each falls back to the portable one for a
    /// matrix without a repacked copy. Q8_0 runs the 256-bit kernels on AVX-512 machines with AVX-VNNI too: .NET 10
    /// has no 512-bit <c>vpdpbusd</c>, and AVX-VNNI's 256-bit one does a block's 32 products in one instruction.
    /// Without AVX-VNNI (AMD Zen 4) the AVX-512 nibble kernel took all-MiniLM-L6-v2's products from 0.8× to about
    /// 1.1× the speed of F32 FMA panels, where the 256-bit one spent a sign, a multiply, a widening and an add per 32.
    /// </summary>
    public static delegate*<MatMulTask*, int, int, int, void> Kernel(GgmlType type, MatMulPath path)
    {
        if (path == MatMulPath.Portable || !Avx2.IsSupported || !Fma.IsSupported) return &Portable;
        bool vnni = AvxVnni.IsSupported && path != MatMulPath.Avx2;
        bool wide = path == MatMulPath.Fastest && Avx512BW.IsSupported;
        if (type == GgmlType.Q8_0)
            return vnni ? &Rows256<Q8_0Halves<VnniDot>> : wide ? &Rows512<Q8_0Groups> : &Rows256<Q8_0Halves<Avx2Dot>>;
        if (wide) return &Rows512<Q4_0Groups>;
        return vnni ? &Rows256<Q4_0Halves<VnniDot>> : &Rows256<Q4_0Halves<Avx2Dot>>;
    }

    /// <summary>
    /// Whether <see cref="Kernel"/>'s choice for <paramref name="type"/> on <paramref name="path"/> reads the
    /// activations stored plus 128, as the unsigned operand of the 256-bit Q8_0 kernels (the AVX-512 one without
    /// AVX-VNNI, <see cref="GroupQ8_512{TCount}"/>, reads them signed).
    /// </summary>
    public static bool BiasedActivations(GgmlType type, MatMulPath path) =>
        type == GgmlType.Q8_0 && (AvxVnni.IsSupported && path != MatMulPath.Avx2 || path != MatMulPath.Fastest || !Avx512BW.IsSupported);

    /// <summary>
    /// Rows of a work item, whole groups: each thread gets about four items (eight for decode steps), of at most
    /// <see cref="MaxChunkRows"/> rows. Every token tile walks all of an item's groups while its activations stay in
    /// L1, so an item of a single group made prefill reread the whole batch's activations per 16 rows.
    /// </summary>
    public static int ChunkRows(int rows, int tokens, int threads)
    {
        int share = rows / (threads * (tokens > 8 ? 4 : 8));
        return Math.Clamp(share / RowGroups.Rows * RowGroups.Rows, RowGroups.Rows, MaxChunkRows);
    }

    /// <summary>About 300 KB of Q4_0 weights of 2048 columns: an item's groups stay in L2 while each token tile walks them.</summary>
    private const int MaxChunkRows = 256;

    /// <summary>
    /// The definition every path matches bit for bit, read from the file's blocks: per row and token the blocks'
    /// exact integer dots, each scaled and added in order.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Portable(MatMulTask* task, int rowStart, int rowEnd, int threadIndex)
    {
        int cols = task->W.Cols, rows = task->W.Rows, tokens = task->Tokens, blocks = cols / 32;
        ActivationQuantizer.LayoutExact32(task->Activations, cols, tokens, out sbyte* quants, out float* scales, out int* sums);
        bool q8 = task->W.Type == GgmlType.Q8_0;
        int blockBytes = q8 ? 34 : 18;
        sbyte bias = task->BiasedQuants ? unchecked((sbyte)0x80) : (sbyte)0;
        for (int r = rowStart; r < rowEnd; r++)
        {
            byte* row = task->W.Row(r);
            for (int t = 0; t < tokens; t++)
            {
                sbyte* x = quants + (long)t * cols;
                float acc = 0;
                for (int b = 0; b < blocks; b++)
                {
                    byte* block = row + b * blockBytes;
                    sbyte* xb = x + b * 32;
                    int isum = 0;
                    if (q8)
                    {
                        // Activations stored plus 128: flipping the sign bit gives the quant back.
                        for (int i = 0; i < 32; i++)
                            isum += ((sbyte*)block)[2 + i] * (sbyte)(xb[i] ^ bias);
                    }
                    else
                    {
                        byte* nibbles = block + 2;
                        for (int i = 0; i < 16; i++)
                            isum += (nibbles[i] & 0x0F) * xb[i] + (nibbles[i] >> 4) * xb[i + 16];
                        isum -= 8 * sums[(long)t * blocks + b];
                    }
                    float d = (float)BitConverter.UInt16BitsToHalf(*(ushort*)block);
                    acc = MathF.FusedMultiplyAdd(isum, d * scales[(long)t * blocks + b], acc);
                }
                float* y = task->Y + (long)t * rows + r;
                *y = task->Epilogue.Apply(acc, *y, r);
            }
        }
    }

    /// <summary>What a group kernel reads besides its group: the tile's activations and where results go.</summary>
    private readonly struct Tile
    {
        public required int Cols { get; init; }
        public required int Blocks { get; init; }
        public required int Rows { get; init; }
        public required sbyte* Quants { get; init; }
        public required float* Scales { get; init; }
        public required int* Sums { get; init; }

        /// <summary>Where lane 0 of the group's results goes for the tile's first token (it may lie before the matrix's row 0).</summary>
        public required float* Y { get; init; }

        /// <summary>The matrix row of lane 0 (negative for a slice that starts inside the group).</summary>
        public required int Row { get; init; }

        /// <summary>Applied to the results as they are stored.</summary>
        public required MatMulEpilogue Epilogue { get; init; }

        /// <summary>The lanes of the group that are rows of this work item.</summary>
        public required int FirstLane { get; init; }

        public required int EndLane { get; init; }
    }

    /// <summary>How many tokens a tile holds, as a type so the JIT compiles one kernel per size with only its accumulators.</summary>
    private interface ITokenCount
    {
        static abstract int Count { get; }
    }

    private struct OneToken : ITokenCount { public static int Count => 1; }

    private struct TwoTokens : ITokenCount { public static int Count => 2; }

    private struct FourTokens : ITokenCount { public static int Count => 4; }

    private struct EightTokens : ITokenCount { public static int Count => 8; }

    /// <summary>
    /// Rows <paramref name="rowStart"/>..<paramref name="rowEnd"/> for every token, with AVX-512: tiles of 8, 4, 2 and
    /// 1 tokens, each over the item's groups (a tile's activations stay in cache while the groups stream past).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Rows512<TGroups>(MatMulTask* task, int rowStart, int rowEnd, int threadIndex) where TGroups : IGroups512
    {
        if (task->W.Packed == null)
        {
            Portable(task, rowStart, rowEnd, threadIndex);
            return;
        }
        int cols = task->W.Cols, rows = task->W.Rows, tokens = task->Tokens, blocks = cols / 32;
        ActivationQuantizer.LayoutExact32(task->Activations, cols, tokens, out sbyte* quants, out float* scales, out int* sums);
        long groupBytes = RowGroups.GroupBytes(task->W.Type, cols);
        int first = task->W.PackedFirstLane, laneStart = first + rowStart, laneEnd = first + rowEnd;
        for (int t = 0; t < tokens;)
        {
            int left = tokens - t, count = left >= 8 ? 8 : left >= 4 ? 4 : left >= 2 ? 2 : 1;
            for (int g = laneStart / RowGroups.Rows; g * RowGroups.Rows < laneEnd; g++)
            {
                int groupLane = g * RowGroups.Rows;
                var tile = new Tile
                {
                    Cols = cols, Blocks = blocks, Rows = rows,
                    Quants = quants + (long)t * cols, Scales = scales + (long)t * blocks, Sums = sums + (long)t * blocks,
                    Y = task->Y + (long)t * rows + (groupLane - first),
                    Row = groupLane - first, Epilogue = task->Epilogue,
                    FirstLane = Math.Max(laneStart, groupLane) - groupLane, EndLane = Math.Min(laneEnd, groupLane + RowGroups.Rows) - groupLane,
                };
                byte* group = task->W.Packed + g * groupBytes;
                if (count == 8) TGroups.Multiply<EightTokens>(tile, group);
                else if (count == 4) TGroups.Multiply<FourTokens>(tile, group);
                else if (count == 2) TGroups.Multiply<TwoTokens>(tile, group);
                else TGroups.Multiply<OneToken>(tile, group);
            }
            t += count;
        }
    }

    /// <summary>A type's AVX-512 kernel for a whole group, as a type so <see cref="Rows512{TGroups}"/> is compiled once per type.</summary>
    private interface IGroups512
    {
        static abstract void Multiply<TCount>(in Tile tile, byte* group) where TCount : ITokenCount;
    }

    private struct Q4_0Groups : IGroups512
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static void Multiply<TCount>(in Tile tile, byte* group) where TCount : ITokenCount => Group512<TCount>(tile, group);
    }

    private struct Q8_0Groups : IGroups512
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static void Multiply<TCount>(in Tile tile, byte* group) where TCount : ITokenCount => GroupQ8_512<TCount>(tile, group);
    }

    private const int Q4_0PairBytes = 64 + 2 * 256;

    private const int Q8_0PairBytes = 64 + 2 * 512;

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Group512<TCount>(in Tile tile, byte* group) where TCount : ITokenCount
    {
        int blocks = tile.Blocks;
        long cols = tile.Cols;
        sbyte* x = tile.Quants;
        float* xd = tile.Scales;
        int* xs = tile.Sums;
        var mask = Vector512.Create((byte)0x0F);
        Vector512<float> acc0 = default, acc1 = default, acc2 = default, acc3 = default;
        Vector512<float> acc4 = default, acc5 = default, acc6 = default, acc7 = default;
        for (int b = 0; b < blocks; b++, x += 32)
        {
            // A pair of blocks: their scales (32 bytes each), then their quants (256 bytes each).
            byte* pair = group + (b >> 1) * Q4_0PairBytes;
            byte* q = pair + 64 + (b & 1) * 256;
            var d = Halves16((ushort*)(pair + (b & 1) * 32));
            var w0 = Vector512.Load(q);
            var w1 = Vector512.Load(q + 64);
            var w2 = Vector512.Load(q + 128);
            var w3 = Vector512.Load(q + 192);
            var l0 = w0 & mask;
            var l1 = w1 & mask;
            var l2 = w2 & mask;
            var l3 = w3 & mask;
            var h0 = Vector512.ShiftRightLogical(w0.AsUInt16(), 4).AsByte() & mask;
            var h1 = Vector512.ShiftRightLogical(w1.AsUInt16(), 4).AsByte() & mask;
            var h2 = Vector512.ShiftRightLogical(w2.AsUInt16(), 4).AsByte() & mask;
            var h3 = Vector512.ShiftRightLogical(w3.AsUInt16(), 4).AsByte() & mask;
            acc0 = Step512(acc0, l0, l1, l2, l3, h0, h1, h2, h3, x, xd[b], xs[b], d);
            if (TCount.Count > 1)
                acc1 = Step512(acc1, l0, l1, l2, l3, h0, h1, h2, h3, x + cols, xd[blocks + b], xs[blocks + b], d);
            if (TCount.Count > 2)
            {
                acc2 = Step512(acc2, l0, l1, l2, l3, h0, h1, h2, h3, x + 2 * cols, xd[2 * blocks + b], xs[2 * blocks + b], d);
                acc3 = Step512(acc3, l0, l1, l2, l3, h0, h1, h2, h3, x + 3 * cols, xd[3 * blocks + b], xs[3 * blocks + b], d);
            }
            if (TCount.Count > 4)
            {
                acc4 = Step512(acc4, l0, l1, l2, l3, h0, h1, h2, h3, x + 4 * cols, xd[4 * blocks + b], xs[4 * blocks + b], d);
                acc5 = Step512(acc5, l0, l1, l2, l3, h0, h1, h2, h3, x + 5 * cols, xd[5 * blocks + b], xs[5 * blocks + b], d);
                acc6 = Step512(acc6, l0, l1, l2, l3, h0, h1, h2, h3, x + 6 * cols, xd[6 * blocks + b], xs[6 * blocks + b], d);
                acc7 = Step512(acc7, l0, l1, l2, l3, h0, h1, h2, h3, x + 7 * cols, xd[7 * blocks + b], xs[7 * blocks + b], d);
            }
        }
        StoreTile<TCount>(tile, acc0, acc1, acc2, acc3, acc4, acc5, acc6, acc7);
    }

    /// <summary>
    /// Q8_0 with AVX-512 and no AVX-VNNI (.NET 10 has no 512-bit <c>vpdpbusd</c>): each weight byte w, read as
    /// w + 128 = 16·hi + lo, splits into two unsigned nibbles, so <c>Σ w·x = Σ lo·x + 16·Σ hi·x − 128·Σx</c> with
    /// the token's signed quants x and their integer sum Σx. The nibbles' <c>vpmaddubsw</c> products add up in int16,
    /// one per half, then two <c>vpmaddwd</c> give each row's block total exactly: 2 multiplies and 2 adds per 64
    /// multiply-adds, each step's nibbles serving the tile's tokens. The −128·Σx enters as the start of the high
    /// sums, −4·Σx in each int16 lane (<see cref="HighStart"/>), so no step after the block corrects for it. Every
    /// lane ends in int16 range, so the wrapping adds give it exactly: a low lane sums 16 products lo·x, at most
    /// 16·15·128 = 30720; a high lane, Σ over its 16 positions of (hi − 4)·x minus 4·Σx over the other lane's, at
    /// most 16·11·128 + 4·16·128 = 30720. (The sign trick of the 256-bit path needs <c>vpsignb</c>, which has no
    /// 512-bit form, and pairs of full bytes overflow int16 at once.)
    /// <para>
    /// On Zen 4 (no AVX-VNNI) a token's block costs 16 <c>vpmaddubsw</c>, 16 <c>vpaddw</c> and 8 broadcast loads of
    /// its quants, plus about 8 shared or per-block operations. Measured there, 512-bit operations issue about 2.3 a
    /// cycle (multiplies at most 1) and each 512-bit load or broadcast takes about 0.75 cycle more, so the broadcasts
    /// cost about as much as the adds; by that count 32-row tiles of 4 tokens would trade half of them for as many
    /// weight loads and unpacks, and int16 weights (<c>vpmaddwd</c>) or pairs of nibbles per broadcast need as many
    /// operations or twice the broadcasts.
    /// </para>
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void GroupQ8_512<TCount>(in Tile tile, byte* group) where TCount : ITokenCount
    {
        int blocks = tile.Blocks;
        long cols = tile.Cols;
        sbyte* x = tile.Quants;
        float* xd = tile.Scales;
        int* xs = tile.Sums;
        var mask = Vector512.Create((byte)0x0F);
        var eight = Vector512.Create((byte)0x08);
        Vector512<float> acc0 = default, acc1 = default, acc2 = default, acc3 = default;
        Vector512<float> acc4 = default, acc5 = default, acc6 = default, acc7 = default;
        for (int b = 0; b < blocks; b++, x += 32)
        {
            byte* pair = group + (b >> 1) * Q8_0PairBytes;
            byte* q = pair + 64 + (b & 1) * 512;
            Vector512<short> l0 = default, l1 = default, l2 = default, l3 = default, l4 = default, l5 = default, l6 = default, l7 = default;
            Vector512<short> h1 = default, h2 = default, h3 = default, h4 = default, h5 = default, h6 = default, h7 = default;
            // Each token's high-nibble sums start at its share of −128·Σx.
            var h0 = HighStart(xs[b]);
            if (TCount.Count > 1) h1 = HighStart(xs[blocks + b]);
            if (TCount.Count > 2)
            {
                h2 = HighStart(xs[2 * blocks + b]);
                h3 = HighStart(xs[3 * blocks + b]);
            }
            if (TCount.Count > 4)
            {
                h4 = HighStart(xs[4 * blocks + b]);
                h5 = HighStart(xs[5 * blocks + b]);
                h6 = HighStart(xs[6 * blocks + b]);
                h7 = HighStart(xs[7 * blocks + b]);
            }
            for (int j = 0; j < 8; j++)
            {
                var w = Vector512.Load(q + j * 64);
                // The low nibble of w + 128 is w's; the high one is w's high nibble with its top bit flipped.
                var lo = w & mask;
                var hi = (Vector512.ShiftRightLogical(w.AsUInt16(), 4).AsByte() & mask) ^ eight;
                sbyte* xj = x + 4 * j;
                NibbleStep(ref l0, ref h0, lo, hi, xj);
                if (TCount.Count > 1) NibbleStep(ref l1, ref h1, lo, hi, xj + cols);
                if (TCount.Count > 2)
                {
                    NibbleStep(ref l2, ref h2, lo, hi, xj + 2 * cols);
                    NibbleStep(ref l3, ref h3, lo, hi, xj + 3 * cols);
                }
                if (TCount.Count > 4)
                {
                    NibbleStep(ref l4, ref h4, lo, hi, xj + 4 * cols);
                    NibbleStep(ref l5, ref h5, lo, hi, xj + 5 * cols);
                    NibbleStep(ref l6, ref h6, lo, hi, xj + 6 * cols);
                    NibbleStep(ref l7, ref h7, lo, hi, xj + 7 * cols);
                }
            }
            var d = Halves16((ushort*)(pair + (b & 1) * 32));
            acc0 = NibbleFinish(acc0, l0, h0, xd[b], d);
            if (TCount.Count > 1) acc1 = NibbleFinish(acc1, l1, h1, xd[blocks + b], d);
            if (TCount.Count > 2)
            {
                acc2 = NibbleFinish(acc2, l2, h2, xd[2 * blocks + b], d);
                acc3 = NibbleFinish(acc3, l3, h3, xd[3 * blocks + b], d);
            }
            if (TCount.Count > 4)
            {
                acc4 = NibbleFinish(acc4, l4, h4, xd[4 * blocks + b], d);
                acc5 = NibbleFinish(acc5, l5, h5, xd[5 * blocks + b], d);
                acc6 = NibbleFinish(acc6, l6, h6, xd[6 * blocks + b], d);
                acc7 = NibbleFinish(acc7, l7, h7, xd[7 * blocks + b], d);
            }
        }
        StoreTile<TCount>(tile, acc0, acc1, acc2, acc3, acc4, acc5, acc6, acc7);
    }

    /// <summary>One step of a token: both nibbles of 16 rows' four weights times its four broadcast quants, into int16 pairs.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void NibbleStep(ref Vector512<short> low, ref Vector512<short> high, Vector512<byte> lo, Vector512<byte> hi, sbyte* x)
    {
        var xj = Broadcast512(x);
        low += Avx512BW.MultiplyAddAdjacent(lo, xj);
        high += Avx512BW.MultiplyAddAdjacent(hi, xj);
    }

    /// <summary>A token's Q8_0 block for 16 rows: <c>Σ lo·x + 16·(Σ hi·x − 8·Σx)</c>, then one conversion, multiply and FMA.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<float> NibbleFinish(Vector512<float> acc, Vector512<short> low, Vector512<short> high, float xd, Vector512<float> d)
    {
        var isum = Avx512BW.MultiplyAddAdjacent(low, Vector512.Create((short)1)) + Avx512BW.MultiplyAddAdjacent(high, Vector512.Create((short)16));
        return Avx512F.FusedMultiplyAdd(Avx512F.ConvertToVector512Single(isum), d * Vector512.Create(xd), acc);
    }

    /// <summary>
    /// Where a token's high-nibble int16 sums of a Q8_0 block start: −4·Σx in every lane (|Σx| ≤ 32·128, so it fits),
    /// a row's two lanes −8·Σx together, which <c>vpmaddwd</c> by 16 makes the −128·Σx of the nibbles' offset.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<short> HighStart(int xs) => Vector512.Create((short)(-4 * xs));

    /// <summary>One token's block for 16 rows: the exact integer totals, then one conversion, multiply and FMA.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<float> Step512(Vector512<float> acc, Vector512<byte> l0, Vector512<byte> l1, Vector512<byte> l2, Vector512<byte> l3,
        Vector512<byte> h0, Vector512<byte> h1, Vector512<byte> h2, Vector512<byte> h3, sbyte* x, float xd, int xs, Vector512<float> d)
    {
        // Each product pair is at most 2·15·127 and the eight pairs of a lane at most 30480: the int16 sums are exact.
        var low = Avx512BW.MultiplyAddAdjacent(l0, Broadcast512(x)) + Avx512BW.MultiplyAddAdjacent(l1, Broadcast512(x + 4))
            + (Avx512BW.MultiplyAddAdjacent(l2, Broadcast512(x + 8)) + Avx512BW.MultiplyAddAdjacent(l3, Broadcast512(x + 12)));
        var high = Avx512BW.MultiplyAddAdjacent(h0, Broadcast512(x + 16)) + Avx512BW.MultiplyAddAdjacent(h1, Broadcast512(x + 20))
            + (Avx512BW.MultiplyAddAdjacent(h2, Broadcast512(x + 24)) + Avx512BW.MultiplyAddAdjacent(h3, Broadcast512(x + 28)));
        var isum = Avx512BW.MultiplyAddAdjacent(low + high, Vector512.Create((short)1)) - Vector512.Create(xs << 3);
        return Avx512F.FusedMultiplyAdd(Avx512F.ConvertToVector512Single(isum), d * Vector512.Create(xd), acc);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<sbyte> Broadcast512(sbyte* x) => Vector512.Create(*(int*)x).AsSByte();

    /// <summary>
    /// 16 fp16 scales widened exactly to floats, the same floats as <see cref="F16Row.HighHalvesToSingle(Vector256{int})"/>
    /// gives: a half's exponent and mantissa bits moved to a float's places read as the value times 2^−112 (a float
    /// subnormal for a subnormal half), which one multiply by 2^112 makes the value exactly; then the sign. Six
    /// operations instead of that rebias and subnormal select's eleven, once per block and group.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<float> Halves16(ushort* halves)
    {
        var bits = Avx512F.ConvertToVector512Int32(Vector256.Load(halves));
        var magnitude = (Vector512.ShiftLeft(bits, 13) & Vector512.Create(0x0FFFE000)).AsSingle() * Vector512.Create(TwoPow112);
        return magnitude | (Vector512.ShiftLeft(bits, 16) & Vector512.Create(unchecked((int)0x80000000))).AsSingle();
    }

    private static float TwoPow112 => BitConverter.Int32BitsToSingle((127 + 112) << 23);

    /// <summary>The tile's results, one accumulator per token (those past its count are unused).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void StoreTile<TCount>(in Tile tile, Vector512<float> acc0, Vector512<float> acc1, Vector512<float> acc2, Vector512<float> acc3,
        Vector512<float> acc4, Vector512<float> acc5, Vector512<float> acc6, Vector512<float> acc7) where TCount : ITokenCount
    {
        Store(tile, 0, acc0);
        if (TCount.Count > 1) Store(tile, 1, acc1);
        if (TCount.Count > 2)
        {
            Store(tile, 2, acc2);
            Store(tile, 3, acc3);
        }
        if (TCount.Count > 4)
        {
            Store(tile, 4, acc4);
            Store(tile, 5, acc5);
            Store(tile, 6, acc6);
            Store(tile, 7, acc7);
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Store(in Tile tile, int token, Vector512<float> acc)
    {
        float* y = tile.Y + (long)token * tile.Rows;
        if (tile.FirstLane == 0 && tile.EndLane == RowGroups.Rows)
        {
            tile.Epilogue.Store(acc, y, tile.Row);
            return;
        }
        for (int lane = tile.FirstLane; lane < tile.EndLane; lane++)
            y[lane] = tile.Epilogue.Apply(acc.GetElement(lane), y[lane], tile.Row + lane);
    }

    /// <summary>
    /// The same with 256-bit registers, 8 rows (half a group) each: tiles of 4, 2 and 1 tokens. The weights are
    /// unpacked step by step, each step serving the tile's tokens, so 16 registers hold a tile.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Rows256<THalves>(MatMulTask* task, int rowStart, int rowEnd, int threadIndex) where THalves : IHalfGroups
    {
        if (task->W.Packed == null)
        {
            Portable(task, rowStart, rowEnd, threadIndex);
            return;
        }
        int cols = task->W.Cols, rows = task->W.Rows, tokens = task->Tokens, blocks = cols / 32;
        ActivationQuantizer.LayoutExact32(task->Activations, cols, tokens, out sbyte* quants, out float* scales, out int* sums);
        long groupBytes = RowGroups.GroupBytes(task->W.Type, cols);
        const int Half = RowGroups.Rows / 2;
        int first = task->W.PackedFirstLane, laneStart = first + rowStart, laneEnd = first + rowEnd;
        for (int t = 0; t < tokens;)
        {
            int left = tokens - t, count = left >= 4 ? 4 : left >= 2 ? 2 : 1;
            if (count == 1 && THalves.WholeGroupsAlone)
            {
                for (int g = laneStart / RowGroups.Rows; g * RowGroups.Rows < laneEnd; g++)
                {
                    int groupLane = g * RowGroups.Rows;
                    var tile = new Tile
                    {
                        Cols = cols, Blocks = blocks, Rows = rows,
                        Quants = quants + (long)t * cols, Scales = scales + (long)t * blocks, Sums = sums + (long)t * blocks,
                        Y = task->Y + (long)t * rows + (groupLane - first),
                    Row = groupLane - first, Epilogue = task->Epilogue,
                        FirstLane = Math.Max(laneStart, groupLane) - groupLane, EndLane = Math.Min(laneEnd, groupLane + RowGroups.Rows) - groupLane,
                    };
                    THalves.MultiplyAlone(tile, task->W.Packed + g * groupBytes);
                }
                t++;
                continue;
            }
            for (int h = laneStart / Half; h * Half < laneEnd; h++)
            {
                int halfLane = h * Half;
                var tile = new Tile
                {
                    Cols = cols, Blocks = blocks, Rows = rows,
                    Quants = quants + (long)t * cols, Scales = scales + (long)t * blocks, Sums = sums + (long)t * blocks,
                    Y = task->Y + (long)t * rows + (halfLane - first),
                    Row = halfLane - first, Epilogue = task->Epilogue,
                    FirstLane = Math.Max(laneStart, halfLane) - halfLane, EndLane = Math.Min(laneEnd, halfLane + Half) - halfLane,
                };
                // The half's lanes inside its group: its scales and quant bytes start that far in.
                byte* group = task->W.Packed + h / 2 * groupBytes;
                int offset = h % 2;
                if (count == 4) THalves.Multiply<FourTokens>(tile, group, offset);
                else if (count == 2) THalves.Multiply<TwoTokens>(tile, group, offset);
                else THalves.Multiply<OneToken>(tile, group, offset);
            }
            t += count;
        }
    }

    /// <summary>A type's 256-bit kernel for half a group, as a type so <see cref="Rows256{THalves}"/> is compiled once per type.</summary>
    private interface IHalfGroups
    {
        static abstract void Multiply<TCount>(in Tile tile, byte* group, int half) where TCount : ITokenCount;

        /// <summary>Whether a lone token (decode) runs a whole group per pass (<see cref="MultiplyAlone"/>) rather than a half.</summary>
        static abstract bool WholeGroupsAlone { get; }

        static abstract void MultiplyAlone(in Tile tile, byte* group);
    }

    private struct Q4_0Halves<TDot> : IHalfGroups where TDot : IIntegerDot
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static void Multiply<TCount>(in Tile tile, byte* group, int half) where TCount : ITokenCount => Half256<TDot, TCount>(tile, group, half);

        public static bool WholeGroupsAlone => false;

        public static void MultiplyAlone(in Tile tile, byte* group) => throw new NotSupportedException();
    }

    private struct Q8_0Halves<TDot> : IHalfGroups where TDot : IIntegerDot
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static void Multiply<TCount>(in Tile tile, byte* group, int half) where TCount : ITokenCount => HalfQ8<TDot, TCount>(tile, group, half);

        /// <summary>
        /// With AVX-VNNI: a pass over half a group read each line's other half from L2 on the second pass, while
        /// memory idled; both halves in one pass made decode's stream of lines continuous.
        /// </summary>
        public static bool WholeGroupsAlone => typeof(TDot) == typeof(VnniDot);

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static void MultiplyAlone(in Tile tile, byte* group) => GroupQ8Alone(tile, group);
    }

    /// <summary>
    /// Q8_0 with AVX-VNNI for one token over a whole group: each step's 64 bytes are two registers of 8 rows, each
    /// with its own chain for the activations and for Σw, summed as <see cref="HalfQ8{TDot, TCount}"/> sums them.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void GroupQ8Alone(in Tile tile, byte* group)
    {
        int blocks = tile.Blocks;
        sbyte* x = tile.Quants;
        float* xd = tile.Scales;
        var ones = Vector256.Create((byte)1);
        Vector256<float> low = default, high = default;
        for (int b = 0; b < blocks; b++, x += 32)
        {
            byte* pair = group + (b >> 1) * Q8_0PairBytes;
            byte* q = pair + 64 + (b & 1) * 512;
            Vector256<int> s0 = default, s1 = default, w0 = default, w1 = default;
            for (int j = 0; j < 8; j++)
            {
                var lo = Avx.LoadVector256(q + j * 64).AsSByte();
                var hi = Avx.LoadVector256(q + j * 64 + 32).AsSByte();
                var xj = Vector256.Create(*(int*)(x + 4 * j)).AsByte();
                s0 = AvxVnni.MultiplyWideningAndAdd(s0, xj, lo);
                s1 = AvxVnni.MultiplyWideningAndAdd(s1, xj, hi);
                w0 = AvxVnni.MultiplyWideningAndAdd(w0, ones, lo);
                w1 = AvxVnni.MultiplyWideningAndAdd(w1, ones, hi);
            }
            byte* weightScales = pair + (b & 1) * 32;
            var dx = Vector256.Create(xd[b]);
            low = Fma.MultiplyAdd(Avx.ConvertToVector256Single(s0 - (w0 << 7)), F16Row.Load8(weightScales, 0) * dx, low);
            high = Fma.MultiplyAdd(Avx.ConvertToVector256Single(s1 - (w1 << 7)), F16Row.Load8(weightScales, 8) * dx, high);
        }
        float* y = tile.Y;
        var epilogue = tile.Epilogue;
        if (tile.FirstLane == 0 && tile.EndLane == RowGroups.Rows)
        {
            epilogue.Store(low, y, tile.Row);
            epilogue.Store(high, y + 8, tile.Row + 8);
            return;
        }
        for (int lane = tile.FirstLane; lane < tile.EndLane; lane++)
            y[lane] = epilogue.Apply(lane < 8 ? low.GetElement(lane) : high.GetElement(lane - 8), y[lane], tile.Row + lane);
    }

    /// <summary>
    /// Q8_0, 8 rows: with AVX-VNNI, <c>vpdpbusd</c> of the activations plus 128 (unsigned) by the signed weights,
    /// minus 128·Σw, which <c>vpdpbusd</c> of ones by the weights gives once per tile; without it, the weights' signs
    /// move onto the activations for <c>vpmaddubsw</c>, each product pair widened by <c>vpmaddwd</c> at once (a pair
    /// of two −128 weights reaches 32512, so two pairs would not fit int16).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void HalfQ8<TDot, TCount>(in Tile tile, byte* group, int half) where TDot : IIntegerDot where TCount : ITokenCount
    {
        int blocks = tile.Blocks;
        long cols = tile.Cols;
        sbyte* x = tile.Quants;
        float* xd = tile.Scales;
        bool vnni = typeof(TDot) == typeof(VnniDot);
        Vector256<float> acc0 = default, acc1 = default, acc2 = default, acc3 = default;
        for (int b = 0; b < blocks; b++, x += 32)
        {
            byte* pair = group + (b >> 1) * Q8_0PairBytes;
            byte* q = pair + 64 + (b & 1) * 512 + half * 32;
            Vector256<int> s0 = default, s1 = default, s2 = default, s3 = default, weightSums = default;
            for (int j = 0; j < 8; j += 2)
            {
                var w = Avx.LoadVector256(q + j * 64).AsSByte();
                var v = Avx.LoadVector256(q + j * 64 + 64).AsSByte();
                sbyte* xj = x + 4 * j;
                if (vnni && TCount.Count == 1)
                {
                    // A lone token (decode) would wait on one chain of dependent vpdpbusd: even and odd steps
                    // go to two chains each (s1 and s2 are free), added after the block.
                    weightSums = AvxVnni.MultiplyWideningAndAdd(weightSums, Vector256.Create((byte)1), w);
                    s2 = AvxVnni.MultiplyWideningAndAdd(s2, Vector256.Create((byte)1), v);
                    s0 = AvxVnni.MultiplyWideningAndAdd(s0, Vector256.Create(*(int*)xj).AsByte(), w);
                    s1 = AvxVnni.MultiplyWideningAndAdd(s1, Vector256.Create(*(int*)(xj + 4)).AsByte(), v);
                }
                else if (vnni)
                {
                    weightSums = AvxVnni.MultiplyWideningAndAdd(AvxVnni.MultiplyWideningAndAdd(weightSums, Vector256.Create((byte)1), w), Vector256.Create((byte)1), v);
                    s0 = VnniPair(s0, w, v, xj);
                    s1 = VnniPair(s1, w, v, xj + cols);
                    if (TCount.Count > 2)
                    {
                        s2 = VnniPair(s2, w, v, xj + 2 * cols);
                        s3 = VnniPair(s3, w, v, xj + 3 * cols);
                    }
                }
                else
                {
                    var wm = Avx2.Abs(w);
                    var vm = Avx2.Abs(v);
                    s0 += SignedDot(wm, w, xj) + SignedDot(vm, v, xj + 4);
                    if (TCount.Count > 1) s1 += SignedDot(wm, w, xj + cols) + SignedDot(vm, v, xj + cols + 4);
                    if (TCount.Count > 2)
                    {
                        s2 += SignedDot(wm, w, xj + 2 * cols) + SignedDot(vm, v, xj + 2 * cols + 4);
                        s3 += SignedDot(wm, w, xj + 3 * cols) + SignedDot(vm, v, xj + 3 * cols + 4);
                    }
                }
            }
            if (vnni && TCount.Count == 1)
            {
                // Integer sums: exact in any order.
                s0 += s1;
                weightSums += s2;
            }
            if (vnni)
            {
                var offset = weightSums << 7;
                s0 -= offset;
                s1 -= offset;
                s2 -= offset;
                s3 -= offset;
            }
            var d = F16Row.Load8(pair + (b & 1) * 32 + half * 16, 0);
            acc0 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(s0), d * Vector256.Create(xd[b]), acc0);
            if (TCount.Count > 1) acc1 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(s1), d * Vector256.Create(xd[blocks + b]), acc1);
            if (TCount.Count > 2)
            {
                acc2 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(s2), d * Vector256.Create(xd[2 * blocks + b]), acc2);
                acc3 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(s3), d * Vector256.Create(xd[3 * blocks + b]), acc3);
            }
        }
        StoreTile<TCount>(tile, acc0, acc1, acc2, acc3);
    }

    /// <summary><paramref name="s"/> plus two steps' <c>vpdpbusd</c> of the broadcast activations (plus 128) by the weights.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<int> VnniPair(Vector256<int> s, Vector256<sbyte> w, Vector256<sbyte> v, sbyte* x) =>
        AvxVnni.MultiplyWideningAndAdd(AvxVnni.MultiplyWideningAndAdd(s, Vector256.Create(*(int*)x).AsByte(), w), Vector256.Create(*(int*)(x + 4)).AsByte(), v);

    /// <summary>Per lane Σ w·x of four quants, x read plus 128 and broadcast: <c>vpmaddubsw</c> of |w| by x with w's sign.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<int> SignedDot(Vector256<byte> magnitude, Vector256<sbyte> w, sbyte* x)
    {
        var signed = Vector256.Create(*(int*)x).AsSByte() ^ Vector256.Create(unchecked((sbyte)0x80));
        return Avx2.MultiplyAddAdjacent(Avx2.MultiplyAddAdjacent(magnitude, Avx2.Sign(signed, w)), Vector256.Create((short)1));
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Half256<TDot, TCount>(in Tile tile, byte* group, int half) where TDot : IIntegerDot where TCount : ITokenCount
    {
        int blocks = tile.Blocks;
        long cols = tile.Cols;
        sbyte* x = tile.Quants;
        float* xd = tile.Scales;
        int* xs = tile.Sums;
        var mask = Vector256.Create((byte)0x0F);
        Vector256<float> acc0 = default, acc1 = default, acc2 = default, acc3 = default;
        for (int b = 0; b < blocks; b++, x += 32)
        {
            byte* pair = group + (b >> 1) * Q4_0PairBytes;
            byte* q = pair + 64 + (b & 1) * 256 + half * 32;
            Vector256<int> s0 = default, s1 = default, s2 = default, s3 = default;
            Vector256<short> p0 = default, p1 = default, p2 = default, p3 = default;
            for (int j = 0; j < 4; j++)
            {
                var w = Avx.LoadVector256(q + j * 64);
                var low = w & mask;
                var high = Avx2.ShiftRightLogical(w.AsUInt16(), 4).AsByte() & mask;
                sbyte* xj = x + 4 * j;
                Accumulate<TDot>(ref s0, ref p0, low, high, xj);
                if (TCount.Count > 1) Accumulate<TDot>(ref s1, ref p1, low, high, xj + cols);
                if (TCount.Count > 2)
                {
                    Accumulate<TDot>(ref s2, ref p2, low, high, xj + 2 * cols);
                    Accumulate<TDot>(ref s3, ref p3, low, high, xj + 3 * cols);
                }
            }
            var d = F16Row.Load8(pair + (b & 1) * 32 + half * 16, 0);
            acc0 = Finish256<TDot>(acc0, s0, p0, xd[b], xs[b], d);
            if (TCount.Count > 1) acc1 = Finish256<TDot>(acc1, s1, p1, xd[blocks + b], xs[blocks + b], d);
            if (TCount.Count > 2)
            {
                acc2 = Finish256<TDot>(acc2, s2, p2, xd[2 * blocks + b], xs[2 * blocks + b], d);
                acc3 = Finish256<TDot>(acc3, s3, p3, xd[3 * blocks + b], xs[3 * blocks + b], d);
            }
        }
        StoreTile<TCount>(tile, acc0, acc1, acc2, acc3);
    }

    /// <summary>
    /// Adds one step's low and high nibbles times the token's broadcast quants: into int32 lanes with AVX-VNNI, else
    /// into int16 pairs (exact: at most 30480 after all 8 steps).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Accumulate<TDot>(ref Vector256<int> s, ref Vector256<short> p, Vector256<byte> low, Vector256<byte> high, sbyte* x)
        where TDot : IIntegerDot
    {
        var xl = Vector256.Create(*(int*)x).AsSByte();
        var xh = Vector256.Create(*(int*)(x + 16)).AsSByte();
        if (typeof(TDot) == typeof(VnniDot))
            s = AvxVnni.MultiplyWideningAndAdd(AvxVnni.MultiplyWideningAndAdd(s, low, xl), high, xh);
        else
            p += Avx2.MultiplyAddAdjacent(low, xl) + Avx2.MultiplyAddAdjacent(high, xh);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> Finish256<TDot>(Vector256<float> acc, Vector256<int> s, Vector256<short> p, float xd, int xs, Vector256<float> d)
        where TDot : IIntegerDot
    {
        var total = typeof(TDot) == typeof(VnniDot) ? s : Avx2.MultiplyAddAdjacent(p, Vector256.Create((short)1));
        var isum = total - Vector256.Create(xs << 3);
        return Fma.MultiplyAdd(Avx.ConvertToVector256Single(isum), d * Vector256.Create(xd), acc);
    }

    /// <summary>The tile's results, one accumulator per token (those past its count are unused).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void StoreTile<TCount>(in Tile tile, Vector256<float> acc0, Vector256<float> acc1, Vector256<float> acc2, Vector256<float> acc3)
        where TCount : ITokenCount
    {
        Store(tile, 0, acc0);
        if (TCount.Count > 1) Store(tile, 1, acc1);
        if (TCount.Count > 2)
        {
            Store(tile, 2, acc2);
            Store(tile, 3, acc3);
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Store(in Tile tile, int token, Vector256<float> acc)
    {
        float* y = tile.Y + (long)token * tile.Rows;
        if (tile.FirstLane == 0 && tile.EndLane == RowGroups.Rows / 2)
        {
            tile.Epilogue.Store(acc, y, tile.Row);
            return;
        }
        for (int lane = tile.FirstLane; lane < tile.EndLane; lane++)
            y[lane] = tile.Epilogue.Apply(acc.GetElement(lane), y[lane], tile.Row + lane);
    }
}
