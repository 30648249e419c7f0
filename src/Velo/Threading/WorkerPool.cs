using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Runtime.ExceptionServices;
using Velo.Tensors;

namespace Velo.Threading;

/// <summary>A unit of parallel work: every thread of the pool calls <see cref="Execute"/> once per dispatch.</summary>
public interface IParallelJob
{
    /// <param name="threadIndex">0 for the calling thread, 1..threadCount-1 for the workers.</param>
    void Execute(int threadIndex, int threadCount);
}

/// <summary>
/// Long-lived worker threads that run one job at a time together with the calling thread (worker 0), which
/// returns only when every thread has finished: each <see cref="Run{TJob}"/> is also a barrier. Dispatching
/// allocates nothing and creates no threads. One dispatch at a time: a pool is not for concurrent callers.
/// <para>
/// Once the caller has done its own share it takes over the share of every worker that has not started yet
/// (blocked, or descheduled on a machine shared with other processes) instead of waiting for it to wake: a
/// dispatch never stalls on a sleeping thread. Jobs that hand out work dynamically find nothing left for those
/// shares; jobs that split work by thread index get it done by the caller.
/// </para>
/// <para>
/// Every wait, a worker's for the next job and the caller's for the workers still running, polls for up to 200 µs
/// and then blocks (a <see cref="WaitPoint"/>): the forward pass dispatches thousands of small jobs per second and
/// waking a blocked thread costs tens of microseconds. But a thread that polls on a core it shares with others
/// spends the process's share of the machine on nothing and keeps that core from the thread it waits for (decode
/// on 2 cores at a load average of ~18 ran 28 % faster without polling, 18 % slower on a quiet machine). So where
/// the workers find that they wait for a core for much of the time they want one (<see cref="RunQueueMeter"/>, on
/// Linux), every wait polls only a few microseconds before blocking, until cores are free again.
/// </para>
/// <para>
/// The caller's wait follows the same budget as the workers'. On a busy machine the caller does most of the work
/// (the workers wake too late for most of the dynamically handed-out chunks) and is runnable throughout a decode,
/// on a core or waiting for one: it starves for cores, not because it blocks too soon. Letting it alone poll the full
/// 200 µs made 2-thread decode about 10 % slower beside other processes; letting the workers poll the full budget
/// made it slower still (0.2-1.0 times as fast, round by round).
/// </para>
/// </summary>
public sealed unsafe class WorkerPool : IDisposable
{
    private readonly Thread[] _workers;

    /// <summary>Per thread index, the last generation whose share someone (the worker or the caller) has taken.</summary>
    private readonly long[] _claimed;
    /// <summary>Where idle workers wait for the next job.</summary>
    private readonly WaitPoint _nextJob = new();
    /// <summary>Where the caller waits until the last running worker finishes.</summary>
    private readonly WaitPoint _workersDone = new();
    private NativeBuffer? _sharedScratch;

    private void* _job;
    private delegate*<void*, int, int, void> _invoke;
    private long _generation;
    private int _pending;
    /// <summary>Set while the threads wait for a core for much of the time they want one: waits then barely poll.</summary>
    private volatile bool _oversubscribed;
    private int _busy;
    private volatile bool _disposed;
    private Exception? _failure;

