using System.Text;
using Velo.Tensors;

namespace Velo.Formats;

/// <summary>
/// A GGUF model file (versions 2 and 3), memory-mapped read-only. Metadata and tensor infos are parsed up front
/// with every length and offset checked against the file size; tensor data is never copied: <see cref="TensorData"/>
/// points into the mapping, which lives until <see cref="Dispose"/>.
/// </summary>
public sealed unsafe class GgufFile : IDisposable
{
    public const uint Magic = 0x46554747; // "GGUF" read as a little-endian uint32
    public const uint DefaultAlignment = 32;
    public const int MaxDimensions = 4;
    private const int MaxArrayNesting = 8;

    private readonly MappedFile _file;
    private readonly Dictionary<string, GgufTensorInfo> _tensorsByName = new(StringComparer.Ordinal);

    private GgufFile(string path)
    {
        Path = path;
        var info = new FileInfo(path);
        if (!info.Exists) throw new FileNotFoundException($"model file not found: {path}", path);
        FileSize = info.Length;
        if (FileSize < 24)
            throw new GgufFormatException($"{path}: file is {FileSize} bytes, too small to be a GGUF file (the header alone is 24 bytes)");

        _file = new MappedFile(path);
        try
        {
            var reader = new Reader(_file.Start(nameof(GgufFile)), FileSize, path);
            (Metadata, Tensors, Alignment, DataOffset) = Parse(ref reader, path);
            foreach (var t in Tensors) _tensorsByName[t.Name] = t;
        }
        catch
        {
            Dispose();
            throw;
        }
    }

    public static GgufFile Open(string path) => new(path);

    public string Path { get; }
    public long FileSize { get; }
    public uint Version { get; private set; }
    public GgufMetadata Metadata { get; }
    public IReadOnlyList<GgufTensorInfo> Tensors { get; }
    public uint Alignment { get; }

    /// <summary>File offset of the tensor data section.</summary>
    public long DataOffset { get; }

    public string? Architecture => Metadata.GetString("general.architecture");

    public GgufTensorInfo? FindTensor(string name) => _tensorsByName.GetValueOrDefault(name);

    public GgufTensorInfo RequireTensor(string name) =>
        FindTensor(name) ?? throw new GgufFormatException($"{Path}: tensor '{name}' is missing");

    /// <summary>Pointer to a tensor's bytes inside the mapping; valid until the file is disposed.</summary>
    public byte* TensorData(GgufTensorInfo tensor) => _file.Start(nameof(GgufFile)) + DataOffset + tensor.Offset;

    public ReadOnlySpan<byte> TensorBytes(GgufTensorInfo tensor) =>
        tensor.ByteSize <= int.MaxValue
            ? new(TensorData(tensor), (int)tensor.ByteSize)
            : throw new NotSupportedException($"{Path}: tensor '{tensor.Name}' has {tensor.ByteSize} bytes, more than can be read as one span");

    private readonly Lock _readerLock = new();
    private Microsoft.Win32.SafeHandles.SafeFileHandle? _reader;

    /// <summary>
    /// Copies bytes <paramref name="offset"/>.. of a tensor's data into <paramref name="destination"/> with
    /// <c>read</c> calls rather than through the mapping, which would first map every 4 KiB page into this process
    /// (a page fault each) only for the copy to leave them. Safe to call from several threads at once.
    /// </summary>
    internal void ReadTensorBytes(GgufTensorInfo tensor, long offset, Span<byte> destination)
    {
        if (offset < 0 || !SizeMath.TryAdd(offset, destination.Length, out long end) || end > tensor.ByteSize)
            throw new ArgumentOutOfRangeException(nameof(offset), $"bytes {offset}..{offset}+{destination.Length} lie outside tensor '{tensor.Name}' ({tensor.ByteSize} bytes)");
        Microsoft.Win32.SafeHandles.SafeFileHandle reader;
        lock (_readerLock)
        {
            _file.Start(nameof(GgufFile)); // refused once disposed, as reads through the mapping are
            reader = _reader ??= File.OpenHandle(Path);
        }
        long position = DataOffset + tensor.Offset + offset;
        while (!destination.IsEmpty)
        {
            int read = RandomAccess.Read(reader, destination, position);
            if (read == 0) throw new GgufFormatException($"{Path}: the file ended inside tensor '{tensor.Name}' (was it truncated after loading began?)");
            destination = destination[read..];
            position += read;
        }
    }

