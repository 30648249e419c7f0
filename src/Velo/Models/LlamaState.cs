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
        X = Floats((long)maxBatch * c.Dim);
        Xb = Floats((long)maxBatch * Math.Max(c.Dim, c.QueryDim));
        Q = Floats((long)maxBatch * c.QueryDim);
        K = Floats((long)maxBatch * c.KvDim);
        V = Floats((long)maxBatch * c.KvDim);
        AttentionOut = Floats((long)maxBatch * c.QueryDim);
        Gate = Floats((long)maxBatch * c.FfnDim);
        Up = Floats((long)maxBatch * c.FfnDim);
        RopeCos = Floats((long)maxBatch * c.RopeDims / 2);
        RopeSin = Floats((long)maxBatch * c.RopeDims / 2);
        LogitsPointer = Floats((long)maxLogitRows * c.VocabSize);
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
