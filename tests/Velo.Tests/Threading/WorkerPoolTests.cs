using Velo.Threading;

namespace Velo.Tests.Threading;

public class WorkerPoolTests
{
    private unsafe struct FillJob : IParallelJob
    {
        public int* Output;
        public int Length;
        public int Calls;

        public void Execute(int threadIndex, int threadCount)
        {
            Interlocked.Increment(ref Calls);
            int chunk = (Length + threadCount - 1) / threadCount;
            int end = Math.Min(Length, (threadIndex + 1) * chunk);
            for (int i = threadIndex * chunk; i < end; i++)
                Output[i] = i * 3 + 1;
        }
    }

    private struct ThrowingJob : IParallelJob
    {
        public int FailingThread;

        public void Execute(int threadIndex, int threadCount)
        {
            if (threadIndex == FailingThread) throw new InvalidDataException("job failed on thread " + threadIndex);
        }
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(4)]
    public unsafe void EveryThreadRunsOncePerDispatchAndResultsAreComplete(int threads)
    {
        using var pool = new WorkerPool(threads);
        int[] output = new int[1001];
        fixed (int* p = output)
        {
            for (int round = 0; round < 200; round++)
            {
                Array.Clear(output);
                var job = new FillJob { Output = p, Length = output.Length };
                pool.Run(ref job);
                Assert.Equal(threads, job.Calls);
                for (int i = 0; i < output.Length; i++)
                    Assert.Equal(i * 3 + 1, output[i]);
            }
        }
    }

    [Fact]
    public unsafe void DispatchDoesNotAllocate()
    {
        using var pool = new WorkerPool(3);
        int* buffer = stackalloc int[64];
        var job = new FillJob { Output = buffer, Length = 64 };
        pool.Run(ref job);
        long before = GC.GetAllocatedBytesForCurrentThread();
        for (int i = 0; i < 1000; i++)
            pool.Run(ref job);
        Assert.Equal(before, GC.GetAllocatedBytesForCurrentThread());
        Assert.Equal(3 * 1001, job.Calls);
    }

    [Theory]
    [InlineData(0)]
    [InlineData(1)]
    [InlineData(2)]
    public void ExceptionInAnyThreadSurfacesOnTheCallerAndThePoolStaysUsable(int failingThread)
    {
        using var pool = new WorkerPool(3);
        var failing = new ThrowingJob { FailingThread = failingThread };
        var error = Assert.Throws<InvalidDataException>(() => pool.Run(ref failing));
        Assert.Contains("thread " + failingThread, error.Message);

        var fine = new ThrowingJob { FailingThread = -1 };
        pool.Run(ref fine);
    }

    private unsafe struct CountSharesJob : IParallelJob
    {
        public int* RunsPerIndex;

        public void Execute(int threadIndex, int threadCount) => Interlocked.Increment(ref RunsPerIndex[threadIndex]);
    }

    [Fact]
    public unsafe void EveryShareRunsExactlyOnceWhetherWorkersAreAwakeOrAsleep()
    {
        // Asleep, a worker's share is usually taken over by the caller; spinning, usually by the worker. Either
        // way each index must run once per dispatch.
        using var pool = new WorkerPool(4);
        int* runs = stackalloc int[4];
        for (int round = 0; round < 60; round++)
        {
            if (round % 20 == 0) Thread.Sleep(30); // past the spin period: the workers block
            for (int i = 0; i < 4; i++) runs[i] = 0;
            var job = new CountSharesJob { RunsPerIndex = runs };
            pool.Run(ref job);
            for (int i = 0; i < 4; i++)
                Assert.Equal(1, runs[i]);
        }
    }
}