    public void Dispose()
    {
        _file.Dispose();
        lock (_readerLock) _reader?.Dispose();
    }

    private (GgufMetadata, GgufTensorInfo[], uint, long) Parse(ref Reader r, string path)
    {
        uint magic = r.UInt32("magic");
        if (magic != Magic)
            throw new GgufFormatException($"{path}: not a GGUF file (bad magic 0x{magic:X8} at offset 0, expected \"GGUF\")");
        Version = r.UInt32("version");
        if (Version == 1)
            throw new GgufFormatException($"{path}: GGUF version 1 is obsolete and not supported (convert the model again)");
        if (Version is not (2 or 3))
            throw new GgufFormatException($"{path}: unsupported GGUF version {Version} (supported: 2, 3; a huge value may mean a big-endian file)");

        ulong tensorCount = r.UInt64("tensor count");
        ulong kvCount = r.UInt64("metadata count");
        // Every tensor info takes at least 8 (name) + 4 (dims) + 8 (one dim) + 4 (type) + 8 (offset) bytes and every
        // key/value at least 8 + 4 + 1: counts beyond what the file can hold are corrupt, and must not drive allocations.
        if (tensorCount > (ulong)(r.Remaining / 32))
            throw new GgufFormatException($"{path}: tensor count {tensorCount} is impossible for a file of {FileSize} bytes");
        if (kvCount > (ulong)(r.Remaining / 13))
            throw new GgufFormatException($"{path}: metadata count {kvCount} is impossible for a file of {FileSize} bytes");

        var metadata = new GgufMetadata();
        for (ulong i = 0; i < kvCount; i++)
        {
            string key = r.String($"key of metadata entry {i}");
            var type = (GgufValueType)r.UInt32($"type of metadata '{key}'");
            metadata.Add(key, ReadValue(ref r, type, key, 0));
        }

        uint alignment = DefaultAlignment;
        if (metadata.TryGetValue("general.alignment", out var alignValue))
        {
            if (alignValue is not uint a || a == 0 || (a & (a - 1)) != 0 || a > 1 << 20)
                throw new GgufFormatException($"{path}: general.alignment must be a power-of-two uint32, got {GgufMetadata.Describe(alignValue)}");
            alignment = a;
        }

        var tensors = new GgufTensorInfo[tensorCount];
        var names = new HashSet<string>(StringComparer.Ordinal);
        for (ulong i = 0; i < tensorCount; i++)
        {
            string name = r.String($"name of tensor {i}");
            if (!names.Add(name)) throw new GgufFormatException($"{path}: tensor '{name}' appears twice");
            uint nDims = r.UInt32($"dimension count of tensor '{name}'");
            if (nDims == 0 || nDims > MaxDimensions)
                throw new GgufFormatException($"{path}: tensor '{name}' has {nDims} dimensions (1 to {MaxDimensions} allowed)");
            var shape = new long[nDims];
            for (int d = 0; d < nDims; d++)
            {
                ulong dim = r.UInt64($"dimension {d} of tensor '{name}'");
                if (dim == 0 || dim > long.MaxValue)
                    throw new GgufFormatException($"{path}: tensor '{name}' has an impossible dimension {d} = {dim}");
                shape[d] = (long)dim;
            }
            if (!SizeMath.TryElementCount(shape, out long elements))
                throw new GgufFormatException($"{path}: tensor '{name}' has an impossible shape [{string.Join(", ", shape)}]: its element count overflows");
            uint rawType = r.UInt32($"type of tensor '{name}'");
            var type = (GgmlType)rawType;
            if (!GgmlTypeInfo.TryGetLayout(type, out int blockSize, out _))
                throw new GgufFormatException($"{path}: tensor '{name}' has unknown tensor type {rawType}");
            if (shape[0] % blockSize != 0)
                throw new GgufFormatException($"{path}: tensor '{name}' row of {shape[0]} elements is not a whole number of {type} blocks of {blockSize}");
            // Checked here, before anything sees the tensor: a size that wrapped negative would pass the end-of-file
            // and overlap checks below and then undersize the buffers sized from it.
            if (!SizeMath.TryByteSize(type, elements, out long bytes))
                throw new GgufFormatException($"{path}: tensor '{name}' has an impossible size: {elements} elements of {type} overflow a 64-bit byte count");
            ulong offset = r.UInt64($"data offset of tensor '{name}'");
            if (offset % alignment != 0)
                throw new GgufFormatException($"{path}: tensor '{name}' data offset {offset} is not a multiple of the alignment {alignment}");
            if (offset > long.MaxValue) throw new GgufFormatException($"{path}: tensor '{name}' has an impossible data offset {offset}");
            tensors[i] = new GgufTensorInfo(name, shape, type, (long)offset, elements, bytes);
        }

        long dataOffset = AlignUp(r.Position, alignment);
        long dataSize = FileSize - dataOffset;
        if (tensorCount > 0 && dataSize < 0)
            throw new GgufFormatException($"{path}: the file ends at {FileSize} before its tensor data section at {dataOffset}");
        foreach (var t in tensors)
        {
            if (!SizeMath.TryAdd(t.Offset, t.ByteSize, out long end) || end > dataSize)
                throw new GgufFormatException(
                    $"{path}: tensor '{t.Name}' data of {t.ByteSize} bytes at offset {dataOffset} + {t.Offset} extends past the end of the file ({FileSize} bytes): the file is truncated or corrupt");
        }
        // Every tensor now ends inside the file, so these sums cannot overflow.
        var byOffset = tensors.OrderBy(t => t.Offset).ToArray();
        for (int i = 1; i < byOffset.Length; i++)
        {
            var prev = byOffset[i - 1];
            if (byOffset[i].Offset < prev.Offset + prev.ByteSize)
                throw new GgufFormatException($"{path}: tensors '{prev.Name}' and '{byOffset[i].Name}' overlap in the data section");
        }
        return (metadata, tensors, alignment, dataOffset);
    }

