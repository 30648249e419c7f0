using System.Diagnostics;
using System.Text;
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
        Assert.True(meter.TryMeasure(long.MaxValue, out double? none));
        Assert.Null(none);

        var clock = Stopwatch.StartNew();
        double? share = null;
        while (share == null && clock.Elapsed < TimeSpan.FromSeconds(10))
        {
            var busy = Stopwatch.StartNew();
            while (busy.Elapsed < TimeSpan.FromMilliseconds(5)) Thread.SpinWait(100);
            Assert.True(meter.TryMeasure(2_000_000, out share));
        }
        Assert.NotNull(share);
        Assert.InRange(share.Value, 0, 1);
    }

    [Theory]
    [InlineData("1234567 89012 345\n", 1234567, 89012)]
    [InlineData("0 0 0\n", 0, 0)]
    [InlineData("9223372036854775807 1\n", long.MaxValue, 1)]
    public void ParsesTimeOnACoreAndTimeWaitingForOne(string content, long running, long waiting)
    {
        Assert.True(RunQueueMeter.TryParse(Encoding.ASCII.GetBytes(content), out long parsedRunning, out long parsedWaiting));
        Assert.Equal(running, parsedRunning);
        Assert.Equal(waiting, parsedWaiting);
    }

    [Theory]
    [InlineData("")]
    [InlineData("\n")]
    [InlineData("1234567\n")]
    [InlineData("1234567 89012")] // cut short: the second number may be incomplete
    [InlineData(" 1234567 89012 345\n")]
    [InlineData("-1234567 89012 345\n")]
    [InlineData("+1234567 89012 345\n")]
    [InlineData("1234567 -89012 345\n")]
    [InlineData("1234567\t89012 345\n")]
    [InlineData("1234567 8901x 345\n")]
    [InlineData("12.5 89012 345\n")]
    [InlineData("9223372036854775808 1 1\n")] // overflows a long
    [InlineData("not supported\n")]
    public void RejectsMalformedContent(string content) =>
        Assert.False(RunQueueMeter.TryParse(Encoding.ASCII.GetBytes(content), out _, out _));

    [Fact]
    public void AMissingOrMalformedStatisticsFileGivesNoMeter()
    {
        // Without a meter the pool keeps its fixed poll budget.
        string folder = Directory.CreateTempSubdirectory("velo-schedstat").FullName;
        try
        {
            string good = Path.Combine(folder, "good"), bad = Path.Combine(folder, "bad"), empty = Path.Combine(folder, "empty");
            File.WriteAllText(good, "1000 500 3\n");
            File.WriteAllText(bad, "schedstat disabled\n");
            File.WriteAllText(empty, "");

            using (var meter = RunQueueMeter.Open(good))
            {
                Assert.NotNull(meter);
                // The counters have not moved: too little runnable time to judge, but readable.
                Assert.True(meter.TryMeasure(1, out double? share));
                Assert.Null(share);
                File.WriteAllText(good, "3000 2500 4\n");
                Assert.True(meter.TryMeasure(1, out share));
                Assert.Equal(0.5, share);
                File.WriteAllText(good, "garbage\n");
                Assert.False(meter.TryMeasure(1, out _));
                File.WriteAllText(good, "2000 2500 5\n"); // a counter running backwards makes no sense either
                Assert.False(meter.TryMeasure(1, out _));
            }
            Assert.Null(RunQueueMeter.Open(bad));
            Assert.Null(RunQueueMeter.Open(empty));
            Assert.Null(RunQueueMeter.Open(Path.Combine(folder, "missing")));
        }
        finally
        {
            Directory.Delete(folder, recursive: true);
        }
    }
}
