using System.Runtime.CompilerServices;
using System.Numerics.Tensors;
using System.Runtime.Intrinsics.X86;
using Velo.Tensors;
using Velo.Threading;

namespace Velo.Kernels;

/// <summary>
/// Which implementation <see cref="MatMul"/> uses; tests force the portable one to check it on AVX2 machines, and
/// the AVX2 one (no AVX-VNNI, no AVX-512) to check it on machines that have more, and the 256-bit one (AVX2 with
/// AVX-VNNI where the CPU has it, no AVX-512) to compare it with the AVX-512 kernels.
/// </summary>
internal enum MatMulPath
{
    Fastest,
    Portable,
    Avx2,

    /// <summary>The fastest without the AVX-512 kernels: AVX-VNNI's 256-bit tiles where the CPU has them.</summary>
    Avx256,
}

/// <summary>Everything a row kernel needs, shared by all threads of one <see cref="MatMul.Multiply"/>.</summary>
internal unsafe struct MatMulTask
{
    public WeightMatrix W;
    public float* X;
    public int Tokens;
    public float* Y;

    /// <summary>The activations quantized in the layout the kernel expects, or null for float kernels.</summary>
    public byte* Activations;

    /// <summary>Whether <see cref="Activations"/>' 32-block quants are stored plus 128 (<see cref="RowGroupKernels.BiasedActivations"/>).</summary>
    public bool BiasedQuants;

    /// <summary>Rows per work item.</summary>
    public int ChunkRows;

    /// <summary>
    /// Per thread, room for the rows of one work item in the form the kernel works on (floats for F16 prefill,
    /// unpacked super-blocks for K-quant prefill, one float row for the portable kernel), or null.
    /// </summary>
    public byte* RowScratch;

    /// <summary>Bytes of <see cref="RowScratch"/> per thread: thread i's room starts at i times this.</summary>
    public long RowScratchBytes;

    /// <summary>Applied to the results as they are stored (by <see cref="FloatGemm"/> and <see cref="RowGroupKernels"/>), or after each work item.</summary>
    public MatMulEpilogue Epilogue;

    /// <summary>The target's output, when <see cref="Y"/> is a scratch buffer the epilogue adds into it from.</summary>
    public float* Output;
}

/// <summary>
/// One matrix of a <see cref="MatMul.Multiply(ReadOnlySpan{MatMulTarget}, float*, int, WorkerPool)"/>, where its
/// products go, and what is done to them on the way (<see cref="MatMulEpilogue"/>: bias, GELU, residual add).
/// </summary>
internal readonly unsafe struct MatMulTarget(WeightMatrix weights, float* output, float* bias = null, MatMulOutput mode = MatMulOutput.Store)
{
    public WeightMatrix Weights { get; } = weights;

    /// <summary>tokens × Weights.Rows floats; must not overlap the activations.</summary>
    public float* Output { get; } = output;

    public MatMulEpilogue Epilogue { get; } = new(bias, mode);
}

/// <summary>
/// Weight matrix × activations: <c>y[t * Rows + r] = Σ_c W[r, c] · x[t * Cols + c]</c> for every token t. One
/// token (decode) streams the weights once and is bound by memory bandwidth; several tokens (prefill) reuse each
/// weight row, while it is in cache, for all tokens. Rows are handed out to the pool's threads in chunks; the
/// results do not depend on the thread count.
/// <para>
/// With AVX2 and FMA, quantized weights multiply activations quantized to 8 bits per call (32-blocks for Q8_0 and
/// the Q4/Q5 types, 256-blocks for the K-quants) with integer instructions (AVX-VNNI's where the CPU has them, and
/// AVX-512's where they pay: bit for bit the same results), which moves each result by at most
/// Σ|w| · max|x| / 254 per activation block; float weights multiply float activations. Q4_0 and Q8_0 weights are
/// repacked at load and multiplied by <see cref="RowGroupKernels"/> in one summation order on every machine
/// (scalar code where there is no AVX2). Elsewhere every other type is dequantized row by row and multiplied in float.
/// </para>
/// </summary>
internal static unsafe class MatMul
{
    static MatMul()
    {
        // The kernels' shuffle-mask tables must exist before a kernel is compiled: the JIT then embeds them as
        // constants. Compiled first (the CLI runs without tiering), a kernel would reload them and check for class
        // initialization on every use, which made Q6_K decode about twice as slow.
        RuntimeHelpers.RunClassConstructor(typeof(KQuantKernels).TypeHandle);
    }

