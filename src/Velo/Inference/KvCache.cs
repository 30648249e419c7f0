using Velo.Tensors;

namespace Velo.Inference;

/// <summary>
/// Keys and values of every layer for a fixed number of sequences, each with room for a whole context, allocated
/// once up front. Layout per layer: sequence × KV head × position × headDim, as floats, so that attention reads
/// each head's keys and values as one contiguous stream.
/// </summary>
public sealed unsafe class KvCache : IDisposable
{
    private readonly NativeBuffer[] _keys;
    private readonly NativeBuffer[] _values;

    public KvCache(int layers, int sequences, int contextLength, int kvHeads, int headDim)
    {
        Layers = layers;
        Sequences = sequences;
        ContextLength = contextLength;
        KvHeads = kvHeads;
        HeadDim = headDim;
        int kvDim = KvDim;
        long bytes = (long)sequences * contextLength * kvDim * sizeof(float);
        _keys = new NativeBuffer[layers];
        _values = new NativeBuffer[layers];
        for (int l = 0; l < layers; l++)
        {
            _keys[l] = new NativeBuffer(bytes, zero: false);
            _values[l] = new NativeBuffer(bytes, zero: false);
        }
    }

    public int Layers { get; }
    public int Sequences { get; }
    public int ContextLength { get; }
    public int KvHeads { get; }
    public int HeadDim { get; }
    public int KvDim => KvHeads * HeadDim;
    public long Bytes => 2L * Layers * Sequences * ContextLength * KvDim * sizeof(float);

    public float* Keys(int layer) => _keys[layer].Floats;
    public float* Values(int layer) => _values[layer].Floats;

    /// <summary>Stores one token's keys and values (kvHeads × headDim floats each) at its position.</summary>
    public void Store(int layer, int sequence, int position, ReadOnlySpan<float> keys, ReadOnlySpan<float> values)
    {
        float* k = Keys(layer), v = Values(layer);
        for (int h = 0; h < KvHeads; h++)
        {
            long at = (((long)sequence * KvHeads + h) * ContextLength + position) * HeadDim;
            keys.Slice(h * HeadDim, HeadDim).CopyTo(new Span<float>(k + at, HeadDim));
            values.Slice(h * HeadDim, HeadDim).CopyTo(new Span<float>(v + at, HeadDim));
        }
    }

    public void Dispose()
    {
        foreach (var b in _keys) b.Dispose();
        foreach (var b in _values) b.Dispose();
    }
}
