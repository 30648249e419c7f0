using Velo.Inference;
using Velo.Tensors;
using Velo.Threading;

namespace Velo.Models;

/// <summary>Everything a forward pass writes: activations for up to <see cref="MaxBatch"/> tokens, the KV cache and the logits, all allocated once.</summary>
public sealed unsafe class LlamaState : IDisposable
{
    private readonly List<NativeBuffer> _buffers = [];
    private readonly bool _ownsPool;

    internal LlamaState(LlamaModel model, int contextLength, int maxBatch, int sequences, int maxLogitRows, WorkerPool? pool, KvCacheTypes cacheTypes = default)
    {
        var c = model.Config;
        ArgumentOutOfRangeException.ThrowIfLessThan(maxBatch, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(sequences, 1);
        MaxBatch = maxBatch;
        MaxLogitRows = maxLogitRows;
        VocabSize = c.VocabSize;
        _ownsPool = pool == null;
        Pool = pool ?? new WorkerPool(1);
        Cache = new KvCache(c.Layers, sequences, contextLength, c.KvHeads, c.HeadDim, cacheTypes.Keys, cacheTypes.Values);
        var floats = new ScratchFloats(c, maxBatch, maxLogitRows);
        X = Floats(floats.X);
        Xb = Floats(floats.Xb);
        Q = Floats(floats.Q);
        K = Floats(floats.K);
        V = Floats(floats.V);
        AttentionOut = Floats(floats.AttentionOut);
        Gate = Floats(floats.Gate);
        Up = Floats(floats.Up);
        RopeCos = Floats(floats.RopeCos);
        RopeSin = Floats(floats.RopeSin);
        LogitsPointer = Floats(floats.Logits);
    }

    /// <summary>The bytes of activations and logits a state allocates besides its KV cache, so a caller can weigh
    /// them against free memory before allocating them.</summary>
    /// <exception cref="OverflowException">The size does not fit in 63 bits.</exception>
    public static long ScratchBytesFor(LlamaConfig config, int maxBatch, int maxLogitRows) =>
        checked(new ScratchFloats(config, maxBatch, maxLogitRows).Total * sizeof(float));

    /// <summary>The bytes of activations and logits this state allocated.</summary>
    public long ScratchBytes => _buffers.Sum(b => b.Length);

    /// <summary>How many floats each activation buffer holds: one row per batch token (logits: per logit row).</summary>
    private readonly record struct ScratchFloats(LlamaConfig C, int MaxBatch, int MaxLogitRows)
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
    public int VocabSize { get; }
    public WorkerPool Pool { get; }
    public KvCache Cache { get; }

    internal float* X { get; }
    internal float* Xb { get; }
    internal float* Q { get; }
    internal float* K { get; }
    internal float* V { get; }
    internal float* AttentionOut { get; }
    internal float* Gate { get; }
    internal float* Up { get; }
    internal float* RopeCos { get; }
    internal float* RopeSin { get; }
    internal float* LogitsPointer { get; }

    /// <summary>The logits of the <paramref name="row"/>-th token that asked for them in the last forward pass.</summary>
    public ReadOnlySpan<float> Logits(int row)
    {
        if ((uint)row >= (uint)MaxLogitRows) throw new ArgumentOutOfRangeException(nameof(row));
        return new ReadOnlySpan<float>(LogitsPointer + (long)row * VocabSize, VocabSize);
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
        if (_ownsPool) Pool.Dispose();
    }
}