    /// <summary>The most matrices one call multiplies together (Q, K and V).</summary>
    public const int MaxTargets = 4;

    /// <summary>Computes <paramref name="y"/> (tokens × Rows floats) from <paramref name="x"/> (tokens × Cols floats).</summary>
    public static void Multiply(in WeightMatrix w, float* x, int tokens, float* y, WorkerPool pool)
    {
        var target = new MatMulTarget(w, y);
        Multiply(new ReadOnlySpan<MatMulTarget>(&target, 1), x, tokens, pool, MatMulPath.Fastest);
    }

    /// <summary>
    /// Multiplies the same activations by up to <see cref="MaxTargets"/> matrices of one width — Q, K and V, or gate
    /// and up — quantizing the activations once and sharing out the rows of all of them in one dispatch. Mixed files
    /// (Q4_K_M keeps some matrices in Q6_K) need a kernel per type, so each run of same-type matrices is one dispatch.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Multiply(ReadOnlySpan<MatMulTarget> targets, float* x, int tokens, WorkerPool pool)
    {
        int start = 0;
        for (int i = 1; i <= targets.Length; i++)
        {
            if (i < targets.Length && targets[i].Weights.Type == targets[start].Weights.Type) continue;
            Multiply(targets[start..i], x, tokens, pool, MatMulPath.Fastest);
            start = i;
        }
    }

