using System.Buffers.Text;
using Microsoft.Win32.SafeHandles;

namespace Velo.Threading;

/// <summary>
/// How much of the time a thread wanted a core it spent waiting for one, from Linux's per-thread scheduler
/// statistics (<c>/proc/thread-self/schedstat</c>: time on a core, time runnable but waiting, in nanoseconds, and
/// the number of time slices). A thread on a machine with cores to spare waits only for the microseconds a wake-up
/// takes; one on an oversubscribed machine (other processes, or more threads than cores) waits for most of its
/// runnable time. Reading it is one system call into a stack buffer, allocating nothing.
/// </summary>
internal sealed class RunQueueMeter : IDisposable
{
    private const string ThreadStatisticsPath = "/proc/thread-self/schedstat";

    /// <summary>Room for the three fields of up to 20 digits each, their separators and more than that.</summary>
    private const int MaxContentBytes = 128;

    private readonly SafeFileHandle _schedstat;
    private long _running;
    private long _waiting;

    private RunQueueMeter(SafeFileHandle schedstat, long running, long waiting)
    {
        _schedstat = schedstat;
        _running = running;
        _waiting = waiting;
    }

    /// <summary>
    /// A meter of the calling thread, or null where the system does not keep these statistics or they do not read
    /// as expected (not Linux, a kernel without schedstats, a container that hides <c>/proc</c>).
    /// </summary>
    public static RunQueueMeter? ForCurrentThread() =>
        // thread-self resolves when opened, so the handle stays this thread's for good.
        OperatingSystem.IsLinux() ? Open(ThreadStatisticsPath) : null;

    /// <summary>A meter reading the statistics at <paramref name="path"/>, or null where they are missing or malformed.</summary>
    internal static RunQueueMeter? Open(string path)
    {
        SafeFileHandle handle;
        try
        {
            handle = File.OpenHandle(path);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or NotSupportedException)
        {
            return null;
        }
        if (!TryRead(handle, out long running, out long waiting))
        {
            handle.Dispose();
            return null;
        }
        return new RunQueueMeter(handle, running, waiting);
    }

    /// <summary>
    /// The share of the thread's runnable time since the last answer that it spent waiting for a core, in
    /// <paramref name="waitingShare"/>; null there while it has been runnable for less than
    /// <paramref name="minimumNanoseconds"/> in all (too little to judge: the time keeps adding up towards the next
    /// call). False once the statistics can no longer be read or make no sense (a counter ran backwards): the meter
    /// is then of no further use.
    /// </summary>
    public bool TryMeasure(long minimumNanoseconds, out double? waitingShare)
    {
        waitingShare = null;
        if (!TryRead(_schedstat, out long running, out long waiting)) return false;
        long ran = running - _running, waited = waiting - _waiting;
        if (ran < 0 || waited < 0) return false;
        if (ran + waited < minimumNanoseconds) return true;
        _running = running;
        _waiting = waiting;
        waitingShare = (double)waited / (ran + waited);
        return true;
    }

    private static bool TryRead(SafeFileHandle schedstat, out long running, out long waiting)
    {
        Span<byte> content = stackalloc byte[MaxContentBytes];
        int length;
        try
        {
            length = RandomAccess.Read(schedstat, content, 0);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or NotSupportedException)
        {
            running = waiting = 0;
            return false;
        }
        return TryParse(content[..length], out running, out waiting);
    }

    /// <summary>
    /// The first two fields of schedstat's content: two non-negative decimal numbers, each followed by a space or a
    /// line break. Anything else (empty, signs, other separators, a number cut short) is malformed.
    /// </summary>
    internal static bool TryParse(ReadOnlySpan<byte> content, out long running, out long waiting)
    {
        waiting = 0;
        return TryTakeField(ref content, out running) && TryTakeField(ref content, out waiting);
    }

    private static bool TryTakeField(ref ReadOnlySpan<byte> content, out long value)
    {
        // Utf8Parser takes a leading sign, which schedstat never writes: only a digit may start a field.
        if (content.IsEmpty || !char.IsAsciiDigit((char)content[0])
            || !Utf8Parser.TryParse(content, out value, out int digits)
            || digits >= content.Length || content[digits] is not ((byte)' ' or (byte)'\n'))
        {
            value = 0;
            return false;
        }
        content = content[(digits + 1)..];
        return true;
    }

    public void Dispose() => _schedstat.Dispose();
}
