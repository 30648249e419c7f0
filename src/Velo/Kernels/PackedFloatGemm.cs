using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using Velo.Tensors;
using Velo.Threading;

namespace Velo.Kernels;

/// <summary>
/// A weight matrix (F32, or F16, BF16 or Q8_0 dequantized to F32) copied once, at load, into panels of
/// <see cref="PanelRows"/> rows that hold each column's 64 weights side by side: column c of panel p starts at
/// <c>(p · Cols + c) · 64</c>. <see cref="PackedFloatGemm"/> then reads a panel front to back, four 512-bit loads per
/// column. Only encoders use it: their batches are large, and their matrices small enough to keep an F32 copy
/// (all-MiniLM-L6-v2's take 85 MiB). The copy costs F16 files the memory of F32 but runs their batches at F32's
/// speed. Encoders' Q8_0 matrices run as integer row groups instead (<see cref="RowGroupKernels"/>, about 10 % less
/// CPU time than their F32 copy on MiniLM); the Q8_0 panels remain for comparing the two (the encoder-gemm bench).
/// </summary>
internal sealed unsafe class PackedFloatMatrix : IDisposable
{
    public const int PanelRows = 64;

    private readonly NativeBuffer _buffer;

    public PackedFloatMatrix(in WeightMatrix w)
    {
        if (!CanPack(w)) throw new ArgumentException($"a {w.Type} matrix of {w.Rows} rows cannot be packed into panels of {PanelRows} rows", nameof(w));
        Rows = w.Rows;
        Cols = w.Cols;
        _buffer = new NativeBuffer(SizeMath.Product("bytes of a packed weight matrix", SizeMath.Product("packed weights", w.Rows, w.Cols), sizeof(float)), zero: false);
        // A panel's rows widened to floats, then written out column by column: the packed copy is written in order.
        var rows = new float[PanelRows * Cols];
        for (int p = 0; p < Rows / PanelRows; p++)
        {
            for (int r = 0; r < PanelRows; r++) Dequantize.Row(w.Type, w.RowSpan(p * PanelRows + r), rows.AsSpan(r * Cols, Cols));
            float* panel = Data + (long)p * PanelRows * Cols;
            for (int c = 0; c < Cols; c++, panel += PanelRows)
                for (int r = 0; r < PanelRows; r++) panel[r] = rows[r * Cols + c];
        }
    }

    /// <summary>Whether <see cref="PackedFloatGemm"/> runs on this machine and takes <paramref name="w"/>: float or Q8_0 weights in whole panels.</summary>
    public static bool CanPack(in WeightMatrix w) =>
        PackedFloatGemm.IsSupported && w.Type is GgmlType.F32 or GgmlType.F16 or GgmlType.BF16 or GgmlType.Q8_0 && w.Rows % PanelRows == 0 && w.Cols > 0;

    public int Rows { get; }
    public int Cols { get; }
    public float* Data => _buffer.Floats;

    public void Dispose() => _buffer.Dispose();
}

/// <summary>One matrix of a <see cref="PackedFloatGemm.Multiply"/>, its output (tokens × Rows floats) and epilogue.</summary>
internal readonly unsafe struct PackedTarget(PackedFloatMatrix weights, float* output, float* bias = null, MatMulOutput mode = MatMulOutput.Store)
{
    public float* Weights { get; } = weights.Data;
    public int Rows { get; } = weights.Rows;
    public int Cols { get; } = weights.Cols;
    public float* Output { get; } = output;
    public MatMulEpilogue Epilogue { get; } = new(bias, mode);
}

