using Velo.Backends;
using Velo.Backends.Cpu;
using Velo.Runtime;
using Velo.Tensors;
using Velo.Threading;

namespace Velo.Models.Bert;

/// <summary>Everything a BERT forward pass writes: activations for up to <see cref="MaxBatch"/> tokens, the keys and
/// values of the inputs in the batch (attention reads them back whole), and the output rows, all allocated once.</summary>
internal sealed unsafe class BertState : IModelState
{
    private readonly List<NativeBuffer> _buffers = [];
    private readonly WorkerPool _pool;
    private readonly bool _ownsPool;
    private readonly int _dim;
    private readonly int _width;

    public BertState(BertConfig c, int contextLength, int maxBatch, int sequences, int maxOutputRows, WorkerPool? pool, KvCacheTypes cacheTypes)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(maxBatch, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(sequences, 1);
        MaxBatch = maxBatch;
        MaxLogitRows = maxOutputRows;
        TokenTypes = c.TokenTypes;
        Pooling = c.Pooling;
        _dim = c.Dim;
        _width = c.OutputWidth;
        _ownsPool = pool == null;
        _pool = pool ?? new WorkerPool(1);
        Backend = new CpuBackend(_pool);
        Cache = new KvCache(c.Layers, sequences, Math.Min(contextLength, c.ContextLength), c.Heads, c.HeadDim, cacheTypes.Keys, cacheTypes.Values);
        var floats = new ScratchFloats(c, maxBatch, maxOutputRows);
        X = Floats(floats.X);
        Xb = Floats(floats.X);
        Queries = Floats(floats.X);
        Keys = Floats(floats.X);
        Values = Floats(floats.X);
        AttentionOut = Floats(floats.X);
        Hidden = Floats(floats.Hidden);
        OutputPointer = Floats(floats.Output);
        if (c.Pooling == Models.EmbeddingPooling.Rank)
        {
            Pooled = Floats(floats.Pooled);
            ClassifierHidden = Floats(floats.ClassifierHidden);
        }
        Started = new bool[sequences];
    }

    /// <exception cref="OverflowException">The size does not fit in 63 bits.</exception>
    public static long ScratchBytesFor(BertConfig config, int maxBatch, int maxOutputRows) =>
        checked(new ScratchFloats(config, maxBatch, maxOutputRows).Total * sizeof(float));

    private readonly record struct ScratchFloats(BertConfig C, int MaxBatch, int MaxOutputRows)
    {
        public long X => checked((long)MaxBatch * C.Dim);
        public long Hidden => checked((long)MaxBatch * C.FfnDim);
        public long Output => checked((long)MaxOutputRows * C.OutputWidth);
        public long Pooled => C.Pooling == Models.EmbeddingPooling.Rank ? checked((long)MaxOutputRows * C.Dim) : 0;
        public long ClassifierHidden => C.HasClassifierOutput ? checked((long)MaxOutputRows * C.ClassifierWidth) : 0;
        public long Total => checked(6 * X + Hidden + Output + Pooled + ClassifierHidden);
    }

    public int MaxBatch { get; }
    public int MaxLogitRows { get; }

    /// <summary>The pooling the output rows were sized for.</summary>
    public Models.EmbeddingPooling Pooling { get; }

    /// <summary>Segment ids the model's type table holds.</summary>
    public int TokenTypes { get; }
    public KvCache Cache { get; }
    public long ScratchBytes => _buffers.Sum(b => b.Length);
    public IBackend Backend { get; }

    /// <summary>The threads <see cref="Backend"/> runs on, for kernels the model calls directly.</summary>
    public WorkerPool Pool => _pool;

    /// <summary>The residual stream; after a forward pass, each token's last hidden state.</summary>
    public float* X { get; }

    /// <summary>A sub-block's output before it joins the residual stream.</summary>
    public float* Xb { get; }

    public float* Queries { get; }
    public float* Keys { get; }
    public float* Values { get; }
    public float* AttentionOut { get; }

    /// <summary>The feed-forward's hidden rows.</summary>
    public float* Hidden { get; }

    public float* OutputPointer { get; }

    /// <summary>With rank pooling: each output row's [CLS] hidden state, the classification head's input.</summary>
    public float* Pooled { get; }

    /// <summary>With a two-layer head: its first layer's output rows (after tanh); a one-layer head writes the output rows.</summary>
    public float* ClassifierHidden { get; }

    /// <summary>Per sequence, whether the batch being checked has met its first token yet.</summary>
    public bool[] Started { get; }

    public ReadOnlySpan<float> Output(int row)
    {
        if ((uint)row >= (uint)MaxLogitRows) throw new ArgumentOutOfRangeException(nameof(row));
        return new ReadOnlySpan<float>(OutputPointer + (long)row * _width, _width);
    }

    /// <summary>The last hidden state of the <paramref name="token"/>-th token of the last forward pass, before pooling.</summary>
    public ReadOnlySpan<float> LastHidden(int token)
    {
        if ((uint)token >= (uint)MaxBatch) throw new ArgumentOutOfRangeException(nameof(token));
        return new ReadOnlySpan<float>(X + (long)token * _dim, _dim);
    }

    private float* Floats(long count)
    {
        var buffer = new NativeBuffer(SizeMath.Product("bytes of a forward-pass buffer", Math.Max(count, 1), sizeof(float)));
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