    internal static void Multiply(in WeightMatrix w, float* x, int tokens, float* y, WorkerPool pool, MatMulPath path)
    {
        var target = new MatMulTarget(w, y);
        Multiply(new ReadOnlySpan<MatMulTarget>(&target, 1), x, tokens, pool, path);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    internal static void Multiply(ReadOnlySpan<MatMulTarget> targets, float* x, int tokens, WorkerPool pool, MatMulPath path)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(tokens, 1);
        if (targets.Length is 0 or > MaxTargets)
            throw new ArgumentException($"MatMul takes 1 to {MaxTargets} matrices, not {targets.Length}.", nameof(targets));
        var first = targets[0].Weights;
        int totalRows = 0;
        foreach (var target in targets)
        {
            if (target.Weights.Type != first.Type || target.Weights.Cols != first.Cols)
                throw new ArgumentException($"Matrices multiplied together must share type and width ({first.Type}×{first.Cols} vs {target.Weights.Type}×{target.Weights.Cols}).");
            totalRows += target.Weights.Rows;
        }

        bool rowGroups = RowGroupKernels.Handles(first.Type);
        bool portable = !rowGroups && (path == MatMulPath.Portable || !Avx2.IsSupported || !Fma.IsSupported);
        bool wide = !portable && path == MatMulPath.Fastest && KQuantWideKernels.IsSupported;
        bool paired = !portable && path is not (MatMulPath.Avx2 or MatMulPath.Avx256) && FloatGemm.Handles(first.Type, tokens, first.Cols);
        ActivationFormat activations;
        var kernel = rowGroups ? RowGroupKernel(first.Type, path, out activations)
            : paired ? PairedKernel(first.Type, out activations)
            : portable ? PortableKernel(first.Type, out activations)
            : AvxVnni.IsSupported && path != MatMulPath.Avx2 ? FastKernel<VnniDot>(first.Type, tokens, wide, out activations)
            : FastKernel<Avx2Dot>(first.Type, tokens, wide, out activations);
        long scratchPerRow = portable || rowGroups ? 0
            : paired ? (FloatGemm.WidensRows(first.Type) ? first.Cols * sizeof(float) : 0)
            : FloatKernels.WidensRows(first.Type, tokens) ? first.Cols * sizeof(float)
            : KQuantKernels.ScratchBytes(first.Type, first.Cols, tokens, 1, wide);
        // Decode of repacked F16 weights (F16RowGroupKernels) takes whole groups too.
        bool f16Groups = wide && !paired && first.Type == GgmlType.F16 && first.Packed != null && F16RowGroupKernels.IsSupported;
        int chunkRows = paired ? PairedChunkRows(totalRows, pool.ThreadCount)
            : rowGroups || f16Groups ? RowGroupKernels.ChunkRows(totalRows, tokens, pool.ThreadCount)
            : ChunkRows(totalRows, tokens, pool.ThreadCount, scratchPerRow);

        // One buffer for the activations in the kernel's format and each thread's room for a chunk of rows.
        long activationBytes = activations switch
        {
            ActivationFormat.Float => 0,
            ActivationFormat.ScaledFloat => (long)tokens * first.Cols * sizeof(float),
            ActivationFormat.PairedFloat => FloatGemm.PairedBytes(tokens, first.Cols),
            ActivationFormat.Blocks256 or ActivationFormat.ChunkPairs256 or ActivationFormat.InterleavedPairs256 => ActivationQuantizer.Bytes256(first.Cols, tokens),
            _ => ActivationQuantizer.Bytes32(first.Cols, tokens),
        };
        long rowScratchBytes = rowGroups ? 0
            : portable ? first.Cols * sizeof(float)
            : paired || FloatKernels.WidensRows(first.Type, tokens) ? chunkRows * scratchPerRow
            : KQuantKernels.ScratchBytes(first.Type, first.Cols, tokens, chunkRows, wide);
        long aligned = (activationBytes + NativeBuffer.Alignment - 1) / NativeBuffer.Alignment * NativeBuffer.Alignment;
        rowScratchBytes = (rowScratchBytes + NativeBuffer.Alignment - 1) / NativeBuffer.Alignment * NativeBuffer.Alignment;
        // Kernels other than FloatGemm and RowGroupKernels store plain products, which a residual add cannot
        // overwrite the output with: those go to scratch first.
        bool kernelAppliesEpilogue = paired || rowGroups;
        long productBytes = 0;
        if (!kernelAppliesEpilogue)
            foreach (var target in targets)
                if (target.Epilogue.Output == MatMulOutput.AddToOutput)
                    productBytes += (long)tokens * target.Weights.Rows * sizeof(float);
        long rowScratchStart = aligned + productBytes;
        byte* scratch = pool.SharedScratch(rowScratchStart + pool.ThreadCount * rowScratchBytes);
        float* products = (float*)(scratch + aligned);

        MatMulTask* tasks = stackalloc MatMulTask[targets.Length];
        for (int i = 0; i < targets.Length; i++)
        {
            tasks[i] = new MatMulTask
            {
                W = targets[i].Weights,
                Y = targets[i].Output,
                X = x,
                Tokens = tokens,
                ChunkRows = chunkRows,
                Activations = activationBytes > 0 ? scratch : null,
                BiasedQuants = activations == ActivationFormat.BiasedExactBlocks32,
                RowScratch = rowScratchBytes > 0 ? scratch + rowScratchStart : null,
                RowScratchBytes = rowScratchBytes,
                Epilogue = targets[i].Epilogue,
                Output = targets[i].Output,
            };
            if (!kernelAppliesEpilogue && targets[i].Epilogue.Output == MatMulOutput.AddToOutput)
            {
                tasks[i].Y = products;
                products += (long)tokens * targets[i].Weights.Rows;
            }
        }

        if (activations == ActivationFormat.ScaledFloat)
        {
            // At most a few tokens: not worth waking the workers.
            if (!FloatKernels.ScaleForF16(x, (long)tokens * first.Cols, (float*)scratch))
                for (int i = 0; i < targets.Length; i++)
                    tasks[i].Activations = null;
        }
        var job = new RowsJob
        {
            Tasks = tasks, TaskCount = targets.Length, Kernel = kernel, ChunkRows = chunkRows, KernelAppliesEpilogue = kernelAppliesEpilogue,
            Format = activations is ActivationFormat.Float or ActivationFormat.ScaledFloat ? ActivationFormat.Float : activations,
        };
        pool.Run(ref job);
    }

    /// <summary>
    /// The definition the fast kernels are tested against: each row dequantized to float by
    /// <see cref="Dequantize.Row"/>, each dot product summed in double.
    /// </summary>
    public static void Reference(in WeightMatrix w, float* x, int tokens, float* y)
    {
        var row = new float[w.Cols];
        for (int r = 0; r < w.Rows; r++)
        {
            Dequantize.Row(w.Type, w.RowSpan(r), row);
            for (int t = 0; t < tokens; t++)
            {
                double sum = 0;
                float* xt = x + (long)t * w.Cols;
                for (int c = 0; c < w.Cols; c++)
                    sum += (double)row[c] * xt[c];
                y[(long)t * w.Rows + r] = (float)sum;
            }
        }
    }