/// <summary>
/// An encoder's batched products with <see cref="PackedFloatMatrix"/> weights (AVX-512): tiles of 64 rows × 6
/// tokens, twenty-four 512-bit accumulators each holding one token's sums for 16 rows, fed per column by four weight
/// loads and six broadcast activations for 24 FMAs (29 of the 32 registers in use; 32 rows × 8 tokens took 10 loads
/// for 16 FMAs). A tail of four tokens or fewer takes a 64 × 4 tile. No horizontal sums, and the results leave the
/// registers straight into the output rows, through the epilogue (bias, GELU, residual add).
/// <para>
/// Every result is one chain of fused multiply-adds over the columns in order, from zero, the same however the
/// tokens fall into tiles: a token gives the same numbers alone or in a batch of any size, and
/// <see cref="Reference"/> computes exactly that chain, so the kernel matches it bit for bit. (The chain differs
/// from <see cref="FloatGemm"/>'s eight-lane sums, which decoders use: encoders do not share their products with
/// a decode path.)
/// </para>
/// <para>
/// Work items are one panel × 96 tokens, handed out token-major: the panel (384 KiB for rows of 1536) stays in L2
/// while its sixteen token tiles pass over it, each tile's activations (36 KiB at most) in L1, and the 96 tokens'
/// activations stay in L2 while the next items take the other panels (of every matrix of the call) over them.
/// </para>
/// </summary>
internal static unsafe class PackedFloatGemm
{
    public static bool IsSupported => Avx512F.IsSupported;

    private const int TileTokens = 6;
    private const int ItemTokens = 16 * TileTokens;
    private const int Rows = PackedFloatMatrix.PanelRows;

    /// <summary>
    /// How many columns before a tile's end its output lines are asked into L1: 24 lines from L2, in flight while the
    /// last columns compute (about 24 cycles each), and too few columns of panel (256 B each) pass to evict them.
    /// </summary>
    private const int OutputLeadColumns = 32;

    /// <summary>The most matrices one call multiplies together (Q, K and V).</summary>
    public const int MaxTargets = 4;

    /// <summary>
    /// <c>y[t · Rows + r] = epilogue(Σ_c W[r, c] · x[t · Cols + c])</c> for each target, all sharing the activations
    /// <paramref name="x"/> (tokens × Cols floats), their rows and tokens handed out to the pool's threads together.
    /// </summary>
    public static void Multiply(ReadOnlySpan<PackedTarget> targets, float* x, int tokens, WorkerPool pool)
    {
        if (!IsSupported) throw new PlatformNotSupportedException("the packed float GEMM needs AVX-512");
        ArgumentOutOfRangeException.ThrowIfLessThan(tokens, 1);
        if (targets.Length is 0 or > MaxTargets)
            throw new ArgumentException($"a packed product takes 1 to {MaxTargets} matrices, not {targets.Length}", nameof(targets));
        var tasks = stackalloc Product[MaxTargets];
        int cols = targets[0].Cols, tokenItems = (tokens + ItemTokens - 1) / ItemTokens, panels = 0;
        for (int i = 0; i < targets.Length; i++)
        {
            var w = targets[i];
            if (w.Cols != cols) throw new ArgumentException($"matrices multiplied together must share their width ({cols} vs {w.Cols})", nameof(targets));
            tasks[i] = new Product { Weights = w.Weights, Rows = w.Rows, Y = targets[i].Output, Epilogue = targets[i].Epilogue, FirstPanel = panels };
            panels += w.Rows / Rows;
        }
        var job = new Job { Tasks = tasks, TaskCount = targets.Length, X = x, Tokens = tokens, Cols = cols, Panels = panels, Items = checked(tokenItems * panels) };
        pool.Run(ref job);
    }

    /// <summary>
    /// The definition the kernel is tested against: each result one fused multiply-add chain over the columns in
    /// order, then <see cref="MatMulEpilogue.Apply(float, float, int)"/>.
    /// </summary>
    public static void Reference(in WeightMatrix w, float* x, int tokens, float* y, MatMulEpilogue epilogue)
    {
        var row = new float[w.Cols];
        for (int r = 0; r < w.Rows; r++)
        {
            Dequantize.Row(w.Type, w.RowSpan(r), row);
            for (int t = 0; t < tokens; t++)
            {
                float sum = 0;
                float* xt = x + (long)t * w.Cols;
                for (int c = 0; c < w.Cols; c++) sum = MathF.FusedMultiplyAdd(row[c], xt[c], sum);
                float* result = y + (long)t * w.Rows + r;
                *result = epilogue.Apply(sum, *result, r);
            }
        }
    }

