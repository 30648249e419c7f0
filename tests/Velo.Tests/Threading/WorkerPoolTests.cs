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
        int runs = 1;
        AllocationCheck.SomeWindowAllocatesNothing(() => { pool.Run(ref job); runs++; }, stepsPerWindow: 500);
        Assert.Equal(3 * runs, job.Calls);
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

    /// <summary>Work items handed out first come first served, as the kernels hand out rows: each adds its own value once.</summary>
    private unsafe struct ItemsJob : IParallelJob
    {
        public int* RunsPerItem;
        public long* Values;
        public int Items;
        public int Next;

        public void Execute(int threadIndex, int threadCount)
        {
            for (int item; (item = Interlocked.Increment(ref Next) - 1) < Items;)
            {
                Interlocked.Increment(ref RunsPerItem[item]);
                long v = item;
                for (int k = 0; k < 50; k++) v = v * 6364136223846793005L + 1442695040888963407L;
                Values[item] = v;
            }
        }
    }

    private static unsafe long[] RunItems(WorkerPool pool, int items, int rounds)
    {
        var values = new long[items];
        var runs = new int[items];
        fixed (long* v = values)
        fixed (int* r = runs)
            for (int round = 0; round < rounds; round++)
            {
                Array.Clear(runs);
                var job = new ItemsJob { RunsPerItem = r, Values = v, Items = items };
                pool.Run(ref job);
                Assert.All(runs, count => Assert.Equal(1, count));
            }
        return values;
    }

    [Fact]
    public async Task EveryWorkItemRunsOnceAndResultsDoNotDependOnTheThreadCount()
    {
        // 16 threads on a 2-core machine: more threads than cores must neither deadlock nor lose an item.
        long[]? expected = null;
        foreach (int threads in new[] { 1, 2, 3, 16 })
        {
            using var pool = new WorkerPool(threads);
            // A deadlock fails the test (TimeoutException) instead of hanging it.
            long[] values = await Task.Run(() => RunItems(pool, items: 97, rounds: 300)).WaitAsync(TimeSpan.FromSeconds(60));
            expected ??= values;
            Assert.Equal(expected, values);
        }
    }

    /// <summary>Thread 1 takes long enough that the caller's poll runs out and it blocks until the worker is done.</summary>
    private unsafe struct SlowWorkerJob : IParallelJob
    {
        public int* Written;
        public bool Throw;

        public void Execute(int threadIndex, int threadCount)
        {
            if (threadIndex != 1) return;
            Thread.Sleep(3);
            if (Throw) throw new InvalidDataException("slow worker failed");
            Volatile.Write(ref *Written, 1);
        }
    }

    [Fact]
    public async Task CallerThatBlocksIsWokenByTheLastWorkerAndSeesItsWrites()
    {
        using var pool = new WorkerPool(2);
        await Task.Run(() => RunSlowWorkerRounds(pool)).WaitAsync(TimeSpan.FromSeconds(60));
    }

    private static unsafe void RunSlowWorkerRounds(WorkerPool pool)
    {
        int written = 0;
        for (int round = 0; round < 40; round++)
        {
            written = 0;
            var job = new SlowWorkerJob { Written = &written };
            pool.Run(ref job);
            // Thread 1's share ran on the worker or, had it not started, on the caller: written either way.
            Assert.Equal(1, written);

            var failing = new SlowWorkerJob { Written = &written, Throw = true };
            Assert.Throws<InvalidDataException>(() => pool.Run(ref failing));
        }
    }
}
