using System.Diagnostics;
using Velo.Threading;

namespace Velo.Tests.Threading;

public class RunQueueMeterTests
{
    [Fact]
    public void OnLinuxTheShareOfRunnableTimeSpentWaitingIsAFraction()
    {
        using var meter = RunQueueMeter.ForCurrentThread();
        if (!OperatingSystem.IsLinux())
        {
            Assert.Null(meter);
            return;
        }
        Assert.NotNull(meter);
        // Too little runnable time yet to judge: nothing, and the time carries over.
        Assert.Null(meter.WaitingShare(long.MaxValue));

        var clock = Stopwatch.StartNew();
        double? share = null;
        while (share == null && clock.Elapsed < TimeSpan.FromSeconds(10))
        {
            var busy = Stopwatch.StartNew();
            while (busy.Elapsed < TimeSpan.FromMilliseconds(5)) Thread.SpinWait(100);
            share = meter.WaitingShare(2_000_000);
        }
        Assert.NotNull(share);
        Assert.InRange(share.Value, 0, 1);
    }
}
