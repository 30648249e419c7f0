using BenchmarkDotNet.Attributes;
using Velo.Kernels;
using Velo.Tensors;
using Velo.Threading;

namespace Velo.Benchmarks;

/// <summary>
/// One weight matrix of a 1B model's feed-forward shape times one token (decode: bound by memory bandwidth) or
/// 64 tokens (prefill: bound by compute), per weight type.
/// </summary>
[MemoryDiagnoser]
public unsafe class MatMulBenchmarks
{
    private const int Rows = 8192, Cols = 2048;
    private NativeBuffer _weights = null!, _x = null!, _y = null!;
    private WorkerPool _pool = null!;
    private WeightMatrix _matrix;

    [Params(GgmlType.F16, GgmlType.Q8_0, GgmlType.Q4_0, GgmlType.Q4_K, GgmlType.Q6_K)]
    public GgmlType Type { get; set; }

    [Params(1, 64)]
    public int Tokens { get; set; }

    [Params(1, 2)]
    public int Threads { get; set; }

    [GlobalSetup]
    public void Setup()
    {
        long rowBytes = GgmlTypeInfo.RowBytes(Type, Cols);
        _weights = new NativeBuffer(rowBytes * Rows);
        var rng = new Random(1);
        var row = new float[Cols];
        for (int r = 0; r < Rows; r++)
        {
            for (int c = 0; c < Cols; c++) row[c] = (float)(rng.NextDouble() * 0.04 - 0.02);
            Quantize.Row(Type, row, new Span<byte>((byte*)_weights.Pointer + r * rowBytes, (int)rowBytes));
        }
        _x = new NativeBuffer((long)Tokens * Cols * sizeof(float));
        for (long i = 0; i < (long)Tokens * Cols; i++) _x.Floats[i] = (float)(rng.NextDouble() * 2 - 1);
        _y = new NativeBuffer((long)Tokens * Rows * sizeof(float));
        _matrix = new WeightMatrix((byte*)_weights.Pointer, Type, Rows, Cols);
        _pool = new WorkerPool(Threads);
    }

    [Benchmark]
    public void Multiply() => MatMul.Multiply(_matrix, _x.Floats, Tokens, _y.Floats, _pool);

    [GlobalCleanup]
    public void Cleanup()
    {
        _pool.Dispose();
        _weights.Dispose();
        _x.Dispose();
        _y.Dispose();
    }
}