    private struct Product
    {
        public float* Weights;
        public int Rows;
        public float* Y;
        public MatMulEpilogue Epilogue;

        /// <summary>Where this matrix's panels start in the numbering of all the call's panels.</summary>
        public int FirstPanel;
    }

    private struct Job : IParallelJob
    {
        public Product* Tasks;
        public int TaskCount;
        public float* X;
        public int Tokens;
        public int Cols;
        public int Panels;
        public int Items;
        public int NextItem;

        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        public void Execute(int threadIndex, int threadCount)
        {
            // A tile's sums on their way through the epilogue: 6 tokens × 64 rows.
            float* results = stackalloc float[TileTokens * Rows];
            for (int item; (item = Interlocked.Increment(ref NextItem) - 1) < Items;)
            {
                // Token-major: consecutive items share their tokens, which stay in L2 while every panel passes over them.
                int tokenItem = item / Panels, index = item % Panels;
                var task = Tasks;
                while (task + 1 < Tasks + TaskCount && index >= (task + 1)->FirstPanel) task++;
                int r = (index - task->FirstPanel) * Rows;
                float* panel = task->Weights + (long)r * Cols;
                int tokenStart = tokenItem * ItemTokens, tokenEnd = Math.Min(Tokens, tokenStart + ItemTokens);
                for (int t = tokenStart; t < tokenEnd;)
                {
                    // Six tokens a tile; four or fewer left take the four-token tile. A short tile repeats its last
                    // token: its sums are computed again, the same, and not stored.
                    int count = Math.Min(TileTokens, tokenEnd - t), last = t + count - 1;
                    PrefetchOutput(task, r, t, count, toL1: false);
                    float* x0 = X + (long)t * Cols, x1 = X + (long)Math.Min(t + 1, last) * Cols;
                    float* x2 = X + (long)Math.Min(t + 2, last) * Cols, x3 = X + (long)Math.Min(t + 3, last) * Cols;
                    float* x4 = X + (long)Math.Min(t + 4, last) * Cols, x5 = X + (long)Math.Min(t + 5, last) * Cols;
                    // The last columns run apart, after the output's lines are asked into L1: asked for earlier, the
                    // panel streaming through L1 would evict them before the store.
                    int split = Math.Max(0, Cols - OutputLeadColumns);
                    if (count > 4)
                    {
                        Tile<SixTokens>(panel, x0, x1, x2, x3, x4, x5, 0, split, results);
                        PrefetchOutput(task, r, t, count, toL1: true);
                        Tile<SixTokens>(panel, x0, x1, x2, x3, x4, x5, split, Cols, results);
                    }
                    else
                    {
                        Tile<FourTokens>(panel, x0, x1, x2, x3, null, null, 0, split, results);
                        PrefetchOutput(task, r, t, count, toL1: true);
                        Tile<FourTokens>(panel, x0, x1, x2, x3, null, null, split, Cols, results);
                    }
                    Store(task, results, r, t, count);
                    t += count;
                }
            }
        }
    }

    /// <summary>How many tokens a tile holds, as a type so the JIT compiles one tile per size with only its accumulators.</summary>
    private interface ITileTokens
    {
        static abstract int Count { get; }
    }

    private struct SixTokens : ITileTokens { public static int Count => 6; }

    /// <summary>A short tail, where six would compute more repeated tokens.</summary>
    private struct FourTokens : ITileTokens { public static int Count => 4; }

