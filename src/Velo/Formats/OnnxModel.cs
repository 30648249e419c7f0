using System.Buffers.Binary;
using System.Text;
using Velo.Tensors;

namespace Velo.Formats;

/// <summary>An ONNX file's data is malformed or is not something Velo can import; the message says what and where.</summary>
public sealed class OnnxFormatException(string message) : FormatException(message);

/// <summary>An ONNX initializer: its name, dims and element type, and where its data lies in the file's bytes.</summary>
public sealed record OnnxTensor(string Name, long[] Dims, int DataType, ReadOnlyMemory<byte> RawData, long ElementCount)
{
    public const int Float = 1;

    /// <summary>The elements as floats; only float32 tensors (raw or <c>float_data</c>) are read.</summary>
    public float[] ToFloats(string path)
    {
        if (DataType != Float) throw new OnnxFormatException($"{path}: initializer '{Name}' has ONNX data type {DataType}; only float32 (1) is imported");
        if (RawData.Length != ElementCount * sizeof(float))
            throw new OnnxFormatException($"{path}: initializer '{Name}' holds {RawData.Length} bytes for {ElementCount} floats");
        var floats = new float[ElementCount];
        var bytes = RawData.Span;
        for (int i = 0; i < floats.Length; i++) floats[i] = BinaryPrimitives.ReadSingleLittleEndian(bytes[(i * 4)..]);
        return floats;
    }
}

/// <summary>An ONNX graph node: its operator and the names of the values it reads and writes.</summary>
public sealed record OnnxNode(string Name, string OpType, string[] Inputs, string[] Outputs);

/// <summary>
/// The parts of an ONNX <c>ModelProto</c> an import needs: the main graph's initializers and nodes. Read with a small
/// hand-written protobuf wire-format reader rather than Google.Protobuf: no generated onnx.proto classes are
/// available to reference, and the handful of fields needed here is less code than a schema and a generator step.
/// Every length is checked against the bytes that remain, so a truncated or hostile file is an
/// <see cref="OnnxFormatException"/> naming what was cut, never a crash or an allocation the file does not back.
/// </summary>
public sealed class OnnxModel
{
    public required string Path { get; init; }
    public required IReadOnlyList<OnnxTensor> Initializers { get; init; }
    public required IReadOnlyList<OnnxNode> Nodes { get; init; }

    public static OnnxModel Load(string path) => Parse(File.ReadAllBytes(path), path);

    public static OnnxModel Parse(ReadOnlyMemory<byte> bytes, string path)
    {
        var initializers = new List<OnnxTensor>();
        var nodes = new List<OnnxNode>();
        bool sawGraph = false;
        var model = new ProtoReader(bytes, path, "ModelProto");
        while (model.Next(out int field, out int wire))
        {
            switch (field)
            {
                case 7 when wire == ProtoReader.LengthDelimited:
                    sawGraph = true;
                    ReadGraph(model.Message("GraphProto"), initializers, nodes);
                    break;
                default: model.Skip(wire); break;
            }
        }
        if (!sawGraph) throw new OnnxFormatException($"{path}: not an ONNX model (no graph)");
        return new OnnxModel { Path = path, Initializers = initializers, Nodes = nodes };
    }

    private static void ReadGraph(ProtoReader graph, List<OnnxTensor> initializers, List<OnnxNode> nodes)
    {
        while (graph.Next(out int field, out int wire))
        {
            switch (field)
            {
                case 1 when wire == ProtoReader.LengthDelimited: nodes.Add(ReadNode(graph.Message("NodeProto"))); break;
                case 5 when wire == ProtoReader.LengthDelimited: initializers.Add(ReadTensor(graph.Message("TensorProto"))); break;
                default: graph.Skip(wire); break;
            }
        }
    }

    private static OnnxNode ReadNode(ProtoReader node)
    {
        var inputs = new List<string>();
        var outputs = new List<string>();
        string name = "", op = "";
        while (node.Next(out int field, out int wire))
        {
            switch (field)
            {
                case 1 when wire == ProtoReader.LengthDelimited: inputs.Add(node.String()); break;
                case 2 when wire == ProtoReader.LengthDelimited: outputs.Add(node.String()); break;
                case 3 when wire == ProtoReader.LengthDelimited: name = node.String(); break;
                case 4 when wire == ProtoReader.LengthDelimited: op = node.String(); break;
                default: node.Skip(wire); break;
            }
        }
        return new OnnxNode(name, op, [.. inputs], [.. outputs]);
    }

