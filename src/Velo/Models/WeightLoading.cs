namespace Velo.Models;

/// <summary>
/// Where the decoders' multiplied matrices are read from. By default those that are not repacked (F32, F16, BF16 and
/// the K-quants; Q4_0 and Q8_0 are repacked anyway) are copied at load into memory backed by 2 MiB pages, where a
/// decode step streams them faster than from the memory-mapped file's 4 KiB pages; the load then takes the time of
/// reading them once, and the process holds them as its own memory rather than as the file's cached pages (about the
/// same resident size). Token-embedding tables that are only looked up stay in the file either way.
/// </summary>
public static class WeightLoading
{
    /// <summary>
    /// Whether models loaded from now on read those matrices in the mapped file instead (<c>velo --mmap</c>): a faster
    /// load, pages shared with other processes mapping the same file, slower decoding.
    /// </summary>
    public static bool ReadMappedFile { get; set; }

    /// <summary>Whether a decoder's binder copies its multiplied matrices (<see cref="ReadMappedFile"/> is off).</summary>
    internal static bool CopiesMatrices => !ReadMappedFile;
}
