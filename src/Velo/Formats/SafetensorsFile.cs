using System.Text.Json;
using Velo.Tensors;

namespace Velo.Formats;

/// <summary>A safetensors file that is truncated, lies about its tensors, or holds what Velo cannot read.</summary>
public sealed class SafetensorsFormatException : FormatException
{
    public SafetensorsFormatException(string message) : base(message) { }
}

/// <summary>
/// One tensor of a safetensors file: its dtype name as the file spells it, its shape in row-major order (the last
/// dimension varies fastest, as PyTorch holds it), and where its bytes lie within the data section.
/// </summary>
public sealed record SafetensorsTensor(string Name, string DType, long[] Shape, long Offset, long ByteSize, long ElementCount)
{
    /// <summary>The GGML type whose rows are laid out exactly as this dtype's (F32, F16, BF16), or null for dtypes Velo cannot read.</summary>
    public GgmlType? FloatType => DType switch
    {
        "F32" => GgmlType.F32,
        "F16" => GgmlType.F16,
        "BF16" => GgmlType.BF16,
        _ => null,
    };
}

/// <summary>
/// A Hugging Face safetensors file, memory-mapped read-only: an 8-byte little-endian header length, a JSON header
/// naming each tensor's dtype, shape and [begin, end) byte range, then the data. Every length, shape and offset is
/// checked before anything uses it (through <see cref="SizeMath"/>): a range past the end, two ranges that overlap, or
/// a range whose size is not shape × dtype is refused with a message naming the tensor.
/// </summary>
public sealed unsafe class SafetensorsFile : IDisposable
{
    /// <summary>The largest header the reference implementation accepts (100 MB); a longer one is refused before it is parsed.</summary>
    public const long MaxHeaderBytes = 100_000_000;

    private const int MaxDimensions = 8;

    private readonly MappedFile _file;
    private readonly Dictionary<string, SafetensorsTensor> _byName = new(StringComparer.Ordinal);

    private SafetensorsFile(string path)
    {
        Path = path;
        var info = new FileInfo(path);
        if (!info.Exists) throw new FileNotFoundException($"safetensors file not found: {path}", path);
        FileSize = info.Length;
        if (FileSize < 8) throw new SafetensorsFormatException($"{path}: file is {FileSize} bytes, too small to be a safetensors file (the header length alone is 8 bytes)");
        _file = new MappedFile(path);
        try
        {
            (Tensors, Metadata, DataOffset) = Parse();
            foreach (var t in Tensors) _byName[t.Name] = t;
        }
        catch
        {
            Dispose();
            throw;
        }
    }

    public static SafetensorsFile Open(string path) => new(path);

    public string Path { get; }
    public long FileSize { get; }

    /// <summary>Tensors in the order of their data.</summary>
    public IReadOnlyList<SafetensorsTensor> Tensors { get; }

    /// <summary>The header's <c>__metadata__</c> strings (e.g. <c>format: pt</c>).</summary>
    public IReadOnlyDictionary<string, string> Metadata { get; }

    /// <summary>File offset of the data section (8 + the header length).</summary>
    public long DataOffset { get; }

    public SafetensorsTensor? Find(string name) => _byName.GetValueOrDefault(name);

    /// <summary>The tensor's bytes inside the mapping; valid until the file is disposed.</summary>
    public ReadOnlySpan<byte> Bytes(SafetensorsTensor tensor, long start, int length)
    {
        if (start < 0 || length < 0 || start > tensor.ByteSize - length)
            throw new ArgumentOutOfRangeException(nameof(start), $"bytes {start}+{length} are outside tensor '{tensor.Name}' of {tensor.ByteSize} bytes");
        return new ReadOnlySpan<byte>(_file.Start(nameof(SafetensorsFile)) + DataOffset + tensor.Offset + start, length);
    }

    public void Dispose() => _file.Dispose();

    /// <summary>Bytes per element of every dtype the format defines; Velo reads F32, F16 and BF16, but checks the sizes of all.</summary>
    private static int ElementBytes(string dtype) => dtype switch
    {
        "BOOL" or "U8" or "I8" or "F8_E4M3" or "F8_E5M2" or "F8_E8M0" => 1,
        "I16" or "U16" or "F16" or "BF16" => 2,
        "I32" or "U32" or "F32" => 4,
        "I64" or "U64" or "F64" => 8,
        _ => 0,
    };

