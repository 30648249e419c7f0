using System.Diagnostics;
using System.Runtime.Intrinsics.X86;
using Velo.Formats;
using Velo.Kernels;
using Velo.Tensors;

namespace Velo.Models.Blocks;

/// <summary>
/// Binds a GGUF file's tensors by name, checking every shape and type: matrices point into the memory-mapped file
/// (or, multiplied ones, into copies: see <see cref="Matrix"/>), vectors (norms, biases, rope factors: a tiny share
/// of a model) are copied out as floats into one aligned buffer.
/// </summary>
internal sealed unsafe class WeightBinder : IDisposable
{
    private readonly GgufFile _file;
    private readonly NativeBuffer _vectors;
    private long _vectorsUsed;
    private readonly bool _copyMultiplied;

    /// <param name="copyMultiplied">Whether matrices multiplied in the types the kernels read in place are copied at
    /// load (<see cref="Copied"/>); decoders pass <see cref="WeightLoading.CopiesMatrices"/>.</param>
    public WeightBinder(GgufFile file, bool copyMultiplied = false)
    {
        _file = file;
        _copyMultiplied = copyMultiplied;
        _vectors = new NativeBuffer(VectorBytes(file));
    }

    public bool Has(string name) => _file.FindTensor(name) != null;

    /// <summary>The type of tensor <paramref name="name"/>, which must exist; binds nothing.</summary>
    public GgmlType TypeOf(string name) => _file.RequireTensor(name).Type;

    /// <summary>The file bytes of every tensor bound so far (a tensor bound twice counts once).</summary>
    public long BoundBytes { get; private set; }

    private readonly HashSet<string> _bound = new(StringComparer.Ordinal);

    private void Count(GgufTensorInfo t)
    {
        if (_bound.Add(t.Name)) BoundBytes += t.ByteSize;
    }

    /// <summary>
    /// A matrix of <paramref name="rows"/> × <paramref name="cols"/> (ggml's shape [cols, rows]). Types the
    /// kernels read interleaved (<see cref="RowGroups"/>) are repacked once per tensor, and other types copied as
    /// they are when the binder copies, unless <paramref name="multiplied"/> is false: an embedding table only looked
    /// up reads the file's rows.
    /// </summary>
    public WeightMatrix Matrix(string name, int rows, int cols, bool multiplied = true)
    {
        var t = _file.RequireTensor(name);
        if (t.Shape.Count != 2 || t.Shape[0] != cols || t.Shape[1] != rows)
            throw new GgufFormatException($"{_file.Path}: tensor '{name}' has shape [{string.Join(", ", t.Shape)}], expected [{cols}, {rows}]");
        if (!GgmlTypeInfo.IsSupported(t.Type))
            throw new NotSupportedException($"{_file.Path}: tensor '{name}' has type {t.Type}, which Velo cannot compute with yet");
        Count(t);
        var matrix = new WeightMatrix(_file.TensorData(t), t.Type, rows, cols);
        if (!multiplied)
        {
            _readFromFile.Add(name);
            return matrix;
        }
        if (RowGroups.Repacks(t.Type) && Avx2.IsSupported) return matrix.WithPacked(Repacked(name, matrix));
        // F16 decode reads 16-row groups instead of a plain copy; everything else on its path reads them too.
        if (_copyMultiplied && F16RowGroupKernels.Reads(t.Type, cols)) return matrix.WithPacked(Repacked(name, matrix));
        return _copyMultiplied ? new WeightMatrix(Copied(t), t.Type, rows, cols) : matrix;
    }

    /// <summary>Tensors bound to be read from the file (embedding lookups), even if also repacked.</summary>
    private readonly HashSet<string> _readFromFile = new(StringComparer.Ordinal);

    /// <summary>
    /// What repacking and copying add to the bytes a forward pass keeps resident: the copies, less the file's bytes
    /// of tensors that only the copies are read from (their mapped pages, read once to repack, are clean and
    /// reclaimable; copies read the file without mapping it).
    /// </summary>
    public long RepackGrowth
    {
        get
        {
            long growth = RepackedBytes + CopiedBytes;
            foreach (var name in _copies.Keys)
                if (!_readFromFile.Contains(name)) growth -= _file.RequireTensor(name).ByteSize;
            return growth;
        }
    }

    /// <summary>The bytes and time of the repacking and copying at load.</summary>
    public WeightRepack Repack => new(RepackedBytes, RepackTime, CopiedBytes, CopyTime);

    /// <summary>Each repacked or copied tensor's copy, by name.</summary>
    private readonly Dictionary<string, nint> _copies = new(StringComparer.Ordinal);

    /// <summary>Where the copies live.</summary>
    private readonly HugePageArena _arena = new();

    /// <summary>Bytes of the matrices repacked at load, which live beside the mapped file.</summary>
    public long RepackedBytes { get; private set; }

    /// <summary>Time spent repacking.</summary>
    public TimeSpan RepackTime { get; private set; }

