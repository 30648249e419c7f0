namespace Velo.Tensors;

/// <summary>Argument checks shared by the row converters: a row is a whole number of blocks, its bytes exactly that.</summary>
internal static class RowLength
{
    public static void Check(GgmlType type, int elements, int bytes, string elementsParam, string bytesParam)
    {
        int blockSize = GgmlTypeInfo.BlockSize(type);
        int blockBytes = GgmlTypeInfo.BlockBytes(type);
        if (elements % blockSize != 0)
            throw new ArgumentException(
                $"{elements} elements is not a whole number of {type} blocks of {blockSize}.", elementsParam);
        long expectedBytes = (long)(elements / blockSize) * blockBytes;
        if (bytes != expectedBytes)
            throw new ArgumentException(
                $"{elements} elements of {type} take {expectedBytes} bytes, but {bytes} were given.", bytesParam);
    }
}
