using System.Text;
using Velo.Tensors;

namespace Velo.Formats;

/// <summary>
/// Writes GGUF files (version 3 by default, or 2): metadata in insertion order, tensor infos, then tensor data, each
/// tensor aligned to <see cref="Alignment"/>. Tensor bytes are streamed by a callback so large models never need to
/// be held in memory.
/// </summary>
public sealed class GgufWriter
{
    private readonly List<KeyValuePair<string, object>> _metadata = [];
    private readonly List<PendingTensor> _tensors = [];

    public GgufWriter(uint alignment = GgufFile.DefaultAlignment, uint version = 3)
    {
        if (alignment == 0 || (alignment & (alignment - 1)) != 0) throw new ArgumentException("alignment must be a power of two", nameof(alignment));
        if (version is not (2 or 3)) throw new ArgumentException("only GGUF versions 2 and 3 can be written", nameof(version));
        Alignment = alignment;
        Version = version;
        if (alignment != GgufFile.DefaultAlignment) Set("general.alignment", alignment);
    }

    public uint Alignment { get; }
    public uint Version { get; }

    /// <summary>Sets a metadata value: a GGUF scalar CLR type, a string, a <see cref="GgufArray"/>, or a typed array.</summary>
    public GgufWriter Set(string key, object value)
    {
        value = value switch
        {
            string[] a => GgufArray.Of(a),
            float[] a => GgufArray.Of(a),
            int[] a => GgufArray.Of(a),
            uint[] a => GgufArray.Of(a),
            _ => value,
        };
        GgufValues.TypeOf(value); // validates
        int existing = _metadata.FindIndex(kv => kv.Key == key);
        if (existing >= 0) _metadata[existing] = new(key, value);
        else _metadata.Add(new(key, value));
        return this;
    }

    /// <summary>Copies every metadata entry of <paramref name="source"/> (except the alignment, which this writer owns).</summary>
    public GgufWriter SetAll(GgufMetadata source)
    {
        foreach (var (key, value) in source)
            if (key != "general.alignment") Set(key, value);
        return this;
    }

    public GgufWriter AddTensor(string name, GgmlType type, long[] shape, ReadOnlyMemory<byte> data)
    {
        long expected = ByteSize(type, shape);
        if (data.Length != expected)
            throw new ArgumentException($"tensor '{name}' needs {expected} bytes of {type} data, got {data.Length}");
        return AddTensor(name, type, shape, s => s.Write(data.Span));
    }

    /// <summary>Adds a tensor whose bytes <paramref name="writeData"/> will write, exactly <see cref="ByteSize"/> of them.</summary>
    public GgufWriter AddTensor(string name, GgmlType type, long[] shape, Action<Stream> writeData)
    {
        if (shape.Length is 0 or > GgufFile.MaxDimensions) throw new ArgumentException($"tensor '{name}' must have 1 to 4 dimensions");
        if (_tensors.Any(t => t.Name == name)) throw new ArgumentException($"tensor '{name}' was already added");
        _tensors.Add(new PendingTensor(name, type, (long[])shape.Clone(), ByteSize(type, shape), writeData));
        return this;
    }

    public static long ByteSize(GgmlType type, IReadOnlyList<long> shape) =>
        SizeMath.Product($"bytes of a {type} tensor of shape [{string.Join(", ", shape)}]",
            [GgmlTypeInfo.RowBytes(type, shape[0]), .. shape.Skip(1)]);

    public void Write(string path)
    {
        using var stream = new FileStream(path, FileMode.Create, FileAccess.Write, FileShare.None, 1 << 20);
        WriteTo(stream);
    }

    /// <summary>
    /// Writes to a temporary file beside <paramref name="path"/> and renames it into place, so a failed or
    /// interrupted write never leaves a truncated model under the final name.
    /// </summary>
    public void WriteAtomically(string path)
    {
        string temporary = path + ".partial";
        try
        {
            Write(temporary);
            File.Move(temporary, path, overwrite: true);
        }
        catch
        {
            File.Delete(temporary);
            throw;
        }
    }

    public void WriteTo(Stream stream)
    {
        using var w = new BinaryWriter(stream, Encoding.UTF8, leaveOpen: true);
        w.Write(GgufFile.Magic);
        w.Write(Version);
        w.Write((ulong)_tensors.Count);
        w.Write((ulong)_metadata.Count);
        foreach (var (key, value) in _metadata)
        {
            WriteString(w, key);
            var type = GgufValues.TypeOf(value);
            w.Write((uint)type);
            WriteValue(w, type, value);
        }

        long offset = 0;
        foreach (var t in _tensors)
        {
            WriteString(w, t.Name);
            w.Write((uint)t.Shape.Length);
            foreach (long d in t.Shape) w.Write((ulong)d);
            w.Write((uint)t.Type);
            w.Write((ulong)offset);
            offset = GgufFile.AlignUp(offset + t.ByteSize, Alignment);
        }
        w.Flush();

        Pad(w, GgufFile.AlignUp(stream.Position, Alignment) - stream.Position);
        long position = 0;
        foreach (var t in _tensors)
        {
            Pad(w, GgufFile.AlignUp(position, Alignment) - position);
            position = GgufFile.AlignUp(position, Alignment);
            w.Flush();
            long before = stream.Position;
            t.WriteData(stream);
            long written = stream.Position - before;
            if (written != t.ByteSize)
                throw new InvalidOperationException($"tensor '{t.Name}' wrote {written} bytes instead of {t.ByteSize}");
            position += written;
        }
        w.Flush();
    }

    private static void Pad(BinaryWriter w, long count)
    {
        for (long i = 0; i < count; i++) w.Write((byte)0);
    }

    private static void WriteString(BinaryWriter w, string s)
    {
        byte[] bytes = Encoding.UTF8.GetBytes(s);
        w.Write((ulong)bytes.Length);
        w.Write(bytes);
    }

    private static void WriteValue(BinaryWriter w, GgufValueType type, object value)
    {
        switch (type)
        {
            case GgufValueType.UInt8: w.Write((byte)value); break;
            case GgufValueType.Int8: w.Write((sbyte)value); break;
            case GgufValueType.UInt16: w.Write((ushort)value); break;
            case GgufValueType.Int16: w.Write((short)value); break;
            case GgufValueType.UInt32: w.Write((uint)value); break;
            case GgufValueType.Int32: w.Write((int)value); break;
            case GgufValueType.Float32: w.Write((float)value); break;
            case GgufValueType.Bool: w.Write((bool)value ? (byte)1 : (byte)0); break;
            case GgufValueType.String: WriteString(w, (string)value); break;
            case GgufValueType.UInt64: w.Write((ulong)value); break;
            case GgufValueType.Int64: w.Write((long)value); break;
            case GgufValueType.Float64: w.Write((double)value); break;
            case GgufValueType.Array:
                var array = (GgufArray)value;
                w.Write((uint)array.ElementType);
                w.Write((ulong)array.Count);
                foreach (object item in array.Items) WriteValue(w, array.ElementType, item);
                break;
            default:
                throw new ArgumentOutOfRangeException(nameof(type));
        }
    }

    private sealed record PendingTensor(string Name, GgmlType Type, long[] Shape, long ByteSize, Action<Stream> WriteData);
}
