using System.Numerics.Tensors;
using System.Runtime.Intrinsics.X86;
using Velo.Tensors;
using Velo.Threading;

namespace Velo.Kernels;

/// <summary>Which implementation <see cref="MatMul"/> uses; tests force the portable one to check it on AVX2 machines.</summary>
internal enum MatMulPath
{
    Fastest,
    Portable,
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

    /// <summary>For the portable kernel: <c>Cols</c> floats per thread, to dequantize a row into.</summary>
    public float* RowScratch;
}

/// <summary>
/// Weight matrix × activations: <c>y[t * Rows + r] = Σ_c W[r, c] · x[t * Cols + c]</c> for every token t. One
/// token (decode) streams the weights once and is bound by memory bandwidth; several tokens (prefill) reuse each
/// weight row, while it is in cache, for all tokens. Rows are handed out to the pool's threads in chunks.
/// </summary>
public static unsafe class MatMul
{
    /// <summary>Computes <paramref name="y"/> (tokens × Rows floats) from <paramref name="x"/> (tokens × Cols floats).</summary>
    public static void Multiply(in WeightMatrix w, float* x, int tokens, float* y, WorkerPool pool) =>
        Multiply(w, x, tokens, y, pool, MatMulPath.Fastest);

    internal static void Multiply(in WeightMatrix w, float* x, int tokens, float* y, WorkerPool pool, MatMulPath path)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(tokens, 1);
        ActivationFormat activations;
        var kernel = path == MatMulPath.Fastest && Avx2.IsSupported && Fma.IsSupported
            ? FastKernel(w.Type, out activations)
            : PortableKernel(w.Type, out activations);

        var task = new MatMulTask { W = w, X = x, Tokens = tokens, Y = y };
        if (activations == ActivationFormat.Float)
        {
            task.RowScratch = (float*)pool.SharedScratch((long)pool.ThreadCount * w.Cols * sizeof(float));
        }
        else
        {
            long bytes = activations != ActivationFormat.Blocks256
                ? ActivationQuantizer.Bytes32(w.Cols, tokens)
                : ActivationQuantizer.Bytes256(w.Cols, tokens);
            task.Activations = pool.SharedScratch(bytes);
            var quantize = new QuantizeJob { Task = &task, Format = activations };
            if (tokens == 1) quantize.Execute(0, 1); // not worth waking the workers for one row
            else pool.Run(ref quantize);
        }

        var job = new RowsJob { Task = &task, Kernel = kernel, ChunkRows = ChunkRows(w.Rows, tokens, pool.ThreadCount) };
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
        Blocks32,
        PairedBlocks32,
        Blocks256,
    }

    private static delegate*<MatMulTask*, int, int, int, void> FastKernel(GgmlType type, out ActivationFormat activations)
    {
        activations = type switch
        {
            GgmlType.F32 or GgmlType.F16 or GgmlType.BF16 => ActivationFormat.Float,
            GgmlType.Q8_0 => ActivationFormat.Blocks32,
            GgmlType.Q4_0 or GgmlType.Q4_1 or GgmlType.Q5_0 or GgmlType.Q5_1 => ActivationFormat.PairedBlocks32,
            _ => ActivationFormat.Blocks256,
        };
        return type switch
        {
            GgmlType.F32 => &FloatKernels.Rows<F32Row>,
            GgmlType.F16 => &FloatKernels.Rows<F16Row>,
            GgmlType.BF16 => &FloatKernels.Rows<BF16Row>,
            GgmlType.Q8_0 => &Block32Kernels.Rows<Q8_0Block>,
            GgmlType.Q4_0 => &PairedBlock32Kernels.Rows<Q4_0Block>,
            GgmlType.Q4_1 => &PairedBlock32Kernels.Rows<Q4_1Block>,
            GgmlType.Q5_0 => &PairedBlock32Kernels.Rows<Q5_0Block>,
            GgmlType.Q5_1 => &PairedBlock32Kernels.Rows<Q5_1Block>,
            GgmlType.Q4_K => &KQuantKernels.Rows<Q4_KBlock>,
            GgmlType.Q6_K => &KQuantKernels.Rows<Q6_KBlock>,
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
    /// takes fewer), large enough that prefill reuses a chunk's weights from cache across all tokens.
    /// </summary>
    private static int ChunkRows(int rows, int tokens, int threads)
    {
        int perThread = tokens == 1 ? 8 : 4;
        return Math.Clamp(rows / (threads * perThread), 1, tokens == 1 ? 64 : 16);
    }

    /// <summary>
    /// The portable path for every type: dequantize a row once into the thread's scratch, then
    /// <see cref="TensorPrimitives.Dot(ReadOnlySpan{float}, ReadOnlySpan{float})"/> it with each token.
    /// </summary>
    private static void DequantizedRows(MatMulTask* task, int rowStart, int rowEnd, int threadIndex)
    {
        int cols = task->W.Cols, rows = task->W.Rows;
        var row = new Span<float>(task->RowScratch + (long)threadIndex * cols, cols);
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

    private struct QuantizeJob : IParallelJob
    {
        public MatMulTask* Task;
        public ActivationFormat Format;

        public void Execute(int threadIndex, int threadCount)
        {
            int cols = Task->W.Cols, tokens = Task->Tokens;
            int perThread = (tokens + threadCount - 1) / threadCount;
            int end = Math.Min(tokens, (threadIndex + 1) * perThread);
            for (int t = threadIndex * perThread; t < end; t++)
            {
                float* x = Task->X + (long)t * cols;
                if (Format != ActivationFormat.Blocks256)
                {
                    ActivationQuantizer.Layout32(Task->Activations, cols, tokens, out var quants, out var scales, out var sums);
                    int blocks = cols / ActivationQuantizer.Block32;
                    ActivationQuantizer.Quantize32(x, cols, quants + (long)t * cols, scales + (long)t * blocks, sums + (long)t * blocks,
                        paired: Format == ActivationFormat.PairedBlocks32);
                }
                else
                {
                    ActivationQuantizer.Layout256(Task->Activations, cols, tokens, out var quants, out var scales, out var groupSums);
                    ActivationQuantizer.Quantize256(x, cols, quants + (long)t * cols,
                        scales + (long)t * (cols / ActivationQuantizer.Block256), groupSums + (long)t * (cols / 16));
                }
            }
        }
    }

    private struct RowsJob : IParallelJob
    {
        public MatMulTask* Task;
        public delegate*<MatMulTask*, int, int, int, void> Kernel;
        public int ChunkRows;
        public int NextRow;

        public void Execute(int threadIndex, int threadCount)
        {
            int rows = Task->W.Rows;
            while (true)
            {
                int start = Interlocked.Add(ref NextRow, ChunkRows) - ChunkRows;
                if (start >= rows) return;
                Kernel(Task, start, Math.Min(rows, start + ChunkRows), threadIndex);
            }
        }
    }
}