    private enum ActivationFormat
    {
        Float,

        /// <summary>Floats times 2^112, for F16 weights read by <see cref="F16ScaledRow"/>.</summary>
        ScaledFloat,
        PairedBlocks32,
        Blocks256,

        /// <summary><see cref="Blocks256"/> with each 64 quants in <see cref="Q6_KRowGroupKernels"/>' order.</summary>
        ChunkPairs256,

        /// <summary><see cref="Blocks256"/> with each 64 quants in <see cref="Q4_KRowGroupKernels"/>' order.</summary>
        InterleavedPairs256,

        /// <summary>Floats in token pairs, for <see cref="FloatGemm.Rows{TRow}"/>.</summary>
        PairedFloat,

        /// <summary>32-blocks in element order with integer sums, for <see cref="RowGroupKernels"/>.</summary>
        ExactBlocks32,

        /// <summary><see cref="ExactBlocks32"/> with each quant plus 128, for the Q8_0 kernels that take it unsigned.</summary>
        BiasedExactBlocks32,
    }

    private static delegate*<MatMulTask*, int, int, int, void> RowGroupKernel(GgmlType type, MatMulPath path, out ActivationFormat activations)
    {
        activations = RowGroupKernels.BiasedActivations(type, path) ? ActivationFormat.BiasedExactBlocks32 : ActivationFormat.ExactBlocks32;
        return RowGroupKernels.Kernel(type, path);
    }

    private static delegate*<MatMulTask*, int, int, int, void> PairedKernel(GgmlType type, out ActivationFormat activations)
    {
        activations = ActivationFormat.PairedFloat;
        return type switch
        {
            GgmlType.F16 => &FloatGemm.Rows<F16Row>,
            GgmlType.BF16 => &FloatGemm.Rows<BF16Row>,
            _ => &FloatGemm.Rows<F32Row>,
        };
    }

    /// <summary>The AVX2 kernel of <paramref name="type"/>, or with <paramref name="wide"/> the AVX-512 one where it has one.</summary>
    private static delegate*<MatMulTask*, int, int, int, void> FastKernel<TDot>(GgmlType type, int tokens, bool wide, out ActivationFormat activations)
        where TDot : IIntegerDot
    {
        activations = type switch
        {
            GgmlType.F16 when !FloatKernels.WidensRows(type, tokens) => ActivationFormat.ScaledFloat,
            GgmlType.F32 or GgmlType.F16 or GgmlType.BF16 => ActivationFormat.Float,
            GgmlType.Q4_1 or GgmlType.Q5_0 or GgmlType.Q5_1 => ActivationFormat.PairedBlocks32,
            GgmlType.Q4_K when wide && Q4_KRowGroupKernels.Handles(tokens) => ActivationFormat.InterleavedPairs256,
            GgmlType.Q6_K when wide && Q6_KRowGroupKernels.Handles(tokens) => ActivationFormat.ChunkPairs256,
            _ => ActivationFormat.Blocks256,
        };
        bool floatWide = wide && FloatKernels.WideIsSupported;
        return type switch
        {
            GgmlType.F32 => floatWide ? &FloatKernels.WideRows<F32Row> : &FloatKernels.Rows<F32Row>,
            GgmlType.F16 => floatWide ? &F16RowGroupKernels.Rows : &FloatKernels.Rows<F16Row>,
            GgmlType.BF16 => floatWide ? &FloatKernels.WideRows<BF16Row> : &FloatKernels.Rows<BF16Row>,
            GgmlType.Q4_1 => &PairedBlock32Kernels.Rows<Q4_1Block, TDot>,
            GgmlType.Q5_0 => &PairedBlock32Kernels.Rows<Q5_0Block, TDot>,
            GgmlType.Q5_1 => &PairedBlock32Kernels.Rows<Q5_1Block, TDot>,
            GgmlType.Q4_K => wide ? &Q4_KRowGroupKernels.Rows<TDot> : &KQuantKernels.Rows<Q4_KBlock, TDot>,
            GgmlType.Q6_K => wide ? &Q6_KRowGroupKernels.Rows<TDot> : &KQuantKernels.Rows<Q6_KBlock, TDot>,
            GgmlType.Q5_K => wide ? &KQuantWideKernels.Rows<Q5_KBlock, TDot> : &KQuantKernels.Rows<Q5_KBlock, TDot>,
            GgmlType.Q2_K => wide ? &KQuantWideKernels.Rows<Q2_KBlock, TDot> : &KQuantKernels.Rows<Q2_KBlock, TDot>,
            GgmlType.Q3_K => wide ? &KQuantWideKernels.Rows<Q3_KBlock, TDot> : &KQuantKernels.Rows<Q3_KBlock, TDot>,
            _ => PortableKernel(type, out activations),
        };
    }

