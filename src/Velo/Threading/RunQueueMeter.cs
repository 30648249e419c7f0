using System.Globalization;
using Microsoft.Win32.SafeHandles;

namespace Velo.Threading;

/// <summary>
/// How much of the time a thread wanted a core it spent waiting for one, from Linux's per-thread scheduler
/// statistics (<c>/proc/thread-self/schedstat</c>: time on a core, time runnable but waiting, in nanoseconds).
/// A thread on a machine with cores to spare waits only for the microseconds a wake-up takes; one on an
/// oversubscribed machine (other processes, or more threads than cores) waits for most of its runnable time.
/// Reading it is one system call into a buffer owned by the meter, allocating nothing.
/// </summary>
internal sealed class RunQueueMeter : IDisposable
{
    private readonly SafeFileHandle _schedstat;
    private readonly byte[] _buffer = new byte[128];
    private long _running;
    private long _waiting;

    private RunQueueMeter(SafeFileHandle schedstat)
    {
        _schedstat = schedstat;
        if (!TryRead(out _running, out _waiting)) throw new IOException("unreadable schedstat");
    }

    /// <summary>A meter of the calling thread, or null where the system does not keep these statistics.</summary>
    public static RunQueueMeter? ForCurrentThread()
    {
        if (!OperatingSystem.IsLinux()) return null;
        SafeFileHandle? handle = null;
        try
        {
            // thread-self resolves when opened, so the handle stays this thread's for good.
            handle = File.OpenHandle("/proc/thread-self/schedstat");
            return new RunQueueMeter(handle);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or NotSupportedException)
        {
            handle?.Dispose();
            return null;
        }
    }

    /// <summary>
    /// The share of the thread's runnable time since the last answer that it spent waiting for a core, or null
    /// while it has been runnable for less than <paramref name="minimumNanoseconds"/> in all (too little to judge:
    /// the time keeps adding up towards the next call).
    /// </summary>
    public double? WaitingShare(long minimumNanoseconds)
    {
        if (!TryRead(out long running, out long waiting)) return null;
        long ran = running - _running, waited = waiting - _waiting;
        if (ran + waited < minimumNanoseconds) return null;
        _running = running;
        _waiting = waiting;
        return (double)waited / (ran + waited);
    }

    private bool TryRead(out long running, out long waiting)
    {
        running = waiting = 0;
        int length;
        try
        {
            length = RandomAccess.Read(_schedstat, _buffer, 0);
        }
        catch (IOException)
        {
            return false;
        }
        var fields = _buffer.AsSpan(0, length);
        return TryTakeNumber(ref fields, out running) && TryTakeNumber(ref fields, out waiting);
    }

    private static bool TryTakeNumber(ref Span<byte> text, out long value)
    {
        int start = 0;
        while (start < text.Length && text[start] == (byte)' ') start++;
        int end = start;
        while (end < text.Length && text[end] is >= (byte)'0' and <= (byte)'9') end++;
        bool parsed = long.TryParse(text[start..end], NumberStyles.None, CultureInfo.InvariantCulture, out value);
        text = text[end..];
        return parsed;
    }

    public void Dispose() => _schedstat.Dispose();
}
