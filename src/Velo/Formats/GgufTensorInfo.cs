using Velo.Tensors;

namespace Velo.Formats;

/// <summary>
/// One tensor's entry in a GGUF file. <see cref="Shape"/> lists ggml's ne[0], ne[1], …: ne[0] is the innermost
/// (contiguous) dimension, so a weight matrix of <c>rows × cols</c> has Shape = [cols, rows].
/// </summary>
public sealed class GgufTensorInfo
{
    internal GgufTensorInfo(string name, long[] shape, GgmlType type, long offset, long elementCount, long byteSize)
    {
        Name = name;
        Shape = shape;
        Type = type;
        Offset = offset;
        ElementCount = elementCount;
        ByteSize = byteSize;
    }

    public string Name { get; }
    public IReadOnlyList<long> Shape { get; }
    public GgmlType Type { get; }

    /// <summary>Offset of the data from the start of the file's tensor data section.</summary>
    public long Offset { get; }

    public long ByteSize { get; }

    /// <summary>The product of <see cref="Shape"/>, computed (checked) once by the reader.</summary>
    public long ElementCount { get; }

    public override string ToString() => $"{Name} {Type} [{string.Join(", ", Shape)}]";
}