    private static delegate*<MatMulTask*, int, int, int, void> PortableKernel(GgmlType type, out ActivationFormat activations)
    {
        if (!GgmlTypeInfo.IsSupported(type))
            throw new NotSupportedException($"Multiplying by {type} weights is not supported.");
        activations = ActivationFormat.Float;
        return &DequantizedRows;
    }

    /// <summary>
    /// Rows per work item: small enough that every thread gets several (a thread slowed by another process then
    /// takes fewer), large enough that prefill reuses a chunk's weights from cache across all tokens. Decode steps
    /// of up to 8 tokens read each weight row for a tile or two of tokens: there a chunk's fixed costs (claiming
    /// it, the kernel's setup, a new stream of weights to prefetch) made up to a quarter of a batched step with
    /// the 16-row chunks of prefill (tiny-110M Q4_0, 2 threads: 7.1 → 4.6 ms for 2 tokens, 3.6 → 2.9 ms for 1),
    /// so they take up to 512 rows, or as many as keep rows widened or unpacked into scratch within L2.
    /// </summary>
    private static int ChunkRows(int rows, int tokens, int threads, long scratchPerRow)
    {
        if (tokens > 8) return Math.Clamp(rows / (threads * 4), 1, 16);
        int most = scratchPerRow > 0 ? (int)Math.Clamp(DecodeScratchBytes / scratchPerRow, 16, 512) : 512;
        return Math.Clamp(rows / (threads * 8), 1, most);
    }

    /// <summary>
    /// Rows per work item of the paired tiles, a multiple of their 4 rows: each item streams all the tokens'
    /// activations once, so more rows per item read them fewer times, while every thread still gets about four
    /// items. Up to 64 rows (at most 384 KiB of F32 weights, within L2): all-MiniLM-L6-v2 on one thread, 8 × 128
    /// tokens, went from 0.77× to 0.88× ONNX Runtime's speed against 16-row items; 128 rows was no better.
    /// </summary>
    private static int PairedChunkRows(int rows, int threads) => Math.Clamp(rows / (threads * 4) / 4 * 4, 4, MaxChunkRows);

    /// <summary>The most rows of one work item of <see cref="FloatGemm"/>.</summary>
    public const int MaxChunkRows = 64;

    /// <summary>
    /// Room for a decode chunk's widened or unpacked rows, well within L2 (against 16-row chunks, 4 tokens of
    /// tiny-110M: F16 23.0 → 20.9 ms, Q4_K_M 12.0 → 9.5 ms; 64 and 256 KB were no better).
    /// </summary>
    private const long DecodeScratchBytes = 128 << 10;

    /// <summary>
    /// The portable path for every type: dequantize a row once into the thread's scratch, then
    /// <see cref="TensorPrimitives.Dot(ReadOnlySpan{float}, ReadOnlySpan{float})"/> it with each token.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void DequantizedRows(MatMulTask* task, int rowStart, int rowEnd, int threadIndex)
    {
        int cols = task->W.Cols, rows = task->W.Rows;
        var row = new Span<float>(task->RowScratch + threadIndex * task->RowScratchBytes, cols);
        for (int r = rowStart; r < rowEnd; r++)
        {
            ReadOnlySpan<float> weights = task->W.Type == GgmlType.F32
                ? new ReadOnlySpan<float>(task->W.Row(r), cols)
                : DequantizeInto(task->W, r, row);
            for (int t = 0; t < task->Tokens; t++)
                task->Y[(long)t * rows + r] = TensorPrimitives.Dot(weights, new ReadOnlySpan<float>(task->X + (long)t * cols, cols));
        }
    }

