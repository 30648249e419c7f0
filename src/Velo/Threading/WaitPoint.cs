using System.Diagnostics;

namespace Velo.Threading;

/// <summary>A condition that a thread waits for at a <see cref="WaitPoint"/>; another thread makes it true.</summary>
internal interface IWaitCondition
{
    bool IsMet();
}

/// <summary>
/// Where threads wait for a condition that another thread makes true: each polls for up to a given time, then
/// blocks until that thread calls <see cref="WakeAll"/>. Polling answers within tens of nanoseconds where waking a
/// blocked thread costs tens of microseconds; blocking gives the core back. <see cref="Wait{TCondition}"/> is
/// generic over a struct condition so that the poll loop is compiled for each condition with its check inlined.
/// </summary>
internal sealed class WaitPoint
{
    /// <summary>Polls between two looks at the clock: one poll with <c>SpinWait(1)</c> takes ~40 ns.</summary>
    private const int PollsPerClockCheck = 64;

    private readonly object _gate = new();
    private int _sleepers;

    /// <summary>
    /// Returns once <paramref name="condition"/> is met: polls it for up to <paramref name="pollTicks"/>
    /// (<see cref="Stopwatch"/> ticks; at least one round of polls however small), then blocks.
    /// </summary>
    public void Wait<TCondition>(ref TCondition condition, long pollTicks) where TCondition : struct, IWaitCondition
    {
        if (condition.IsMet()) return;
        long deadline = Stopwatch.GetTimestamp() + pollTicks;
        while (true)
        {
            for (int i = 0; i < PollsPerClockCheck; i++)
            {
                if (condition.IsMet()) return;
                Thread.SpinWait(1);
            }
            if (Stopwatch.GetTimestamp() > deadline) break;
        }

        lock (_gate)
        {
            // Announcing the sleep (a full fence) before the last check pairs with WakeAll, which looks for sleepers
            // after the condition was made true by an interlocked write: one of the two always sees the other, so
            // no wake-up is lost.
            Interlocked.Increment(ref _sleepers);
            while (!condition.IsMet())
                Monitor.Wait(_gate);
            Interlocked.Decrement(ref _sleepers);
        }
    }

    /// <summary>Wakes every blocked waiter; call it after making the condition true with an interlocked write.</summary>
    public void WakeAll()
    {
        if (Volatile.Read(ref _sleepers) > 0)
            lock (_gate) Monitor.PulseAll(_gate);
    }
}
