using Velo.Backends;
using Velo.Backends.Cpu;
using Velo.Models.Blocks;
using Velo.Runtime;
using Velo.Tensors;
using Velo.Threading;

namespace Velo.Models.Phi3;

/// <summary>Everything a Phi-3 forward pass writes: activations for up to <see cref="MaxBatch"/> tokens, the KV cache and the logits, all allocated once.</summary>
internal sealed unsafe class Phi3State : IModelState
{
    private readonly List<NativeBuffer> _buffers = [];
    private readonly WorkerPool _pool;
    private readonly bool _ownsPool;
    private readonly int _vocabSize;

    /// <param name="ropeFactors">The LongRoPE factors this state's context length selects, or null.</param>
    public Phi3State(Phi3Config c, float* ropeFactors, int contextLength, int maxBatch, int sequences, int maxLogitRows, WorkerPool? pool,
        KvCacheTypes cacheTypes)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(maxBatch, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(sequences, 1);
        MaxBatch = maxBatch;
        MaxLogitRows = maxLogitRows;
        RopeFactors = ropeFactors;
        _vocabSize = c.VocabSize;
        _ownsPool = pool == null;
        _pool = pool ?? new WorkerPool(1);
        Backend = new CpuBackend(_pool);
        Cache = new KvCache(c.Layers, sequences, contextLength, c.KvHeads, c.HeadDim, cacheTypes.Keys, cacheTypes.Values);
        var floats = new ScratchFloats(c, maxBatch, maxLogitRows);
        X = Floats(floats.X);
        Xb = Floats(floats.Xb);
        Attention = new AttentionBuffers(Floats(floats.Q), Floats(floats.K), Floats(floats.V), Floats(floats.AttentionOut));
        Gate = Floats(floats.Gate);
        Up = Floats(floats.Up);
        Rope = new RopeTable(Floats(floats.RopeCos), Floats(floats.RopeSin), c.RopeDims / 2);
        LogitsPointer = Floats(floats.Logits);
    }

    /// <summary>The bytes of activations and logits a state allocates besides its KV cache.</summary>
    /// <exception cref="OverflowException">The size does not fit in 63 bits.</exception>
    public static long ScratchBytesFor(Phi3Config config, int maxBatch, int maxLogitRows) =>
        checked(new ScratchFloats(config, maxBatch, maxLogitRows).Total * sizeof(float));

    public long ScratchBytes => _buffers.Sum(b => b.Length);

    /// <summary>How many floats each activation buffer holds: one row per batch token (logits: per logit row).</summary>
    private readonly record struct ScratchFloats(Phi3Config C, int MaxBatch, int MaxLogitRows)
    {
        public long X => checked((long)MaxBatch * C.Dim);
        public long Xb => checked((long)MaxBatch * Math.Max(C.Dim, C.QueryDim));
        public long Q => checked((long)MaxBatch * C.QueryDim);
        public long K => checked((long)MaxBatch * C.KvDim);
        public long V => K;
        public long AttentionOut => Q;
        public long Gate => checked((long)MaxBatch * C.FfnDim);
        public long Up => Gate;
        public long RopeCos => checked((long)MaxBatch * C.RopeDims / 2);
        public long RopeSin => RopeCos;
        public long Logits => checked((long)MaxLogitRows * C.VocabSize);
        public long Total => checked(X + Xb + Q + K + V + AttentionOut + Gate + Up + RopeCos + RopeSin + Logits);
    }

    public int MaxBatch { get; }
    public int MaxLogitRows { get; }
    public KvCache Cache { get; }
    public IBackend Backend { get; }

    /// <summary>
    /// LongRoPE's long or short factors, chosen once for the state's context: every key in its cache must have been
    /// rotated as the queries reading it are.
    /// </summary>
    public float* RopeFactors { get; }

    /// <summary>The residual stream.</summary>
    public float* X { get; }

    /// <summary>A block's normalized input, then its output (wide enough for attention's query rows too).</summary>
    public float* Xb { get; }

    public AttentionBuffers Attention { get; }
    public float* Gate { get; }
    public float* Up { get; }
    public RopeTable Rope { get; }
    public float* LogitsPointer { get; }

    public ReadOnlySpan<float> Output(int row)
    {
        if ((uint)row >= (uint)MaxLogitRows) throw new ArgumentOutOfRangeException(nameof(row));
        return new ReadOnlySpan<float>(LogitsPointer + (long)row * _vocabSize, _vocabSize);
    }

    private float* Floats(long count)
    {
        var buffer = new NativeBuffer(SizeMath.Product("bytes of a forward-pass buffer", count, sizeof(float)));
        _buffers.Add(buffer);
        return buffer.Floats;
    }

    public void Dispose()
    {
        foreach (var b in _buffers) b.Dispose();
        Cache.Dispose();
        if (_ownsPool) _pool.Dispose();
    }
}
