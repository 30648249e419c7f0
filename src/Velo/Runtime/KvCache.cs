using System.Numerics.Tensors;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Velo.Kernels;
using Velo.Tensors;

namespace Velo.Runtime;

/// <summary>The element types of a KV cache's keys and values: F32 (the default), F16 or Q8_0.</summary>
public readonly record struct KvCacheTypes(GgmlType Keys = GgmlType.F32, GgmlType Values = GgmlType.F32)
{
    /// <summary>Reads llama.cpp's names for <c>--cache-type-k</c> / <c>--cache-type-v</c>: f32, f16 or q8_0.</summary>
    public static GgmlType Parse(string name) => name.ToLowerInvariant() switch
    {
        "f32" => GgmlType.F32,
        "f16" => GgmlType.F16,
        "q8_0" => GgmlType.Q8_0,
        _ => throw new ArgumentException($"unknown KV cache type '{name}': use f32, f16 or q8_0"),
    };
}

/// <summary>
/// The KV memory: keys and values of every layer for a fixed number of sequences, each with room for a whole
/// context, allocated once up front, and how many positions each sequence holds. It alone knows the layout
/// (per layer: sequence × KV head × position × head row, so attention reads each head's keys and values as one
/// contiguous stream); attention reads it through <see cref="KvLayerView"/>s. Keys and values are each stored as
/// F32, as F16 in half the memory (llama.cpp's default), or as Q8_0 blocks in about a quarter (head dimensions
/// must then be multiples of 32, so that no block straddles two heads).
/// <para>
/// Each sequence holds a contiguous run of positions 0..<see cref="Length"/>−1. The sequence operations are
/// llama.cpp's <c>seq_rm</c>, <c>seq_cp</c> and <c>seq_keep</c> on that layout: removing a tail (rollback of
/// rejected draft tokens, or a new request reusing a cached prefix), copying a prefix into another sequence (prefix
/// sharing) and keeping one sequence. Removing a range from the middle is refused: llama.cpp leaves a hole of
/// masked cells there while later positions keep their rope angles, which a contiguous layout cannot represent.
/// </para>
/// </summary>
public sealed unsafe class KvCache : IDisposable
{
    private readonly NativeBuffer[] _keys;
    private readonly NativeBuffer[] _values;

    // Pinned, so that layer views can hand attention the lengths without copying them.
    private readonly int[] _lengths;

    // Per sequence, the last position an appended batch gives it (-1: none); scratch of Append.
    private readonly int[] _batchEnds;

