namespace Velo.Models;

/// <summary>
/// Where the decoders' multiplied matrices are read from. By default those that are not repacked (F32, BF16, the
/// K-quants, and F16 without AVX-512; Q4_0 and Q8_0 are repacked anyway, F16 with AVX-512 into 16-row groups in
/// the same memory, see <see cref="Velo.Kernels.F16RowGroupKernels"/>) are copied at load into memory backed by 2 MiB pages, where a
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
