using Velo.Backends;
using Velo.Backends.Cpu;
using Velo.Runtime;
using Velo.Tensors;
using Velo.Threading;

namespace Velo.Models.Blocks;

/// <summary>The hyperparameters that size a decoder's forward-pass buffers and KV memory.</summary>
internal readonly record struct DecoderDimensions(int Layers, int Dim, int Heads, int KvHeads, int HeadDim, int FfnDim, int RopeDims, int VocabSize)
{
    public int QueryDim => Heads * HeadDim;
    public int KvDim => KvHeads * HeadDim;
}

/// <summary>
/// Everything a decoder's forward pass writes, allocated once: activations for up to <see cref="MaxBatch"/> tokens,
/// the KV cache, one rope table (two for models whose sliding-window layers rotate with their own base) and the
/// logits. Every decoder family runs on it, so a family adds only what is its own (Phi-3: its LongRoPE factors).
/// </summary>
internal unsafe class DecoderState : IModelState
{
    private readonly List<NativeBuffer> _buffers = [];
    private readonly WorkerPool _pool;
    private readonly bool _ownsPool;
    private readonly int _vocabSize;

    /// <param name="owner">The model the state belongs to: its Forward refuses any other model's state.</param>
    /// <param name="slidingRope">Allocate a second rope table, for layers that rotate with another base.</param>
    public DecoderState(IModel owner, DecoderDimensions d, bool slidingRope, int contextLength, int maxBatch, int sequences, int maxLogitRows,
        WorkerPool? pool, KvCacheTypes cacheTypes)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(maxBatch, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(sequences, 1);
        Owner = owner;
        MaxBatch = maxBatch;
        MaxLogitRows = maxLogitRows;
        _vocabSize = d.VocabSize;
        _ownsPool = pool == null;
        _pool = pool ?? new WorkerPool(1);
        Backend = new CpuBackend(_pool);
        Cache = new KvCache(d.Layers, sequences, contextLength, d.KvHeads, d.HeadDim, cacheTypes.Keys, cacheTypes.Values);
        var floats = new ScratchFloats(d, slidingRope, maxBatch, maxLogitRows);
        X = Floats(floats.X);
        Xb = Floats(floats.Xb);
        Attention = new AttentionBuffers(Floats(floats.Q), Floats(floats.K), Floats(floats.V), Floats(floats.AttentionOut));
        Gate = Floats(floats.Gate);
        Up = Floats(floats.Up);
        Rope = new RopeTable(Floats(floats.RopeCos), Floats(floats.RopeSin), d.RopeDims / 2);
        if (slidingRope) _slidingRope = new RopeTable(Floats(floats.RopeCos), Floats(floats.RopeSin), d.RopeDims / 2);
        LogitsPointer = Floats(floats.Logits);
    }

    /// <summary>The bytes of activations and logits a state allocates besides its KV cache.</summary>
    /// <exception cref="OverflowException">The size does not fit in 63 bits.</exception>
    public static long ScratchBytesFor(DecoderDimensions d, bool slidingRope, int maxBatch, int maxLogitRows) =>
        checked(new ScratchFloats(d, slidingRope, maxBatch, maxLogitRows).Total * sizeof(float));

    /// <summary>The state as <paramref name="model"/>'s own, or an <see cref="ArgumentException"/> naming its family.</summary>
    public static T Of<T>(IModel model, IModelState state, string family) where T : DecoderState =>
        state is T own && ReferenceEquals(own.Owner, model)
            ? own
            : throw new ArgumentException($"the state was not created by this {family} model", nameof(state));

    public long ScratchBytes => _buffers.Sum(b => b.Length);

    /// <summary>How many floats each activation buffer holds: one row per batch token (logits: per logit row).</summary>
    private readonly record struct ScratchFloats(DecoderDimensions D, bool SlidingRope, int MaxBatch, int MaxLogitRows)
    {
        public long X => checked((long)MaxBatch * D.Dim);
        public long Xb => checked((long)MaxBatch * Math.Max(D.Dim, D.QueryDim));
        public long Q => checked((long)MaxBatch * D.QueryDim);
        public long K => checked((long)MaxBatch * D.KvDim);
        public long V => K;
        public long AttentionOut => Q;
        public long Gate => checked((long)MaxBatch * D.FfnDim);
        public long Up => Gate;
        public long RopeCos => checked((long)MaxBatch * D.RopeDims / 2);
        public long RopeSin => RopeCos;
        public long Logits => checked((long)MaxLogitRows * D.VocabSize);
        public long Total => checked(X + Xb + Q + K + V + AttentionOut + Gate + Up + (SlidingRope ? 2 : 1) * (RopeCos + RopeSin) + Logits);
    }

    public IModel Owner { get; }
    public int MaxBatch { get; }
    public int MaxLogitRows { get; }
    public KvCache Cache { get; }
    public IBackend Backend { get; }

    /// <summary>The residual stream.</summary>
    public float* X { get; }

    /// <summary>A block's normalized input, then its output (wide enough for attention's query rows too).</summary>
    public float* Xb { get; }

    public AttentionBuffers Attention { get; }
    public float* Gate { get; }
    public float* Up { get; }

    /// <summary>The rope angles of the batch's positions (of the global layers, when there is a sliding table).</summary>
    public RopeTable Rope { get; }

    /// <summary>The rope angles of sliding-window layers that rotate with their own base.</summary>
    public RopeTable SlidingRope => _slidingRope ?? throw new InvalidOperationException("this state has no rope table for sliding-window layers");

    private readonly RopeTable? _slidingRope;

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
