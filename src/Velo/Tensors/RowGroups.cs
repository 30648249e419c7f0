namespace Velo.Tensors;

/// <summary>
/// The interleaved layout that Q4_0 and Q8_0 weights are repacked into at load, so one 64-byte register holds the
/// same four quant bytes of 16 rows (lane r = row r) and an activation's four quants, broadcast, multiply all 16
/// rows at once: each int32 lane then sums one row's block total with no horizontal sums.
/// <para>
/// A matrix is a run of groups of <see cref="Rows"/> rows (the last padded with zero rows). A group holds, for every
/// block b, the 16 rows' fp16 scales (32 bytes; all blocks' scales first, padded to a whole 64-byte line), then each
/// block's quants as 64-byte registers, register j holding bytes 4j..4j+3 of each row's quant bytes: for Q8_0 eight
/// registers, register j elements 4j..4j+3; for Q4_0 four registers of the 16 nibble bytes, so register j's low
/// nibbles are elements 4j..4j+3 and its high nibbles elements 16+4j..16+4j+3. The scales stay fp16 so a decode
/// step reads no more bytes than the file's blocks (18 or 34 per block and row).
/// </para>
/// </summary>
internal static unsafe class RowGroups
{
    /// <summary>Rows interleaved in one group.</summary>
    public const int Rows = 16;

    /// <summary>Whether weights of <paramref name="type"/> are repacked at load.</summary>
    public static bool Repacks(GgmlType type) => type is GgmlType.Q4_0 or GgmlType.Q8_0;

    /// <summary>Bytes of one block's quants of a group: 16 rows of 16 (Q4_0) or 32 (Q8_0) bytes.</summary>
    public static int QuantBytesPerBlock(GgmlType type) => Rows * QuantBytes(type);

    private static int QuantBytes(GgmlType type) => type == GgmlType.Q8_0 ? 32 : 16;

    /// <summary>Bytes of one group's scales: 16 halves per block, padded to whole lines.</summary>
    public static long ScaleBytes(int blocks) => ((long)blocks * Rows * sizeof(ushort) + 63) / 64 * 64;

    /// <summary>Bytes of one group of <paramref name="cols"/> columns: its scales, then its quants.</summary>
    public static long GroupBytes(GgmlType type, int cols)
    {
        int blocks = cols / 32;
        return ScaleBytes(blocks) + (long)blocks * QuantBytesPerBlock(type);
    }

    public static int GroupCount(int rows) => (rows + Rows - 1) / Rows;

    /// <summary>Bytes of a whole matrix's groups.</summary>
    public static long Bytes(GgmlType type, int rows, int cols)
    {
        if (!Repacks(type)) throw new ArgumentException($"{type} weights are not repacked.", nameof(type));
        return SizeMath.Product("bytes of a repacked matrix", GroupCount(rows), GroupBytes(type, cols));
    }

    /// <summary>
    /// Writes groups <paramref name="firstGroup"/>..<paramref name="endGroup"/> − 1 of <paramref name="w"/> (read from
    /// its file blocks) into <paramref name="packed"/>, which holds the whole matrix; rows past the matrix's last are
    /// zero, so their lanes compute nothing that is stored.
    /// </summary>
    public static void Repack(in WeightMatrix w, byte* packed, int firstGroup, int endGroup)
    {
        if (!Repacks(w.Type)) throw new ArgumentException($"{w.Type} weights are not repacked.", nameof(w));
        int blocks = w.Cols / 32, quantBytes = QuantBytes(w.Type), blockBytes = 2 + quantBytes, registers = quantBytes / 4;
        long groupBytes = GroupBytes(w.Type, w.Cols), scaleBytes = ScaleBytes(blocks), quantBytesPerBlock = QuantBytesPerBlock(w.Type);
        for (int g = firstGroup; g < endGroup; g++)
        {
            byte* group = packed + g * groupBytes;
            new Span<byte>(group, checked((int)groupBytes)).Clear();
            ushort* scales = (ushort*)group;
            byte* quants = group + scaleBytes;
            for (int lane = 0; lane < Rows; lane++)
            {
                int r = g * Rows + lane;
                if (r >= w.Rows) break;
                byte* block = w.Row(r);
                for (int b = 0; b < blocks; b++, block += blockBytes)
                {
                    scales[b * Rows + lane] = *(ushort*)block;
                    uint* bytes = (uint*)(block + 2);
                    for (int j = 0; j < registers; j++)
                        *(uint*)(quants + b * quantBytesPerBlock + j * 64 + lane * 4) = bytes[j];
                }
            }
        }
    }
}
