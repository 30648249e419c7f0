namespace Velo.Tests;

/// <summary>Checks that a hot path allocates nothing once warmed up.</summary>
internal static class AllocationCheck
{
    /// <summary>
    /// Passes when one of <paramref name="windows"/> windows of <paramref name="stepsPerWindow"/> calls of
    /// <paramref name="step"/> allocates nothing on this thread. A step that allocates would do so in every window;
    /// the runtime may still build something once, late (CI saw 5 KB in one window of a decode loop while the whole
    /// suite loaded the machine, never reproduced alone), which a single fixed window would report as the step's.
    /// </summary>
    public static void SomeWindowAllocatesNothing(Action step, int stepsPerWindow, int windows = 4)
    {
        var allocated = new long[windows];
        for (int window = 0; window < windows; window++)
        {
            long before = GC.GetAllocatedBytesForCurrentThread();
            for (int i = 0; i < stepsPerWindow; i++) step();
            allocated[window] = GC.GetAllocatedBytesForCurrentThread() - before;
            if (allocated[window] == 0) return;
        }
        Assert.Fail($"every window of {stepsPerWindow} steps allocated: {string.Join(", ", allocated)} bytes");
    }
}
