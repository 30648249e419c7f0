using System.Numerics.Tensors;
using Velo.Threading;

namespace Velo.Kernels;

/// <summary>
/// Causal multi-head attention of a batch of query rows against per-sequence KV caches, with grouped-query heads
/// (each KV head serves <c>heads / kvHeads</c> query heads). Row i attends to positions 0..positions[i] of the
/// cache of sequence sequences[i]. Work is split across the pool by (row, head).
/// </summary>
public static unsafe class Attention
{
    public struct Arguments
    {
        public float* Queries;       // rows × heads × headDim
        public float* Output;        // rows × heads × headDim
        public int* Positions;
        public int* Sequences;
        public int Rows;
        public int Heads;
        public int KvHeads;
        public int HeadDim;
        public float* KeyCache;      // sequences × contextLength × kvHeads × headDim
        public float* ValueCache;
        public int ContextLength;
    }

    public static void Compute(in Arguments args, WorkerPool pool)
    {
        var job = new Job { Args = args, Scores = (float*)pool.SharedScratch((long)pool.ThreadCount * args.ContextLength * sizeof(float)) };
        pool.Run(ref job);
    }

    /// <summary>Plain loops in double precision, for tests.</summary>
    public static void Reference(in Arguments a)
    {
        int kvDim = a.KvHeads * a.HeadDim;
        for (int i = 0; i < a.Rows; i++)
        for (int h = 0; h < a.Heads; h++)
        {
            int length = a.Positions[i] + 1;
            float* q = a.Queries + ((long)i * a.Heads + h) * a.HeadDim;
            long kvOffset = (long)a.Sequences[i] * a.ContextLength * kvDim + h / (a.Heads / a.KvHeads) * a.HeadDim;
            var scores = new double[length];
            double max = double.NegativeInfinity;
            for (int t = 0; t < length; t++)
            {
                float* k = a.KeyCache + kvOffset + (long)t * kvDim;
                double dot = 0;
                for (int d = 0; d < a.HeadDim; d++) dot += (double)q[d] * k[d];
                scores[t] = dot / Math.Sqrt(a.HeadDim);
                max = Math.Max(max, scores[t]);
            }
            double sum = 0;
            for (int t = 0; t < length; t++) sum += scores[t] = Math.Exp(scores[t] - max);
            float* o = a.Output + ((long)i * a.Heads + h) * a.HeadDim;
            for (int d = 0; d < a.HeadDim; d++)
            {
                double acc = 0;
                for (int t = 0; t < length; t++) acc += scores[t] / sum * a.ValueCache[kvOffset + (long)t * kvDim + d];
                o[d] = (float)acc;
            }
        }
    }

    private struct Job : IParallelJob
    {
        public Arguments Args;
        public float* Scores; // ContextLength floats per thread

        public void Execute(int threadIndex, int threadCount)
        {
            ref readonly var a = ref Args;
            int kvDim = a.KvHeads * a.HeadDim;
            int group = a.Heads / a.KvHeads;
            float scale = 1f / MathF.Sqrt(a.HeadDim);
            var scores = new Span<float>(Scores + (long)threadIndex * a.ContextLength, a.ContextLength);
            int items = a.Rows * a.Heads;
            for (int item = threadIndex; item < items; item += threadCount)
            {
                int i = item / a.Heads, h = item % a.Heads;
                int length = a.Positions[i] + 1;
                var q = new ReadOnlySpan<float>(a.Queries + (long)item * a.HeadDim, a.HeadDim);
                long kvOffset = (long)a.Sequences[i] * a.ContextLength * kvDim + h / group * a.HeadDim;
                float* keys = a.KeyCache + kvOffset;
                for (int t = 0; t < length; t++)
                    scores[t] = TensorPrimitives.Dot(q, new ReadOnlySpan<float>(keys + (long)t * kvDim, a.HeadDim)) * scale;
                var s = scores[..length];
                TensorPrimitives.SoftMax(s, s);
                var output = new Span<float>(a.Output + (long)item * a.HeadDim, a.HeadDim);
                output.Clear();
                float* values = a.ValueCache + kvOffset;
                for (int t = 0; t < length; t++)
                    TensorPrimitives.MultiplyAdd(new ReadOnlySpan<float>(values + (long)t * kvDim, a.HeadDim), s[t], output, output);
            }
        }
    }
}
