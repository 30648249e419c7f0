namespace Velo.Tensors;

/// <summary>
/// A 2-D weight tensor as stored in a model file: <see cref="Rows"/> rows of <see cref="Cols"/> elements of
/// <see cref="Type"/>, each row <see cref="RowBytes"/> bytes, rows contiguous. The data is usually memory-mapped
/// and never copied. In GGUF terms Cols is ne[0] and Rows is ne[1].
/// </summary>
public readonly unsafe struct WeightMatrix
{
    public WeightMatrix(byte* data, GgmlType type, int rows, int cols)
    {
        Data = data;
        Type = type;
        Rows = rows;
        Cols = cols;
        RowBytes = GgmlTypeInfo.RowBytes(type, cols);
    }

    public byte* Data { get; }
    public GgmlType Type { get; }
    public int Rows { get; }
    public int Cols { get; }
    public long RowBytes { get; }

    /// <summary>
    /// For F16 weights, optionally: per row, one byte per 32 columns, nonzero where those 32 halves include a zero
    /// or subnormal (see <see cref="Kernels.F16Row"/>). Without it the decode kernel checks every 32 halves as it
    /// goes, which costs about a third of its time. Null for other types, or when Cols is not a multiple of 32.
    /// </summary>
    public byte* RareBlocks { get; init; }

    public byte* Row(int row) => Data + row * RowBytes;

    public ReadOnlySpan<byte> RowSpan(int row) => new(Row(row), checked((int)RowBytes));
}