    internal static long AlignUp(long value, long alignment) => checked(value + alignment - 1) / alignment * alignment;

    private object ReadValue(ref Reader r, GgufValueType type, string key, int depth)
    {
        switch (type)
        {
            case GgufValueType.UInt8: return r.Byte(key);
            case GgufValueType.Int8: return (sbyte)r.Byte(key);
            case GgufValueType.UInt16: return r.UInt16(key);
            case GgufValueType.Int16: return (short)r.UInt16(key);
            case GgufValueType.UInt32: return r.UInt32(key);
            case GgufValueType.Int32: return (int)r.UInt32(key);
            case GgufValueType.Float32: return BitConverter.UInt32BitsToSingle(r.UInt32(key));
            case GgufValueType.Bool:
                byte b = r.Byte(key);
                if (b > 1) throw new GgufFormatException($"{Path}: metadata '{key}' bool has value {b} at offset {r.Position - 1}");
                return b == 1;
            case GgufValueType.String: return r.String($"metadata '{key}'");
            case GgufValueType.UInt64: return r.UInt64(key);
            case GgufValueType.Int64: return (long)r.UInt64(key);
            case GgufValueType.Float64: return BitConverter.UInt64BitsToDouble(r.UInt64(key));
            case GgufValueType.Array:
                return ReadArray(ref r, key, depth);
            default:
                throw new GgufFormatException($"{Path}: metadata '{key}' has unknown value type {(uint)type} at offset {r.Position - 4}");
        }
    }

