using Velo.Tensors;

namespace Velo.Formats;

/// <summary>Produces one row of a tensor as floats: <c>(row index, destination of the row's values)</c>.</summary>
public delegate void RowSource(long row, Span<float> values);

/// <summary>
/// Writes a tensor of <c>rows × columns</c> floats converted to a stored type, computing and converting rows in
/// parallel (the reference quantizers are scalar code) a bounded slab at a time, so a tensor of any size streams
/// through a few megabytes of memory, in row order.
/// </summary>
public sealed class RowStreamer
{
    /// <summary>Floats per slab: large enough that each thread gets long runs of rows, small enough to stay in cache-sized buffers.</summary>
    private const int SlabElements = 1 << 20;

    private readonly ParallelOptions _parallel;
    private float[] _floats = [];
    private byte[] _bytes = [];

    public RowStreamer(int threads)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(threads, 1);
        _parallel = new ParallelOptions { MaxDegreeOfParallelism = threads };
    }

    /// <summary>Writes the rows to <paramref name="stream"/>; <paramref name="written"/> hears the bytes of each slab.</summary>
    public void Write(Stream stream, GgmlType type, int columns, long rows, RowSource source, Action<long>? written = null)
    {
        int rowBytes = checked((int)GgmlTypeInfo.RowBytes(type, columns));
        int slabRows = (int)Math.Clamp(SlabElements / columns, 1, rows);
        if (_floats.Length < slabRows * columns) _floats = new float[slabRows * columns];
        if (_bytes.Length < slabRows * rowBytes) _bytes = new byte[slabRows * rowBytes];
        float[] floats = _floats;
        byte[] bytes = _bytes;
        for (long first = 0; first < rows; first += slabRows)
        {
            int count = (int)Math.Min(slabRows, rows - first);
            // Contiguous runs of rows per task: the quantizers are fast per row, so one task per row would cost more
            // in scheduling than the work itself.
            int tasks = Math.Min(count, _parallel.MaxDegreeOfParallelism * 4);
            Parallel.For(0, tasks, _parallel, task =>
            {
                int begin = (int)((long)count * task / tasks), end = (int)((long)count * (task + 1) / tasks);
                for (int i = begin; i < end; i++)
                {
                    var values = floats.AsSpan(i * columns, columns);
                    source(first + i, values);
                    Quantize.Row(type, values, bytes.AsSpan(i * rowBytes, rowBytes));
                }
            });
            stream.Write(bytes, 0, count * rowBytes);
            written?.Invoke((long)count * rowBytes);
        }
    }
}