    private static ReadOnlySpan<float> DequantizeInto(in WeightMatrix w, int r, Span<float> row)
    {
        Dequantize.Row(w.Type, w.RowSpan(r), row);
        return row;
    }

    private static void QuantizeToken(MatMulTask* task, ActivationFormat format, int t)
    {
        int cols = task->W.Cols, tokens = task->Tokens;
        float* x = task->X + (long)t * cols;
        if (format == ActivationFormat.PairedFloat)
            FloatGemm.PackPairs(task->X, cols, tokens, t, (float*)task->Activations);
        else if (format is ActivationFormat.ExactBlocks32 or ActivationFormat.BiasedExactBlocks32)
        {
            ActivationQuantizer.LayoutExact32(task->Activations, cols, tokens, out var quants, out var scales, out var sums);
            int blocks = cols / ActivationQuantizer.Block32;
            ActivationQuantizer.QuantizeExact32(x, cols, quants + (long)t * cols, scales + (long)t * blocks, sums + (long)t * blocks,
                biased: format == ActivationFormat.BiasedExactBlocks32);
        }
        else if (format is not (ActivationFormat.Blocks256 or ActivationFormat.ChunkPairs256 or ActivationFormat.InterleavedPairs256))
        {
            ActivationQuantizer.Layout32(task->Activations, cols, tokens, out var quants, out var scales, out var sums);
            int blocks = cols / ActivationQuantizer.Block32;
            ActivationQuantizer.Quantize32(x, cols, quants + (long)t * cols, scales + (long)t * blocks, sums + (long)t * blocks);
        }
        else
        {
            ActivationQuantizer.Layout256(task->Activations, cols, tokens, out var quants, out var scales, out var groupSums);
            ActivationQuantizer.Quantize256(x, cols, quants + (long)t * cols,
                scales + (long)t * (cols / ActivationQuantizer.Block256), groupSums + (long)t * (cols / 16));
            if (format == ActivationFormat.ChunkPairs256)
                Q6_KRowGroupKernels.PairChunks(quants + (long)t * cols, cols);
            else if (format == ActivationFormat.InterleavedPairs256)
                Q4_KRowGroupKernels.InterleavePairs(quants + (long)t * cols, cols);
        }
    }

    /// <summary>
    /// Quantizes the activations (unless <see cref="Format"/> is Float), then hands out chunks of rows of all the
    /// tasks' matrices, first come first served. Both phases share one dispatch: tokens are handed out too, and a
    /// thread that finds none left waits only for tokens that running threads have taken, so a worker that has not
    /// started (its share then run by the caller) holds nothing up.
    /// </summary>
    private struct RowsJob : IParallelJob
    {
        public MatMulTask* Tasks;
        public int TaskCount;
        public delegate*<MatMulTask*, int, int, int, void> Kernel;
        public int ChunkRows;
        public bool KernelAppliesEpilogue;
        public ActivationFormat Format;
        public int NextChunk;
        public int NextToken;
        public int QuantizedTokens;

        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        public void Execute(int threadIndex, int threadCount)
        {
            if (Format != ActivationFormat.Float)
            {
                int tokens = Tasks->Tokens;
                for (int t; (t = Interlocked.Increment(ref NextToken) - 1) < tokens;)
                {
                    QuantizeToken(Tasks, Format, t);
                    Interlocked.Increment(ref QuantizedTokens);
                }
                var spinner = new SpinWait();
                while (Volatile.Read(ref QuantizedTokens) < tokens) spinner.SpinOnce(sleep1Threshold: -1);
            }
            while (true)
            {
                int chunk = Interlocked.Increment(ref NextChunk) - 1;
                int task = 0;
                for (; task < TaskCount; task++)
                {
                    int chunks = (Tasks[task].W.Rows + ChunkRows - 1) / ChunkRows;
                    if (chunk < chunks) break;
                    chunk -= chunks;
                }
                if (task == TaskCount) return;
                int start = chunk * ChunkRows, end = Math.Min(Tasks[task].W.Rows, start + ChunkRows);
                var t = Tasks + task;
                Kernel(t, start, end, threadIndex);
                if (!KernelAppliesEpilogue && !t->Epilogue.IsNone)
                    t->Epilogue.ApplyRows(t->Y, t->Output, t->W.Rows, t->Tokens, start, end);
            }
        }
    }
}
