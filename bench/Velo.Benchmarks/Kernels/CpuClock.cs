using System.Runtime.InteropServices;

namespace Velo.Benchmarks.Kernels;

/// <summary>
/// The process's CPU time, in nanoseconds (<c>clock_gettime(CLOCK_PROCESS_CPUTIME_ID)</c>, Linux): on a machine
/// shared with other work, time spent descheduled is not counted, so a kernel's speed per CPU second is steadier than
/// per wall second. Elsewhere 0, and the callers print wall time only.
/// </summary>
internal static partial class CpuClock
{
    private const int ProcessCpuTime = 2;

    public static bool IsSupported => OperatingSystem.IsLinux();

    public static long Nanoseconds()
    {
        if (!IsSupported) return 0;
        _ = ClockGetTime(ProcessCpuTime, out var now);
        return now.Seconds * 1_000_000_000 + now.Nanoseconds;
    }

    [StructLayout(LayoutKind.Sequential)]
    private struct TimeSpec
    {
        public long Seconds;
        public long Nanoseconds;
    }

    [LibraryImport("libc", EntryPoint = "clock_gettime")]
    private static partial int ClockGetTime(int clock, out TimeSpec time);
}