    /// <summary>
    /// 64 rows × <typeparamref name="TTokens"/> tokens over columns <paramref name="from"/>..<paramref name="to"/>
    /// of <paramref name="panel"/>, the sums to <paramref name="results"/> (token-major, 64 floats each), continuing
    /// the sums found there unless <paramref name="from"/> is 0: a float kept in memory between two ranges is the
    /// same float, so the chains are those of one pass. <paramref name="x4"/> and <paramref name="x5"/> are read only
    /// by six-token tiles.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Tile<TTokens>(float* panel, float* x0, float* x1, float* x2, float* x3, float* x4, float* x5, int from, int to, float* results)
        where TTokens : ITileTokens
    {
        Vector512<float> a0 = default, b0 = default, c0 = default, d0 = default, a1 = default, b1 = default, c1 = default, d1 = default;
        Vector512<float> a2 = default, b2 = default, c2 = default, d2 = default, a3 = default, b3 = default, c3 = default, d3 = default;
        Vector512<float> a4 = default, b4 = default, c4 = default, d4 = default, a5 = default, b5 = default, c5 = default, d5 = default;
        if (from > 0)
        {
            a0 = Avx512F.LoadVector512(results); b0 = Avx512F.LoadVector512(results + 16); c0 = Avx512F.LoadVector512(results + 32); d0 = Avx512F.LoadVector512(results + 48);
            a1 = Avx512F.LoadVector512(results + 64); b1 = Avx512F.LoadVector512(results + 80); c1 = Avx512F.LoadVector512(results + 96); d1 = Avx512F.LoadVector512(results + 112);
            a2 = Avx512F.LoadVector512(results + 128); b2 = Avx512F.LoadVector512(results + 144); c2 = Avx512F.LoadVector512(results + 160); d2 = Avx512F.LoadVector512(results + 176);
            a3 = Avx512F.LoadVector512(results + 192); b3 = Avx512F.LoadVector512(results + 208); c3 = Avx512F.LoadVector512(results + 224); d3 = Avx512F.LoadVector512(results + 240);
            if (TTokens.Count > 4)
            {
                a4 = Avx512F.LoadVector512(results + 256); b4 = Avx512F.LoadVector512(results + 272); c4 = Avx512F.LoadVector512(results + 288); d4 = Avx512F.LoadVector512(results + 304);
                a5 = Avx512F.LoadVector512(results + 320); b5 = Avx512F.LoadVector512(results + 336); c5 = Avx512F.LoadVector512(results + 352); d5 = Avx512F.LoadVector512(results + 368);
            }
        }
        panel += (long)from * Rows;
        for (int c = from; c < to; c++, panel += Rows)
        {
            var w0 = Avx512F.LoadVector512(panel);
            var w1 = Avx512F.LoadVector512(panel + 16);
            var w2 = Avx512F.LoadVector512(panel + 32);
            var w3 = Avx512F.LoadVector512(panel + 48);
            var v = Vector512.Create(x0[c]);
            a0 = Avx512F.FusedMultiplyAdd(w0, v, a0);
            b0 = Avx512F.FusedMultiplyAdd(w1, v, b0);
            c0 = Avx512F.FusedMultiplyAdd(w2, v, c0);
            d0 = Avx512F.FusedMultiplyAdd(w3, v, d0);
            v = Vector512.Create(x1[c]);
            a1 = Avx512F.FusedMultiplyAdd(w0, v, a1);
            b1 = Avx512F.FusedMultiplyAdd(w1, v, b1);
            c1 = Avx512F.FusedMultiplyAdd(w2, v, c1);
            d1 = Avx512F.FusedMultiplyAdd(w3, v, d1);
            v = Vector512.Create(x2[c]);
            a2 = Avx512F.FusedMultiplyAdd(w0, v, a2);
            b2 = Avx512F.FusedMultiplyAdd(w1, v, b2);
            c2 = Avx512F.FusedMultiplyAdd(w2, v, c2);
            d2 = Avx512F.FusedMultiplyAdd(w3, v, d2);
            v = Vector512.Create(x3[c]);
            a3 = Avx512F.FusedMultiplyAdd(w0, v, a3);
            b3 = Avx512F.FusedMultiplyAdd(w1, v, b3);
            c3 = Avx512F.FusedMultiplyAdd(w2, v, c3);
            d3 = Avx512F.FusedMultiplyAdd(w3, v, d3);
            if (TTokens.Count > 4)
            {
                v = Vector512.Create(x4[c]);
                a4 = Avx512F.FusedMultiplyAdd(w0, v, a4);
                b4 = Avx512F.FusedMultiplyAdd(w1, v, b4);
                c4 = Avx512F.FusedMultiplyAdd(w2, v, c4);
                d4 = Avx512F.FusedMultiplyAdd(w3, v, d4);
                v = Vector512.Create(x5[c]);
                a5 = Avx512F.FusedMultiplyAdd(w0, v, a5);
                b5 = Avx512F.FusedMultiplyAdd(w1, v, b5);
                c5 = Avx512F.FusedMultiplyAdd(w2, v, c5);
                d5 = Avx512F.FusedMultiplyAdd(w3, v, d5);
            }
        }
        Avx512F.Store(results, a0); Avx512F.Store(results + 16, b0); Avx512F.Store(results + 32, c0); Avx512F.Store(results + 48, d0);
        Avx512F.Store(results + 64, a1); Avx512F.Store(results + 80, b1); Avx512F.Store(results + 96, c1); Avx512F.Store(results + 112, d1);
        Avx512F.Store(results + 128, a2); Avx512F.Store(results + 144, b2); Avx512F.Store(results + 160, c2); Avx512F.Store(results + 176, d2);
        Avx512F.Store(results + 192, a3); Avx512F.Store(results + 208, b3); Avx512F.Store(results + 224, c3); Avx512F.Store(results + 240, d3);
        if (TTokens.Count > 4)
        {
            Avx512F.Store(results + 256, a4); Avx512F.Store(results + 272, b4); Avx512F.Store(results + 288, c4); Avx512F.Store(results + 304, d4);
            Avx512F.Store(results + 320, a5); Avx512F.Store(results + 336, b5); Avx512F.Store(results + 352, c5); Avx512F.Store(results + 368, d5);
        }
    }