    private (SafetensorsTensor[], Dictionary<string, string>, long) Parse()
    {
        ulong headerLength = *(ulong*)_file.Start(nameof(SafetensorsFile));
        if (headerLength > MaxHeaderBytes)
            throw new SafetensorsFormatException($"{Path}: header length {headerLength} exceeds the {MaxHeaderBytes}-byte limit of the format");
        if ((long)headerLength > FileSize - 8)
            throw new SafetensorsFormatException($"{Path}: header length {headerLength} runs past the end of the file ({FileSize} bytes)");
        long dataOffset = 8 + (long)headerLength;
        long dataSize = FileSize - dataOffset;

        JsonDocument header;
        try
        {
            header = JsonDocument.Parse(new ReadOnlyMemory<byte>(new ReadOnlySpan<byte>(_file.Start(nameof(SafetensorsFile)) + 8, (int)headerLength).ToArray()),
                new JsonDocumentOptions { MaxDepth = 16 });
        }
        catch (JsonException e)
        {
            throw new SafetensorsFormatException($"{Path}: the header is not valid JSON: {e.Message}");
        }
        using (header)
        try
        {
            if (header.RootElement.ValueKind != JsonValueKind.Object)
                throw new SafetensorsFormatException($"{Path}: the header is not a JSON object");
            var tensors = new List<SafetensorsTensor>();
            var metadata = new Dictionary<string, string>(StringComparer.Ordinal);
            var names = new HashSet<string>(StringComparer.Ordinal);
            foreach (var entry in header.RootElement.EnumerateObject())
            {
                if (!names.Add(entry.Name)) throw new SafetensorsFormatException($"{Path}: '{entry.Name}' appears twice in the header");
                if (entry.Name == "__metadata__")
                {
                    if (entry.Value.ValueKind != JsonValueKind.Object)
                        throw new SafetensorsFormatException($"{Path}: __metadata__ is not an object of strings");
                    foreach (var item in entry.Value.EnumerateObject())
                        metadata[item.Name] = item.Value.ValueKind == JsonValueKind.String
                            ? item.Value.GetString()!
                            : throw new SafetensorsFormatException($"{Path}: __metadata__ '{item.Name}' is not a string");
                    continue;
                }
                tensors.Add(ReadTensor(entry, dataSize));
            }

            // Every range now ends inside the data section, so these sums cannot overflow.
            var byOffset = tensors.Where(t => t.ByteSize > 0).OrderBy(t => t.Offset).ToArray();
            for (int i = 1; i < byOffset.Length; i++)
            {
                var prev = byOffset[i - 1];
                if (byOffset[i].Offset < prev.Offset + prev.ByteSize)
                    throw new SafetensorsFormatException($"{Path}: tensors '{prev.Name}' and '{byOffset[i].Name}' overlap in the data section");
            }
            return (tensors.OrderBy(t => t.Offset).ToArray(), metadata, dataOffset);
        }
        catch (InvalidOperationException e)
        {
            // System.Text.Json parses an escaped lone surrogate ("\ud800") but cannot turn it into a string.
            throw new SafetensorsFormatException($"{Path}: a name or string in the header is not valid text: {e.Message}");
        }
    }

    private SafetensorsTensor ReadTensor(JsonProperty entry, long dataSize)
    {
        string name = entry.Name;
        var value = entry.Value;
        if (value.ValueKind != JsonValueKind.Object)
            throw new SafetensorsFormatException($"{Path}: tensor '{name}' is not described by an object");
        string dtype = value.TryGetProperty("dtype", out var d) && d.ValueKind == JsonValueKind.String
            ? d.GetString()!
            : throw new SafetensorsFormatException($"{Path}: tensor '{name}' has no dtype");
        int elementBytes = ElementBytes(dtype);
        if (elementBytes == 0) throw new SafetensorsFormatException($"{Path}: tensor '{name}' has dtype '{dtype}', which Velo cannot read (only F32, F16 and BF16)");

        if (!value.TryGetProperty("shape", out var shapeJson) || shapeJson.ValueKind != JsonValueKind.Array)
            throw new SafetensorsFormatException($"{Path}: tensor '{name}' has no shape");
        if (shapeJson.GetArrayLength() > MaxDimensions)
            throw new SafetensorsFormatException($"{Path}: tensor '{name}' has {shapeJson.GetArrayLength()} dimensions (at most {MaxDimensions})");
        var shape = new long[shapeJson.GetArrayLength()];
        long elements = 1;
        for (int i = 0; i < shape.Length; i++)
        {
            shape[i] = NonNegative(shapeJson[i], $"dimension {i} of tensor '{name}'");
            if (!SizeMath.TryMultiply(elements, shape[i], out elements))
                throw new SafetensorsFormatException($"{Path}: tensor '{name}' has an impossible shape [{string.Join(", ", shape.Take(i + 1))}…]: its element count overflows");
        }

        if (!value.TryGetProperty("data_offsets", out var offsets) || offsets.ValueKind != JsonValueKind.Array || offsets.GetArrayLength() != 2)
            throw new SafetensorsFormatException($"{Path}: tensor '{name}' has no data_offsets [begin, end]");
        long begin = NonNegative(offsets[0], $"data begin of tensor '{name}'");
        long end = NonNegative(offsets[1], $"data end of tensor '{name}'");
        if (end < begin)
            throw new SafetensorsFormatException($"{Path}: tensor '{name}' data ends at {end}, before it begins at {begin}");
        if (end > dataSize)
            throw new SafetensorsFormatException(
                $"{Path}: tensor '{name}' data [{begin}, {end}) extends past the end of the data section ({dataSize} bytes): the file is truncated or its header lies");
        if (!SizeMath.TryMultiply(elements, elementBytes, out long expected))
            throw new SafetensorsFormatException($"{Path}: tensor '{name}' of {elements} {dtype} elements has a byte size that overflows");
        if (end - begin != expected)
            throw new SafetensorsFormatException(
                $"{Path}: tensor '{name}' has {end - begin} bytes of data, but its shape [{string.Join(", ", shape)}] of {dtype} needs {expected}");
        return new SafetensorsTensor(name, dtype, shape, begin, expected, elements);
    }

    private long NonNegative(JsonElement element, string what) =>
        element.ValueKind == JsonValueKind.Number && element.TryGetInt64(out long v) && v >= 0
            ? v
            : throw new SafetensorsFormatException($"{Path}: {what} is {element.GetRawText()}, not a non-negative 64-bit integer");
}