    /// <summary>The tensor's repacked copy, made on first use: its groups shared out over the cores.</summary>
    private byte* Repacked(string name, WeightMatrix matrix)
    {
        if (_copies.TryGetValue(name, out var done)) return (byte*)done;
        long start = Stopwatch.GetTimestamp();
        long bytes = RowGroups.Bytes(matrix.Type, matrix.Rows, matrix.Cols);
        byte* packed = _arena.Allocate(bytes);
        _copies.Add(name, (nint)packed);
        RepackedBytes += bytes;
        int groups = RowGroups.GroupCount(matrix.Rows);
        const int GroupsPerItem = 16;
        nint destination = (nint)packed;
        Parallel.For(0, (groups + GroupsPerItem - 1) / GroupsPerItem, item =>
            RowGroups.Repack(matrix, (byte*)destination, item * GroupsPerItem, Math.Min(groups, (item + 1) * GroupsPerItem)));
        // The file's pages of this tensor, read once to copy, leave resident memory (an embedding lookup maps rows again).
        PageAdvice.Release(matrix.Data, matrix.Rows * matrix.RowBytes);
        RepackTime += Stopwatch.GetElapsedTime(start);
        return packed;
    }

    /// <summary>Bytes of the matrices copied at load as the file has them.</summary>
    public long CopiedBytes { get; private set; }

    /// <summary>Time spent copying.</summary>
    public TimeSpan CopyTime { get; private set; }

    /// <summary>
    /// The tensor's bytes copied, on first use, into memory backed by 2 MiB pages (<see cref="HugePageArena"/>): read
    /// from the mapped file's 4 KiB pages (Linux maps page-cache pages of most file systems no larger), a decode
    /// step misses the TLB at every page and the hardware prefetchers stop at each page boundary; on the 2-core
    /// Zen 4 VM (December 2026, load average 4–14) llama-1B F16 decoded 18–26 % and Q4_K_M 9–13 % faster from the
    /// copies (medians of alternating rounds). The file is read with <c>read</c> calls in chunks shared out over the
    /// cores, so its pages never enter this process.
    /// </summary>
    private byte* Copied(GgufTensorInfo t)
    {
        if (_copies.TryGetValue(t.Name, out var done)) return (byte*)done;
        long start = Stopwatch.GetTimestamp();
        long bytes = t.ByteSize;
        nint destination = (nint)_arena.Allocate(bytes);
        _copies.Add(t.Name, destination);
        CopiedBytes += bytes;
        Parallel.For(0, (bytes + CopyChunkBytes - 1) / CopyChunkBytes, chunk =>
        {
            long offset = chunk * CopyChunkBytes;
            _file.ReadTensorBytes(t, offset, new Span<byte>((byte*)destination + offset, (int)Math.Min(CopyChunkBytes, bytes - offset)));
        });
        CopyTime += Stopwatch.GetElapsedTime(start);
        return (byte*)destination;
    }

    /// <summary>Bytes of one <c>read</c> of <see cref="Copied"/>: two huge pages.</summary>
    private const int CopyChunkBytes = 2 * PageAdvice.HugePageBytes;

    /// <summary>The vector as floats, or null when the file does not have it.</summary>
    public float* OptionalVector(string name, int length) => Has(name) ? Vector(name, length) : null;

    public float* Vector(string name, int length)
    {
        var t = _file.RequireTensor(name);
        // Only 1-D tensors are counted in the vector buffer's size, so a vector of any other shape is refused even
        // when its element count is right: copying it would write past the buffer.
        if (t.Shape.Count != 1 || t.ElementCount != length)
            throw new GgufFormatException($"{_file.Path}: tensor '{name}' has shape [{string.Join(", ", t.Shape)}], expected [{length}]");
        if (!GgmlTypeInfo.IsSupported(t.Type))
            throw new NotSupportedException($"{_file.Path}: tensor '{name}' has type {t.Type}, which Velo cannot compute with yet");
        long bytes = AlignedFloatBytes(length);
        // The last guard before a raw copy into native memory: the buffer was sized from the file's 1-D tensors.
        if (bytes > _vectors.Length - _vectorsUsed)
            throw new InvalidOperationException($"{_file.Path}: tensor '{name}' does not fit in the {_vectors.Length} bytes reserved for vectors");
        Count(t);
        float* dst = (float*)((byte*)_vectors.Pointer + _vectorsUsed);
        _vectorsUsed += bytes;
        Dequantize.Row(t.Type, _file.TensorBytes(t), new Span<float>(dst, length));
        return dst;
    }

    private const int FloatsPerLine = NativeBuffer.Alignment / sizeof(float);

    /// <summary>A vector's floats rounded up to whole lines, so that every vector starts aligned.</summary>
    private static long AlignedFloatBytes(long elements) =>
        SizeMath.Product("bytes of a vector as floats",
            elements / FloatsPerLine + (elements % FloatsPerLine == 0 ? 0 : 1), NativeBuffer.Alignment);

    /// <summary>Room for every 1-D tensor as floats.</summary>
    private static long VectorBytes(GgufFile file)
    {
        long total = 0;
        foreach (var t in file.Tensors)
            if (t.Shape.Count == 1 && !SizeMath.TryAdd(total, AlignedFloatBytes(t.ElementCount), out total))
                throw new GgufFormatException($"{file.Path}: the 1-D tensors hold too many elements to load as floats");
        return total;
    }

    public void Dispose()
    {
        _vectors.Dispose();
        _arena.Dispose();
    }
}