    /// <summary>
    /// Asks for the cache lines that <see cref="Store"/> will write (and, adding to them, read): into L2 as the tile
    /// starts, as outputs such as the FFN's hidden rows (25 MiB for 4096 tokens) are far from the core, then into L1
    /// <see cref="OutputLeadColumns"/> columns before its end. A miss at the store stalls the core for its whole
    /// latency (in profiles of the encoder bench, the stores took about 6 % of the tiles' samples with the L2 prefetch
    /// alone, 3.5 % with both).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void PrefetchOutput(Product* task, int r, int token, int count, bool toL1)
    {
        for (int i = 0; i < count; i++)
        {
            float* y = task->Y + (long)(token + i) * task->Rows + r;
            for (int j = 0; j < Rows; j += 16)
            {
                if (toL1) Sse.Prefetch0(y + j);
                else Sse.Prefetch1(y + j);
            }
        }
    }

    /// <summary>
    /// Rows r..r+63 of <paramref name="count"/> tokens from <paramref name="token"/> on, through the epilogue. Out of
    /// line, so the tiles keep their accumulators in registers; fully optimized from the first call, like the tiles
    /// (with tiering, a model's first batches would store through unoptimized code).
    /// </summary>
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    private static void Store(Product* task, float* results, int r, int token, int count)
    {
        var epilogue = task->Epilogue;
        int rows = task->Rows;
        for (int i = 0; i < count; i++)
        {
            float* y = task->Y + (long)(token + i) * rows + r;
            for (int j = 0; j < Rows; j += 16, results += 16)
                epilogue.Store(Avx512F.LoadVector512(results), y + j, r + j);
        }
    }
}