    public WorkerPool(int threads)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(threads, 1);
        ThreadCount = threads;
        _claimed = new long[threads];
        _workers = new Thread[threads - 1];
        for (int i = 0; i < _workers.Length; i++)
        {
            int index = i + 1;
            _workers[i] = new Thread(() => WorkerLoop(index)) { IsBackground = true, Name = $"Velo worker {index}" };
            _workers[i].Start();
        }
    }

    public int ThreadCount { get; }

    /// <summary>
    /// Runs <paramref name="job"/> on every thread and returns when all have finished. The job is shared by
    /// reference, so its fields are the place for shared counters, and changes made by the threads are visible
    /// in <paramref name="job"/> afterwards. An exception thrown by any thread is rethrown here once all threads
    /// are done.
    /// </summary>
    public void Run<TJob>(ref TJob job) where TJob : struct, IParallelJob
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (Interlocked.Exchange(ref _busy, 1) != 0)
            throw new InvalidOperationException("WorkerPool.Run was called while another dispatch was running.");
        try
        {
            if (_workers.Length == 0)
            {
                job.Execute(0, 1);
                return;
            }

            // The workers reach the job through a pointer, so it must sit still: a stack copy does, whereas the
            // caller's ref may point into a movable heap object.
            TJob shared = job;
            _job = Unsafe.AsPointer(ref shared);
            _invoke = &Invoke<TJob>;
            _failure = null;
            Volatile.Write(ref _pending, _workers.Length);
            long generation = Interlocked.Increment(ref _generation);
            _nextJob.WakeAll();

            Execute(ref shared, 0);
            for (int index = 1; index < ThreadCount; index++)
                if (TryClaim(index, generation))
                {
                    Execute(ref shared, index);
                    Interlocked.Decrement(ref _pending);
                }
            var workersDone = new WorkersDone(this);
            _workersDone.Wait(ref workersDone, PollTicks);
            _job = null;
            job = shared;
            if (_failure is { } failure)
            {
                _failure = null;
                ExceptionDispatchInfo.Throw(failure);
            }
        }
        finally
        {
            Volatile.Write(ref _busy, 0);
        }
    }

    /// <summary>
    /// A 64-byte aligned buffer of at least <paramref name="bytes"/> bytes owned by the pool, for data the caller
    /// prepares for a dispatch. Grown (contents lost) only when too small; valid until the next call.
    /// </summary>
    public byte* SharedScratch(long bytes)
    {
        if (_sharedScratch == null || _sharedScratch.Length < bytes)
        {
            _sharedScratch?.Dispose();
            _sharedScratch = null;
            _sharedScratch = new NativeBuffer(Math.Max(bytes, 4096));
        }
        return (byte*)_sharedScratch.Pointer;
    }

    private void Execute<TJob>(ref TJob job, int threadIndex) where TJob : struct, IParallelJob
    {
        try
        {
            job.Execute(threadIndex, ThreadCount);
        }
        catch (Exception e)
        {
            Interlocked.CompareExchange(ref _failure, e, null);
        }
    }

    /// <summary>
    /// Takes the share of thread <paramref name="index"/> in <paramref name="generation"/>, for the worker or for
    /// the caller, whichever comes first. Every share is taken before the next generation starts, so the previous
    /// generation is always what a free share holds.
    /// </summary>
    private bool TryClaim(int index, long generation) =>
        Interlocked.CompareExchange(ref _claimed[index], generation, generation - 1) == generation - 1;

    private static void Invoke<TJob>(void* job, int threadIndex, int threadCount) where TJob : struct, IParallelJob =>
        Unsafe.AsRef<TJob>(job).Execute(threadIndex, threadCount);

    /// <summary>How long a wait polls before it blocks: 200 µs, or none but the first few polls on an oversubscribed machine.</summary>
    private long PollTicks => _oversubscribed ? 0 : MaxPollTicks;

    private static readonly long MaxPollTicks = Stopwatch.Frequency / 5000; // 200 µs

    /// <summary>How often the first worker looks at how long it waits for a core.</summary>
    private static readonly long MeasureEveryTicks = Stopwatch.Frequency / 100; // 10 ms

    /// <summary>Runnable time, in ns, below which a measurement says too little (it carries over to the next).</summary>
    private const long MinimumRunnableNanoseconds = 2_000_000;

    /// <summary>
    /// Oversubscribed from this share of runnable time spent waiting for a core, quiet again below the lower one.
    /// A worker waits about 10 % of it for wake-ups alone when it blocks after every job on a quiet machine, up to
    /// 30-50 % at times beside a few lightly weighted processes, and 50-90 % most of the time beside other
    /// processes at a load average of 5-10 per core.
    /// </summary>
    private const double OversubscribedShare = 0.5, QuietShare = 0.25;

    private void WorkerLoop(int index)
    {
        // One worker's view of the machine stands for the pool's: every thread of it competes for the same cores.
        // Without one (no statistics, or they stop reading) every wait keeps the full poll budget.
        using var meter = index == 1 ? RunQueueMeter.ForCurrentThread() : null;
        bool measuring = meter != null;
        long nextMeasurement = 0;
        long seen = 0;
        while (true)
        {
            if (measuring && Stopwatch.GetTimestamp() >= nextMeasurement)
            {
                measuring = Measure(meter!);
                nextMeasurement = Stopwatch.GetTimestamp() + MeasureEveryTicks;
            }
            var nextJob = new NextGeneration(this, seen);
            _nextJob.Wait(ref nextJob, PollTicks);
            if (_disposed) return;
            seen = nextJob.Generation;
            if (!TryClaim(index, seen)) continue; // the caller ran this share already
            try
            {
                _invoke(_job, index, ThreadCount);
            }
            catch (Exception e)
            {
                Interlocked.CompareExchange(ref _failure, e, null);
            }
            if (Interlocked.Decrement(ref _pending) == 0)
                _workersDone.WakeAll();
        }
    }

    /// <summary>Updates <see cref="_oversubscribed"/>; false, and quiet for good, once the meter cannot be read.</summary>
    private bool Measure(RunQueueMeter meter)
    {
        if (!meter.TryMeasure(MinimumRunnableNanoseconds, out double? waitingShare))
        {
            _oversubscribed = false;
            return false;
        }
        if (waitingShare >= OversubscribedShare) _oversubscribed = true;
        else if (waitingShare < QuietShare) _oversubscribed = false;
        return true;
    }

    /// <summary>A worker's: a dispatch after the one it saw last (or disposal), whose number it keeps.</summary>
    private struct NextGeneration(WorkerPool pool, long seen) : IWaitCondition
    {
        public long Generation;

        public bool IsMet() => (Generation = Volatile.Read(ref pool._generation)) != seen;
    }

    /// <summary>The caller's: every worker that took its share has finished it.</summary>
    private readonly struct WorkersDone(WorkerPool pool) : IWaitCondition
    {
        public bool IsMet() => Volatile.Read(ref pool._pending) == 0;
    }

    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        Interlocked.Increment(ref _generation);
        _nextJob.WakeAll();
        foreach (var worker in _workers) worker.Join();
        _sharedScratch?.Dispose();
    }
}
