namespace Velo.Tensors;

/// <summary>
/// The interleaved layout that Q4_0 and Q8_0 weights are repacked into at load, so one 64-byte register holds the
/// same four quant bytes of 16 rows (lane r = row r) and an activation's four quants, broadcast, multiply all 16
/// rows at once: each int32 lane then sums one row's block total with no horizontal sums.
/// <para>
/// A matrix is a run of groups of <see cref="Rows"/> rows (the last padded with zero rows). A group is a run of
/// block pairs (the last padded with a zero block), so a decode step reads each group as one stream of whole
/// 64-byte lines: a pair holds both blocks' 16 fp16 scales (32 bytes each), then each block's quants as 64-byte registers, register j holding bytes 4j..4j+3 of each row's quant bytes: for Q8_0 eight
/// registers, register j elements 4j..4j+3; for Q4_0 four registers of the 16 nibble bytes, so register j's low
/// nibbles are elements 4j..4j+3 and its high nibbles elements 16+4j..16+4j+3. The scales stay fp16 so a decode
/// step reads no more bytes than the file's blocks (18 or 34 per block and row).
/// </para>
/// <para>
/// F16 weights are repacked for decode (<see cref="Velo.Kernels.F16RowGroupKernels"/>) when their rows are whole
/// blocks of <see cref="F16BlockColumns"/> columns: a group is a run of such blocks, each the 16 rows' 8 halves in
/// row order (256 bytes, four lines), so rows 2j and 2j+1 of a block are one 32-byte load that widens to one 512-bit
/// register, and a decode step reads the group as one stream of the file's bytes.
/// </para>
/// </summary>
internal static unsafe class RowGroups
{
    /// <summary>Rows interleaved in one group.</summary>
    public const int Rows = 16;

    /// <summary>Whether weights of <paramref name="type"/> are repacked at load.</summary>
    public static bool Repacks(GgmlType type) => type is GgmlType.Q4_0 or GgmlType.Q8_0;

    /// <summary>Columns of one block of an F16 group: each row's 8 halves are one 8-lane chain of the F16 sums.</summary>
    public const int F16BlockColumns = 8;

    /// <summary>Whether a matrix of <paramref name="type"/> with <paramref name="cols"/> columns can be repacked.</summary>
    public static bool CanRepack(GgmlType type, int cols) => Repacks(type) || type == GgmlType.F16 && cols % F16BlockColumns == 0;

    /// <summary>Bytes of one block's quants of a group: 16 rows of 16 (Q4_0) or 32 (Q8_0) bytes.</summary>
    public static int QuantBytesPerBlock(GgmlType type) => Rows * QuantBytes(type);

    private static int QuantBytes(GgmlType type) => type == GgmlType.Q8_0 ? 32 : 16;

    /// <summary>Bytes of one pair of blocks of a group: both blocks' scales, then their quants.</summary>
    public static int PairBytes(GgmlType type) => 2 * Rows * sizeof(ushort) + 2 * QuantBytesPerBlock(type);

    /// <summary>Bytes of one group of <paramref name="cols"/> columns: its pairs of blocks.</summary>
    public static long GroupBytes(GgmlType type, int cols) =>
        type == GgmlType.F16 ? (long)Rows * cols * sizeof(ushort) : (cols / 32 + 1) / 2 * (long)PairBytes(type);

    public static int GroupCount(int rows) => (rows + Rows - 1) / Rows;

    /// <summary>Bytes of a whole matrix's groups.</summary>
    public static long Bytes(GgmlType type, int rows, int cols)
    {
        if (!CanRepack(type, cols)) throw new ArgumentException($"{type} weights of {cols} columns are not repacked.", nameof(type));
        return SizeMath.Product("bytes of a repacked matrix", GroupCount(rows), GroupBytes(type, cols));
    }

    /// <summary>
    /// Writes groups <paramref name="firstGroup"/>..<paramref name="endGroup"/> − 1 of <paramref name="w"/> (read from
    /// its file blocks) into <paramref name="packed"/>, which holds the whole matrix; rows past the matrix's last are
    /// zero, so their lanes compute nothing that is stored.
    /// </summary>
    public static void Repack(in WeightMatrix w, byte* packed, int firstGroup, int endGroup)
    {
        if (!CanRepack(w.Type, w.Cols)) throw new ArgumentException($"{w.Type} weights of {w.Cols} columns are not repacked.", nameof(w));
        if (w.Type == GgmlType.F16)
        {
            RepackF16(w, packed, firstGroup, endGroup);
            return;
        }
        int blocks = w.Cols / 32, quantBytes = QuantBytes(w.Type), blockBytes = 2 + quantBytes, registers = quantBytes / 4;
        long groupBytes = GroupBytes(w.Type, w.Cols);
        int pairBytes = PairBytes(w.Type), quantBytesPerBlock = QuantBytesPerBlock(w.Type);
        for (int g = firstGroup; g < endGroup; g++)
        {
            byte* group = packed + g * groupBytes;
            new Span<byte>(group, checked((int)groupBytes)).Clear();
            for (int lane = 0; lane < Rows; lane++)
            {
                int r = g * Rows + lane;
                if (r >= w.Rows) break;
                byte* block = w.Row(r);
                for (int b = 0; b < blocks; b++, block += blockBytes)
                {
                    byte* pair = group + (long)(b / 2) * pairBytes;
                    ((ushort*)pair)[b % 2 * Rows + lane] = *(ushort*)block;
                    byte* quants = pair + 2 * Rows * sizeof(ushort) + b % 2 * quantBytesPerBlock;
                    uint* bytes = (uint*)(block + 2);
                    for (int j = 0; j < registers; j++)
                        *(uint*)(quants + j * 64 + lane * 4) = bytes[j];
                }
            }
        }
    }

    private static void RepackF16(in WeightMatrix w, byte* packed, int firstGroup, int endGroup)
    {
        long groupBytes = GroupBytes(GgmlType.F16, w.Cols);
        const int BlockBytes = F16BlockColumns * sizeof(ushort);
        for (int g = firstGroup; g < endGroup; g++)
        {
            byte* group = packed + g * groupBytes;
            for (int lane = 0; lane < Rows; lane++)
            {
                int r = g * Rows + lane;
                byte* target = group + lane * BlockBytes;
                if (r >= w.Rows)
                {
                    for (int c = 0; c < w.Cols; c += F16BlockColumns, target += Rows * BlockBytes)
                        new Span<byte>(target, BlockBytes).Clear();
                    continue;
                }
                byte* row = w.Row(r);
                for (int c = 0; c < w.Cols; c += F16BlockColumns, target += Rows * BlockBytes)
                    Buffer.MemoryCopy(row + c * sizeof(ushort), target, BlockBytes, BlockBytes);
            }
        }
    }
}
