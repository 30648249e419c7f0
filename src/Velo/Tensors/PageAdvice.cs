using System.Runtime.InteropServices;

namespace Velo.Tensors;

/// <summary>
/// Advice to Linux about how memory will be used (<c>madvise</c>). Advice only: where it is not taken, or on other
/// systems, nothing changes but residency and page-fault counts.
/// </summary>
internal static unsafe partial class PageAdvice
{
    public const int HugePageBytes = 2 << 20;
    private const int PageBytes = 4096;
    private const int DontNeed = 4;
    private const int HugePage = 14;

    /// <summary>Asks for 2 MiB pages behind a buffer aligned to <see cref="HugePageBytes"/>.</summary>
    public static void UseHugePages(void* start, nuint bytes)
    {
        if (OperatingSystem.IsLinux()) _ = Madvise(start, bytes, HugePage);
    }

    /// <summary>
    /// Drops the whole pages inside a read-only file mapping's range from this process's resident memory: a later
    /// read maps them again from the file.
    /// </summary>
    public static void Release(byte* start, long bytes)
    {
        if (!OperatingSystem.IsLinux()) return;
        long first = ((long)start + PageBytes - 1) / PageBytes * PageBytes, end = ((long)start + bytes) / PageBytes * PageBytes;
        if (end > first) _ = Madvise((void*)first, (nuint)(end - first), DontNeed);
    }

    [LibraryImport("libc", EntryPoint = "madvise")]
    private static partial int Madvise(void* address, nuint length, int advice);
}
