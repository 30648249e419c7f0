using BenchmarkDotNet.Attributes;
using Velo.Kernels;
using Velo.Threading;

namespace Velo.Benchmarks;

/// <summary>
/// One layer's attention in all-MiniLM-L6-v2's encoder batch (32 inputs of 128 tokens, 12 heads of 32), on 2 threads:
/// the AVX-512 kernel with its fused softmax against the AVX2 one.
/// </summary>
public unsafe class BatchAttentionBenchmarks
{
    private const int Sequences = 32, Tokens = 128, Heads = 12, HeadDim = 32, Rows = Sequences * Tokens, Width = Heads * HeadDim;
    private float[] _q = null!, _k = null!, _v = null!, _out = null!;
    private int[] _sequences = null!;
    private WorkerPool _pool = null!;

    [Params(true, false)]
    public bool Avx512 { get; set; }

    [GlobalSetup]
    public void Setup()
    {
        var random = new Random(1);
        float[] Random() => Enumerable.Range(0, Rows * Width).Select(_ => (float)(random.NextDouble() * 4 - 2)).ToArray();
        (_q, _k, _v, _out) = (Random(), Random(), Random(), new float[Rows * Width]);
        _sequences = Enumerable.Range(0, Rows).Select(i => i / Tokens).ToArray();
        _pool = new WorkerPool(2);
    }

    [GlobalCleanup]
    public void Cleanup() => _pool.Dispose();

    [Benchmark]
    public void Attention()
    {
        fixed (float* q = _q, k = _k, v = _v, o = _out)
        fixed (int* s = _sequences)
        {
            var args = new BatchAttention.Arguments
            {
                Queries = q, Keys = k, Values = v, Output = o, Sequences = s, Rows = Rows, Heads = Heads, HeadDim = HeadDim,
                Scale = 1 / MathF.Sqrt(HeadDim),
            };
            BatchAttention.Compute(args, _pool, Avx512);
        }
    }
}