    public KvCache(int layers, int sequences, int contextLength, int kvHeads, int headDim,
        GgmlType keyType = GgmlType.F32, GgmlType valueType = GgmlType.F32)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(layers, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(sequences, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(contextLength, 1);
        CheckType(keyType, "key");
        CheckType(valueType, "value");
        CheckHeadDim(keyType, "key", headDim);
        CheckHeadDim(valueType, "value", headDim);
        KeyType = keyType;
        ValueType = valueType;
        Layers = layers;
        Sequences = sequences;
        ContextLength = contextLength;
        KvHeads = kvHeads;
        HeadDim = headDim;
        KeyRowBytes = (int)GgmlTypeInfo.RowBytes(keyType, headDim);
        ValueRowBytes = (int)GgmlTypeInfo.RowBytes(valueType, headDim);
        long keyBytes = LayerBytes(keyType, sequences, contextLength, KvDim);
        long valueBytes = LayerBytes(valueType, sequences, contextLength, KvDim);
        _lengths = GC.AllocateArray<int>(sequences, pinned: true);
        _batchEnds = new int[sequences];
        _keys = new NativeBuffer[layers];
        _values = new NativeBuffer[layers];
        for (int l = 0; l < layers; l++)
        {
            _keys[l] = new NativeBuffer(keyBytes, zero: false);
            _values[l] = new NativeBuffer(valueBytes, zero: false);
        }
    }

    /// <summary>
    /// Writes every page of the memory now, as llama.cpp clears its KV buffers when it creates them. The memory is
    /// allocated untouched, so otherwise every pass that reaches new positions takes page faults (a fresh page per
    /// sequence, layer and head every 4 KiB of rows): about 5 % of an 8-sequence decode step of tiny-110M in a new
    /// server's first requests. Only for an empty cache: it would overwrite what a sequence holds.
    /// </summary>
    public void Commit()
    {
        for (int s = 0; s < Sequences; s++)
            if (_lengths[s] > 0) throw new InvalidOperationException($"sequence {s} holds {_lengths[s]} positions: commit the KV memory before storing anything");
        for (int l = 0; l < Layers; l++)
        {
            NativeMemory.Clear(_keys[l].Pointer, (nuint)_keys[l].Length);
            NativeMemory.Clear(_values[l].Pointer, (nuint)_values[l].Length);
        }
    }

    /// <summary>The bytes a cache of this shape allocates, so a caller can weigh it against free memory before allocating it.</summary>
    /// <exception cref="OverflowException">The size does not fit in 63 bits.</exception>
    public static long BytesFor(int layers, int sequences, int contextLength, int kvDim, KvCacheTypes types)
    {
        CheckType(types.Keys, "key");
        CheckType(types.Values, "value");
        // Checked arithmetic rather than SizeMath.Product: a plan reports overflow as "more than 8 EiB", not as a refused allocation.
        return checked(layers * (sequences * (long)contextLength * GgmlTypeInfo.RowBytes(types.Keys, kvDim)
                                 + sequences * (long)contextLength * GgmlTypeInfo.RowBytes(types.Values, kvDim)));
    }

    /// <summary>One layer's keys (or values): every sequence's whole context of <paramref name="kvDim"/> elements per position.
    /// Q8_0 blocks never straddle heads, so a position's heads take the bytes of one row of kvDim elements.</summary>
    private static long LayerBytes(GgmlType type, int sequences, int contextLength, int kvDim) =>
        SizeMath.Product("KV cache bytes per layer", sequences, contextLength, GgmlTypeInfo.RowBytes(type, kvDim));

    public int Layers { get; }
    public int Sequences { get; }
    public int ContextLength { get; }
    public int KvHeads { get; }
    public int HeadDim { get; }
    public int KvDim => KvHeads * HeadDim;
    public GgmlType KeyType { get; }
    public GgmlType ValueType { get; }

    /// <summary>Bytes of one head's keys (values) at one position.</summary>
    public int KeyRowBytes { get; }
    public int ValueRowBytes { get; }

    public long Bytes => Layers * (_keys[0].Length + _values[0].Length);

    /// <summary>Positions the sequence holds: 0..Length−1.</summary>
    public int Length(int sequence)
    {
        CheckSequence(sequence);
        return _lengths[sequence];
    }

    /// <summary>What attention reads of one layer.</summary>
    public KvLayerView Layer(int layer) => new(
        (byte*)_keys[layer].Pointer, (byte*)_values[layer].Pointer, KeyType, ValueType, KeyRowBytes, ValueRowBytes,
        KvHeads, HeadDim, ContextLength, Sequences, (int*)Unsafe.AsPointer(ref _lengths[0]));

    private static void CheckType(GgmlType type, string what)
    {
        if (!Attention.SupportsCacheType(type))
            throw new ArgumentException($"The KV cache stores {what}s as f32, f16 or q8_0, not {type.ToString().ToLowerInvariant()}.");
    }

    private static void CheckHeadDim(GgmlType type, string what, int headDim)
    {
        int block = GgmlTypeInfo.BlockSize(type);
        if (headDim % block != 0)
            throw new ArgumentException($"A {type.ToString().ToLowerInvariant()} KV cache needs head dimensions that are multiples of {block}; " +
                $"this model's {what}s have {headDim}. Use f16 or f32.");
    }

    private void CheckSequence(int sequence)
    {
        if ((uint)sequence >= (uint)Sequences)
            throw new ArgumentOutOfRangeException(nameof(sequence), $"sequence {sequence} does not exist (the memory holds {Sequences})");
    }

    /// <summary>
    /// Records that the batch's tokens are stored from now on (their keys and values follow, layer by layer, through
    /// <see cref="Store"/>). Each token must continue its sequence: the first of a sequence in the batch at most at
    /// its <see cref="Length"/>, each next one right after the previous. A first position before the end rewrites
    /// the sequence from there, dropping the later positions, which followed a different history. A batch that
    /// breaks these rules is refused before anything changes.
    /// </summary>
    public void Append(ForwardBatch batch)
    {
        Array.Fill(_batchEnds, -1);
        for (int i = 0; i < batch.Count; i++)
        {
            int sequence = batch.Sequences[i], position = batch.Positions[i];
            CheckSequence(sequence);
            if ((uint)position >= (uint)ContextLength)
                throw new ArgumentOutOfRangeException(nameof(batch), $"position {position} is beyond the context of {ContextLength} tokens");
            int end = _batchEnds[sequence];
            if (end >= 0 ? position != end + 1 : position > _lengths[sequence])
            {
                Array.Fill(_batchEnds, -1);
                throw new ArgumentException(end >= 0
                    ? $"sequence {sequence} has position {position} after {end} in one batch: its tokens must come in consecutive positions"
                    : $"sequence {sequence} holds {_lengths[sequence]} positions, so the batch cannot start it at position {position}");
            }
            _batchEnds[sequence] = position;
        }
        for (int s = 0; s < Sequences; s++)
            if (_batchEnds[s] >= 0) _lengths[s] = _batchEnds[s] + 1;
    }

    /// <summary>Stores the batch's keys and values of one layer, each a row of <see cref="KvDim"/> floats per token.</summary>
    public void Store(int layer, ForwardBatch batch, float* keys, float* values)
    {
        for (int i = 0; i < batch.Count; i++)
        {
            int sequence = batch.Sequences[i], position = batch.Positions[i];
            for (int h = 0; h < KvHeads; h++)
            {
                long row = ((long)sequence * KvHeads + h) * ContextLength + position;
                var from = (long)i * KvDim + h * HeadDim;
                StoreRow((byte*)_keys[layer].Pointer + row * KeyRowBytes, KeyType, KeyRowBytes, new ReadOnlySpan<float>(keys + from, HeadDim));
                StoreRow((byte*)_values[layer].Pointer + row * ValueRowBytes, ValueType, ValueRowBytes, new ReadOnlySpan<float>(values + from, HeadDim));
            }
        }
    }

    private static void StoreRow(byte* destination, GgmlType type, int rowBytes, ReadOnlySpan<float> row)
    {
        switch (type)
        {
            case GgmlType.F32: row.CopyTo(new Span<float>(destination, row.Length)); break;
            case GgmlType.F16: TensorPrimitives.ConvertToHalf(row, new Span<Half>(destination, row.Length)); break;
            // The reference quantizer, so stored blocks are byte for byte those of a Q8_0 tensor (llama.cpp's rounding).
            default: Quantize.Row(type, row, new Span<byte>(destination, rowBytes)); break;
        }
    }

    /// <summary>
    /// Removes positions [<paramref name="from"/>, <paramref name="to"/>) of a sequence (llama.cpp's <c>seq_rm</c>);
    /// <paramref name="to"/> left out means to the end. Only a tail can go: a range ending before the sequence does
    /// is refused with <see cref="NotSupportedException"/>, since the layout keeps every sequence contiguous.
    /// </summary>
    public void RemoveRange(int sequence, int from, int to = int.MaxValue)
    {
        CheckSequence(sequence);
        ArgumentOutOfRangeException.ThrowIfNegative(from);
        ArgumentOutOfRangeException.ThrowIfLessThan(to, from);
        int length = _lengths[sequence];
        if (from >= length || from == to) return;
        if (to < length)
            throw new NotSupportedException($"cannot remove positions [{from}, {to}) from the middle of sequence {sequence}, which holds {length}: " +
                $"the KV memory keeps each sequence contiguous. Remove the tail from {from} and decode the rest again.");
        _lengths[sequence] = from;
    }

    /// <summary>
    /// Copies the keys and values of positions [<paramref name="from"/>, <paramref name="to"/>) of one sequence into
    /// another at the same positions (llama.cpp's <c>seq_cp</c>: fork a shared prefix). The destination must already
    /// hold the positions before <paramref name="from"/>; afterwards it holds exactly 0..<paramref name="to"/>−1, its
    /// own later positions dropped since they followed a different prefix.
    /// </summary>
    public void Copy(int source, int destination, int from, int to)
    {
        CheckSequence(source);
        CheckSequence(destination);
        if (from < 0 || to < from || to > _lengths[source])
            throw new ArgumentOutOfRangeException(nameof(to), $"positions [{from}, {to}) are not all in sequence {source}, which holds {_lengths[source]}");
        if (from > _lengths[destination])
            throw new ArgumentException($"sequence {destination} holds {_lengths[destination]} positions, so a copy cannot start it at position {from}");
        if (source != destination)
            for (int l = 0; l < Layers; l++)
                for (int h = 0; h < KvHeads; h++)
                {
                    CopyRows((byte*)_keys[l].Pointer, KeyRowBytes, source, destination, h, from, to);
                    CopyRows((byte*)_values[l].Pointer, ValueRowBytes, source, destination, h, from, to);
                }
        _lengths[destination] = to;
    }

    private void CopyRows(byte* layer, int rowBytes, int source, int destination, int head, int from, int to)
    {
        long Row(int sequence) => (((long)sequence * KvHeads + head) * ContextLength + from) * rowBytes;
        long bytes = (long)(to - from) * rowBytes;
        Buffer.MemoryCopy(layer + Row(source), layer + Row(destination), bytes, bytes);
    }

    /// <summary>Empties every sequence but one (llama.cpp's <c>seq_keep</c>).</summary>
    public void Keep(int sequence)
    {
        CheckSequence(sequence);
        for (int s = 0; s < Sequences; s++)
            if (s != sequence) _lengths[s] = 0;
    }

    public void Dispose()
    {
        foreach (var b in _keys) b.Dispose();
        foreach (var b in _values) b.Dispose();
    }
}

/// <summary>
/// One layer of the KV memory as attention reads it: for a sequence and KV head, the keys and values of positions
/// 0..<see cref="Length"/>−1, one head row after another (<see cref="KvHeadView"/>). Valid while the memory lives.
/// </summary>
public readonly unsafe struct KvLayerView
{
    private readonly byte* _keys, _values;
    private readonly int* _lengths;

    internal KvLayerView(byte* keys, byte* values, GgmlType keyType, GgmlType valueType, int keyRowBytes, int valueRowBytes,
        int kvHeads, int headDim, int contextLength, int sequences, int* lengths)
    {
        _keys = keys;
        _values = values;
        _lengths = lengths;
        KeyType = keyType;
        ValueType = valueType;
        KeyRowBytes = keyRowBytes;
        ValueRowBytes = valueRowBytes;
        KvHeads = kvHeads;
        HeadDim = headDim;
        ContextLength = contextLength;
        Sequences = sequences;
    }

    public GgmlType KeyType { get; }
    public GgmlType ValueType { get; }
    public int KeyRowBytes { get; }
    public int ValueRowBytes { get; }
    public int KvHeads { get; }
    public int HeadDim { get; }

    /// <summary>The most positions any sequence can hold.</summary>
    public int ContextLength { get; }
    public int Sequences { get; }

    public int Length(int sequence) => _lengths[sequence];

    public KvHeadView Head(int sequence, int kvHead)
    {
        long row = ((long)sequence * KvHeads + kvHead) * ContextLength;
        return new KvHeadView(_keys + row * KeyRowBytes, _values + row * ValueRowBytes);
    }
}

/// <summary>One sequence's keys and values of one KV head: position t's row at <c>Keys + t × KeyRowBytes</c>.</summary>
public readonly unsafe struct KvHeadView(byte* keys, byte* values)
{
    public byte* Keys { get; } = keys;
    public byte* Values { get; } = values;
}
