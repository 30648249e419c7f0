using Velo.Threading;

namespace Velo.Tests.Threading;

public class WaitPointTests
{
    private sealed class Counter
    {
        public long Value;
    }

    /// <summary>Met once the counter has reached <see cref="Target"/>.</summary>
    private readonly struct Reached(Counter counter, long target) : IWaitCondition
    {
        public bool IsMet() => Volatile.Read(ref counter.Value) >= target;
    }

    [Theory]
    [InlineData(0)]        // blocks at once: every hand-over needs a wake-up
    [InlineData(1_000_000)] // polls long enough that most hand-overs need none
    public async Task TwoThreadsHandingATurnBackAndForthNeverMissAWakeUp(long pollTicks)
    {
        // Each thread waits for the other's increment; a lost wake-up would leave both blocked.
        var counter = new Counter();
        var point = new WaitPoint();
        const int turns = 2000;

        void Play(long first)
        {
            for (long turn = first; turn < turns; turn += 2)
            {
                var mine = new Reached(counter, turn);
                point.Wait(ref mine, pollTicks);
                Interlocked.Increment(ref counter.Value);
                point.WakeAll();
            }
        }

        var even = Task.Run(() => Play(0));
        var odd = Task.Run(() => Play(1));
        await Task.WhenAll(even, odd).WaitAsync(TimeSpan.FromSeconds(60));
        Assert.Equal(turns, counter.Value);
    }

    [Fact]
    public void AConditionAlreadyMetReturnsAtOnce()
    {
        var counter = new Counter { Value = 5 };
        var met = new Reached(counter, 5);
        new WaitPoint().Wait(ref met, long.MaxValue / 2);
    }
}