    private GgufArray ReadArray(ref Reader r, string key, int depth)
    {
        if (depth >= MaxArrayNesting)
            throw new GgufFormatException($"{Path}: metadata '{key}' nests arrays deeper than {MaxArrayNesting} levels");
        long at = r.Position;
        var elementType = (GgufValueType)r.UInt32($"array type of metadata '{key}'");
        if (!Enum.IsDefined(elementType))
            throw new GgufFormatException($"{Path}: metadata '{key}' is an array of unknown value type {(uint)elementType} at offset {at}");
        ulong count = r.UInt64($"array length of metadata '{key}'");
        if (count > (ulong)(r.Remaining / GgufValues.MinEncodedSize(elementType)) || count > int.MaxValue)
            throw new GgufFormatException($"{Path}: metadata '{key}' array length {count} at offset {at + 4} exceeds what the file can hold");
        int n = (int)count;
        switch (elementType)
        {
            case GgufValueType.String:
            {
                var items = new string[n];
                string what = $"metadata '{key}'";
                for (int i = 0; i < n; i++) items[i] = r.String(what, i);
                return new GgufArray(elementType, items);
            }
            case GgufValueType.Array:
            {
                var items = new GgufArray[n];
                // A nested array element is itself {type, count, items}, with no type tag of its own (the spec's union).
                for (int i = 0; i < n; i++) items[i] = ReadArray(ref r, $"{key}[{i}]", depth + 1);
                return new GgufArray(elementType, items);
            }
            case GgufValueType.Bool:
            {
                var items = new bool[n];
                for (int i = 0; i < n; i++) items[i] = (bool)ReadValue(ref r, elementType, key, depth);
                return new GgufArray(elementType, items);
            }
            default:
            {
                var items = Array.CreateInstance(GgufValues.ClrType(elementType), n);
                int size = GgufValues.MinEncodedSize(elementType);
                var src = r.Bytes((long)n * size, $"metadata '{key}' array data");
                // Scalars are stored little-endian, as the CLR holds them on every platform Velo runs on.
                fixed (byte* dst = &System.Runtime.InteropServices.MemoryMarshal.GetArrayDataReference(items))
                    src.CopyTo(new Span<byte>(dst, src.Length));
                return new GgufArray(elementType, items);
            }
        }
    }

    /// <summary>Bounds-checked little-endian cursor over the mapping.</summary>
    private ref struct Reader(byte* start, long length, string path)
    {
        private long _position;

        public readonly long Position => _position;
        public readonly long Remaining => length - _position;

        private byte* Take(long count, string what)
        {
            if (count < 0 || count > length - _position)
                throw new GgufFormatException(
                    $"{path}: unexpected end of file reading {what} at offset {_position} (needs {count} bytes, {length - _position} left)");
            byte* p = start + _position;
            _position += count;
            return p;
        }

        public byte Byte(string what) => *Take(1, what);
        public ushort UInt16(string what) => System.Runtime.CompilerServices.Unsafe.ReadUnaligned<ushort>(Take(2, what));
        public uint UInt32(string what) => System.Runtime.CompilerServices.Unsafe.ReadUnaligned<uint>(Take(4, what));
        public ulong UInt64(string what) => System.Runtime.CompilerServices.Unsafe.ReadUnaligned<ulong>(Take(8, what));

        public ReadOnlySpan<byte> Bytes(long count, string what) => new(Take(count, what), checked((int)count));

        /// <summary>Reads a string; <paramref name="index"/> ≥ 0 names an array element, spelled out only in an error
        /// message, since a vocabulary has a hundred thousand of them.</summary>
        public string String(string what, int index = -1)
        {
            long at = _position;
            if (Remaining < 8) Take(8, Describe(what, index) + " length");
            ulong len = UInt64(what);
            if (len > (ulong)Remaining)
                throw new GgufFormatException($"{path}: string length {len} of {Describe(what, index)} at offset {at} exceeds the {Remaining} bytes left in the file");
            if (len > int.MaxValue)
                throw new GgufFormatException($"{path}: string length {len} of {Describe(what, index)} at offset {at} is too large");
            return Encoding.UTF8.GetString(Take((long)len, what), (int)len);
        }

        private static string Describe(string what, int index) => index < 0 ? what : $"{what}[{index}]";
    }
}
