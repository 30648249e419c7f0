using System.Numerics.Tensors;
using System.Runtime.Intrinsics;
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
            float scale = 1f / MathF.Sqrt(a.HeadDim);
            float* scores = Scores + (long)threadIndex * a.ContextLength;
            int items = a.Rows * a.Heads;
            for (int item = threadIndex; item < items; item += threadCount)
            {
                int i = item / a.Heads, h = item % a.Heads;
                int length = a.Positions[i] + 1;
                float* q = a.Queries + (long)item * a.HeadDim;
                long kvOffset = (long)a.Sequences[i] * a.ContextLength * kvDim + h / (a.Heads / a.KvHeads) * a.HeadDim;
                float* keys = a.KeyCache + kvOffset;
                for (int t = 0; t < length; t++) scores[t] = Dot(q, keys + (long)t * kvDim, a.HeadDim) * scale;
                var s = new Span<float>(scores, length);
                TensorPrimitives.SoftMax(s, s);
                WeightedSum(scores, length, a.ValueCache + kvOffset, kvDim, a.Output + (long)item * a.HeadDim, a.HeadDim);
            }
        }
    }

    // Heads are short (64–128 floats): inline vector loops beat library calls whose setup costs as much as the work.
    private static float Dot(float* a, float* b, int n)
    {
        int i = 0;
        float sum = 0;
        if (Vector256.IsHardwareAccelerated && n >= 16)
        {
            var acc0 = Vector256<float>.Zero;
            var acc1 = Vector256<float>.Zero;
            for (; i + 16 <= n; i += 16)
            {
                acc0 = Vector256.FusedMultiplyAdd(Vector256.Load(a + i), Vector256.Load(b + i), acc0);
                acc1 = Vector256.FusedMultiplyAdd(Vector256.Load(a + i + 8), Vector256.Load(b + i + 8), acc1);
            }
            sum = Vector256.Sum(acc0 + acc1);
        }
        for (; i < n; i++) sum += a[i] * b[i];
        return sum;
    }

    /// <summary>output = Σ_t weights[t] · values[t], the value rows <paramref name="stride"/> floats apart; 32 output floats stay in registers across all t.</summary>
    private static void WeightedSum(float* weights, int length, float* values, int stride, float* output, int n)
    {
        int d = 0;
        if (Vector256.IsHardwareAccelerated)
        {
            for (; d + 32 <= n; d += 32)
            {
                Vector256<float> o0 = default, o1 = default, o2 = default, o3 = default;
                float* v = values + d;
                for (int t = 0; t < length; t++, v += stride)
                {
                    var w = Vector256.Create(weights[t]);
                    o0 = Vector256.FusedMultiplyAdd(w, Vector256.Load(v), o0);
                    o1 = Vector256.FusedMultiplyAdd(w, Vector256.Load(v + 8), o1);
                    o2 = Vector256.FusedMultiplyAdd(w, Vector256.Load(v + 16), o2);
                    o3 = Vector256.FusedMultiplyAdd(w, Vector256.Load(v + 24), o3);
                }
                o0.Store(output + d);
                o1.Store(output + d + 8);
                o2.Store(output + d + 16);
                o3.Store(output + d + 24);
            }
        }
        for (; d < n; d++)
        {
            float acc = 0;
            for (int t = 0; t < length; t++) acc += weights[t] * values[(long)t * stride + d];
            output[d] = acc;
        }
    }
}
