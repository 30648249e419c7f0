using Velo.Tensors;

namespace Velo.Inference;

/// <summary>
/// Keys and values of every layer for a fixed number of sequences, each with room for a whole context, allocated
/// once up front. Layout per layer: sequence × position × (kvHeads × headDim), as floats.
/// </summary>
public sealed unsafe class KvCache : IDisposable
{
    private readonly NativeBuffer[] _keys;
    private readonly NativeBuffer[] _values;

    public KvCache(int layers, int sequences, int contextLength, int kvDim)
    {
        Layers = layers;
        Sequences = sequences;
        ContextLength = contextLength;
        KvDim = kvDim;
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
    public int KvDim { get; }
    public long Bytes => 2L * Layers * Sequences * ContextLength * KvDim * sizeof(float);

    public float* Keys(int layer) => _keys[layer].Floats;
    public float* Values(int layer) => _values[layer].Floats;

    public float* KeyRow(int layer, int sequence, int position) => Keys(layer) + ((long)sequence * ContextLength + position) * KvDim;
    public float* ValueRow(int layer, int sequence, int position) => Values(layer) + ((long)sequence * ContextLength + position) * KvDim;

    public void Dispose()
    {
        foreach (var b in _keys) b.Dispose();
        foreach (var b in _values) b.Dispose();
    }
}