    private static OnnxTensor ReadTensor(ProtoReader tensor)
    {
        var dims = new List<long>();
        int dataType = 0;
        string name = "";
        ReadOnlyMemory<byte> raw = default;
        var floatData = new List<ReadOnlyMemory<byte>>();
        long floatCount = 0;
        bool external = false;
        while (tensor.Next(out int field, out int wire))
        {
            switch (field)
            {
                case 1 when wire == ProtoReader.VarintWire: dims.Add((long)tensor.Varint()); break;
                case 1 when wire == ProtoReader.LengthDelimited:
                    var packed = tensor.Message("TensorProto.dims");
                    while (!packed.AtEnd) dims.Add((long)packed.Varint());
                    break;
                case 2 when wire == ProtoReader.VarintWire: dataType = (int)tensor.Varint(); break;
                case 4 when wire == ProtoReader.LengthDelimited:
                    var chunk = tensor.Bytes();
                    if (chunk.Length % 4 != 0) throw tensor.Error("TensorProto.float_data is not a whole number of floats");
                    floatData.Add(chunk);
                    floatCount += chunk.Length / 4;
                    break;
                case 4 when wire == ProtoReader.Fixed32:
                    floatData.Add(tensor.Fixed(4));
                    floatCount++;
                    break;
                case 8 when wire == ProtoReader.LengthDelimited: name = tensor.String(); break;
                case 9 when wire == ProtoReader.LengthDelimited: raw = tensor.Bytes(); break;
                case 13 when wire == ProtoReader.LengthDelimited: external = true; tensor.Skip(wire); break;
                case 14 when wire == ProtoReader.VarintWire: external |= tensor.Varint() == 1; break;
                default: tensor.Skip(wire); break;
            }
        }
        if (external)
            throw tensor.Error($"initializer '{name}' keeps its data in an external file, which this import does not read; re-export with the weights inside the .onnx");
        long elements = 1;
        foreach (long d in dims)
            if (d < 0 || !SizeMath.TryMultiply(elements, d, out elements))
                throw tensor.Error($"initializer '{name}' has dims [{string.Join(", ", dims)}], which do not give a valid element count");
        if (raw.IsEmpty && floatData.Count > 0)
        {
            // float_data's floats are the same little-endian bytes raw_data would hold; checked against dims before they are joined.
            if (floatCount != elements) throw tensor.Error($"initializer '{name}' has {floatCount} floats for dims [{string.Join(", ", dims)}]");
            var joined = new byte[floatCount * 4];
            int at = 0;
            foreach (var c in floatData)
            {
                c.Span.CopyTo(joined.AsSpan(at));
                at += c.Length;
            }
            raw = joined;
        }
        return new OnnxTensor(name, [.. dims], dataType, raw, elements);
    }
}

/// <summary>
/// Protobuf's wire format over a slice of bytes: tags, varints, fixed-width and length-delimited fields, every read
/// bounds-checked; nested messages are readers over sub-slices, so nothing is copied and nothing is allocated from a
/// length the bytes do not hold.
/// </summary>
internal struct ProtoReader(ReadOnlyMemory<byte> bytes, string path, string message)
{
    public const int VarintWire = 0, Fixed64 = 1, LengthDelimited = 2, Fixed32 = 5;

    private readonly ReadOnlyMemory<byte> _bytes = bytes;
    private int _at;

    public readonly bool AtEnd => _at >= _bytes.Length;

    public readonly OnnxFormatException Error(string what) => new($"{path}: {what} (in {message}, at byte {_at} of {_bytes.Length}; the file may be truncated or not ONNX)");

    /// <summary>Reads the next field's tag; false at the end of the message.</summary>
    public bool Next(out int field, out int wire)
    {
        field = wire = 0;
        if (AtEnd) return false;
        ulong tag = Varint();
        wire = (int)(tag & 7);
        if (tag >> 3 is 0 or > int.MaxValue) throw Error($"invalid field number {tag >> 3}");
        field = (int)(tag >> 3);
        return true;
    }

    public ulong Varint()
    {
        var span = _bytes.Span;
        ulong value = 0;
        for (int shift = 0; shift < 64; shift += 7)
        {
            if (_at >= span.Length) throw Error("a varint runs past the end");
            byte b = span[_at++];
            value |= (ulong)(b & 0x7F) << shift;
            if (b < 0x80) return value;
        }
        throw Error("a varint is longer than 10 bytes");
    }

    public ReadOnlyMemory<byte> Fixed(int count)
    {
        if (_bytes.Length - _at < count) throw Error($"a {count}-byte field runs past the end");
        var slice = _bytes.Slice(_at, count);
        _at += count;
        return slice;
    }

    public ReadOnlyMemory<byte> Bytes()
    {
        ulong length = Varint();
        if (length > (ulong)(_bytes.Length - _at)) throw Error($"a field of {length} bytes runs past the end");
        return Fixed((int)length);
    }

    public string String() => Encoding.UTF8.GetString(Bytes().Span);

    public ProtoReader Message(string name) => new(Bytes(), path, name);

    public void Skip(int wire)
    {
        switch (wire)
        {
            case VarintWire: Varint(); break;
            case Fixed64: Fixed(8); break;
            case LengthDelimited: Bytes(); break;
            case Fixed32: Fixed(4); break;
            default: throw Error($"unsupported wire type {wire}");
        }
    }
}
