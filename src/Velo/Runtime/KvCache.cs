using System.Numerics.Tensors;
using Velo.Kernels;
using Velo.Tensors;

namespace Velo.Runtime;

/// <summary>The element types of a KV cache's keys and values: F32 (the default) or F16.</summary>
public readonly record struct KvCacheTypes(GgmlType Keys = GgmlType.F32, GgmlType Values = GgmlType.F32)
{
    /// <summary>Reads llama.cpp's names for <c>--cache-type-k</c> / <c>--cache-type-v</c>: f32 or f16.</summary>
    public static GgmlType Parse(string name) => name.ToLowerInvariant() switch
    {
        "f32" => GgmlType.F32,
        "f16" => GgmlType.F16,
        _ => throw new ArgumentException($"unknown KV cache type '{name}': use f32 or f16"),
    };
}

/// <summary>
/// Keys and values of every layer for a fixed number of sequences, each with room for a whole context, allocated
/// once up front. Layout per layer: sequence × KV head × position × headDim, so that attention reads each head's
/// keys and values as one contiguous stream. Keys and values are each stored as F32 or, in half the memory, F16
/// (llama.cpp's default).
/// </summary>
public sealed unsafe class KvCache : IDisposable
{
    private readonly NativeBuffer[] _keys;
    private readonly NativeBuffer[] _values;

    public KvCache(int layers, int sequences, int contextLength, int kvHeads, int headDim,
        GgmlType keyType = GgmlType.F32, GgmlType valueType = GgmlType.F32)
    {
        CheckType(keyType, "key");
        CheckType(valueType, "value");
        KeyType = keyType;
        ValueType = valueType;
        Layers = layers;
        Sequences = sequences;
        ContextLength = contextLength;
        KvHeads = kvHeads;
        HeadDim = headDim;
        long keyBytes = LayerBytes(keyType, sequences, contextLength, KvDim);
        long valueBytes = LayerBytes(valueType, sequences, contextLength, KvDim);
        _keys = new NativeBuffer[layers];
        _values = new NativeBuffer[layers];
        for (int l = 0; l < layers; l++)
        {
            _keys[l] = new NativeBuffer(keyBytes, zero: false);
            _values[l] = new NativeBuffer(valueBytes, zero: false);
        }
    }

    /// <summary>The bytes a cache of this shape allocates, so a caller can weigh it against free memory before allocating it.</summary>
    /// <exception cref="OverflowException">The size does not fit in 63 bits.</exception>
    /// <exception cref="ArgumentOutOfRangeException">One layer's size does not fit in 63 bits.</exception>
    public static long BytesFor(int layers, int sequences, int contextLength, int kvDim, KvCacheTypes types)
    {
        CheckType(types.Keys, "key");
        CheckType(types.Values, "value");
        return checked(layers * (LayerBytes(types.Keys, sequences, contextLength, kvDim) + LayerBytes(types.Values, sequences, contextLength, kvDim)));
    }

    /// <summary>One layer's keys (or values): every sequence's whole context of <paramref name="kvDim"/> elements per position.</summary>
    private static long LayerBytes(GgmlType type, int sequences, int contextLength, int kvDim) =>
        // The cache types (F32, F16) are single-element blocks, so bytes are elements times block bytes.
        SizeMath.Product("KV cache bytes per layer", sequences, contextLength, kvDim, GgmlTypeInfo.BlockBytes(type));

    public int Layers { get; }
    public int Sequences { get; }
    public int ContextLength { get; }
    public int KvHeads { get; }
    public int HeadDim { get; }
    public int KvDim => KvHeads * HeadDim;
    public GgmlType KeyType { get; }
    public GgmlType ValueType { get; }
    public long Bytes => Layers * (_keys[0].Length + _values[0].Length);

    public byte* Keys(int layer) => (byte*)_keys[layer].Pointer;
    public byte* Values(int layer) => (byte*)_values[layer].Pointer;

    private static void CheckType(GgmlType type, string what)
    {
        if (!Attention.SupportsCacheType(type))
            throw new ArgumentException($"The KV cache stores {what}s as f32 or f16, not {type.ToString().ToLowerInvariant()}.");
    }

    /// <summary>Stores one token's keys and values (kvHeads × headDim floats each) at its position.</summary>
    public void Store(int layer, int sequence, int position, ReadOnlySpan<float> keys, ReadOnlySpan<float> values)
    {
        for (int h = 0; h < KvHeads; h++)
        {
            long at = (((long)sequence * KvHeads + h) * ContextLength + position) * HeadDim;
            StoreHead(Keys(layer), KeyType, at, keys.Slice(h * HeadDim, HeadDim));
            StoreHead(Values(layer), ValueType, at, values.Slice(h * HeadDim, HeadDim));
        }
    }

    private static void StoreHead(byte* cache, GgmlType type, long at, ReadOnlySpan<float> head)
    {
        if (type == GgmlType.F16)
            TensorPrimitives.ConvertToHalf(head, new Span<Half>((Half*)cache + at, head.Length));
        else
            head.CopyTo(new Span<float>((float*)cache + at, head.Length));
    }

    public void Dispose()
    {
        foreach (var b in _keys) b.Dispose();
        foreach (var b in _values) b.Dispose();
    }
}
