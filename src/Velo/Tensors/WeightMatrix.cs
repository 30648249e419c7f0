namespace Velo.Tensors;

/// <summary>
/// A 2-D weight tensor as stored in a model file: <see cref="Rows"/> rows of <see cref="Cols"/> elements of
/// <see cref="Type"/>, each row <see cref="RowBytes"/> bytes, rows contiguous. The data is usually memory-mapped
/// and never copied. In GGUF terms Cols is ne[0] and Rows is ne[1].
/// </summary>
internal readonly unsafe struct WeightMatrix
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

    /// <summary>
    /// The rows repacked at load into <see cref="RowGroups"/>' interleaved layout, which the Q4_0 kernels read, or
    /// null (then they read <see cref="Data"/> with the portable kernel). Row r sits in lane
    /// <see cref="PackedFirstLane"/> + r counted from this group on.
    /// </summary>
    public byte* Packed { get; private init; }

    /// <summary>The lane of row 0 in the first group of <see cref="Packed"/>: nonzero for a slice that starts inside a group.</summary>
    public int PackedFirstLane { get; private init; }
    public GgmlType Type { get; }
    public int Rows { get; }
    public int Cols { get; }
    public long RowBytes { get; }

    public byte* Row(int row) => Data + row * RowBytes;

    public ReadOnlySpan<byte> RowSpan(int row) => new(Row(row), checked((int)RowBytes));

    /// <summary>
    /// Rows <paramref name="first"/> to <paramref name="first"/> + <paramref name="count"/> − 1 as a matrix of their own,
    /// pointing into the same data: one part of a fused tensor (Q, K and V, or gate and up, stacked by rows).
    /// </summary>
    public WeightMatrix Slice(int first, int count)
    {
        if (first < 0 || count <= 0 || (long)first + count > Rows)
            throw new ArgumentOutOfRangeException(nameof(first), $"rows {first}..{(long)first + count - 1} are outside a matrix of {Rows} rows");
        var slice = new WeightMatrix(Row(first), Type, count, Cols);
        if (Packed == null) return slice;
        int lane = PackedFirstLane + first;
        return slice with
        {
            Packed = Packed + lane / RowGroups.Rows * RowGroups.GroupBytes(Type, Cols),
            PackedFirstLane = lane % RowGroups.Rows,
        };
    }

    /// <summary>This matrix with its rows' repacked copy (<see cref="RowGroups.Repack"/> of the whole matrix).</summary>
    public WeightMatrix WithPacked(byte* packed) => this with { Packed = packed, PackedFirstLane = 0 };
}
