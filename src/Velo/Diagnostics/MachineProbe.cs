using System.Diagnostics;
using System.Runtime.Intrinsics;
using Velo.Tensors;
using Velo.Threading;

namespace Velo.Diagnostics;

/// <summary>
/// Measures the machine's limits in the same run as a benchmark, since shared machines drift: memory read
/// bandwidth (every thread sums its slice of an array far larger than the caches) and fp32 FMA throughput.
/// </summary>
public static unsafe class MachineProbe
{
    /// <summary>
    /// The major page faults of this process so far (pages read from disk, a memory-mapped model's weights among
    /// them, when the page cache could not keep them), from /proc/self/stat; null where that does not exist.
    /// </summary>
    public static long? MajorPageFaults()
    {
        if (!OperatingSystem.IsLinux()) return null;
        try
        {
            string stat = File.ReadAllText("/proc/self/stat");
            // The command name, in parentheses, may hold spaces; majflt is the 10th field after it.
            var fields = stat[(stat.LastIndexOf(')') + 2)..].Split(' ');
            return long.Parse(fields[9], System.Globalization.CultureInfo.InvariantCulture);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or FormatException or IndexOutOfRangeException)
        {
            return null;
        }
    }

    /// <summary>Best of <paramref name="repetitions"/> read passes over <paramref name="bytes"/> bytes of memory backed by huge pages, in bytes per second.</summary>
    public static double ReadBandwidth(WorkerPool pool, long bytes = 1L << 30, int repetitions = 3)
    {
        // Zeroed, so every page is really mapped before timing; in 2 MiB pages, as decoders hold the weights they
        // multiply (copied or repacked at load), so that a decode's share of this figure compares like with like.
        using var buffer = new NativeBuffer(bytes, zero: true, hugePages: true);
        var job = new SumJob { Data = (float*)buffer.Pointer, Count = bytes / sizeof(float) };
        pool.Run(ref job); // warm
        double best = 0;
        for (int r = 0; r < repetitions; r++)
        {
            long start = Stopwatch.GetTimestamp();
            pool.Run(ref job);
            best = Math.Max(best, bytes / Stopwatch.GetElapsedTime(start).TotalSeconds);
        }
        return best;
    }

    /// <summary>Peak fp32 FLOP/s with fused multiply-adds on 256-bit vectors.</summary>
    public static double FmaPeak(WorkerPool pool, long iterations = 20_000_000)
    {
        var job = new FmaJob { Iterations = iterations };
        pool.Run(ref job);
        long start = Stopwatch.GetTimestamp();
        pool.Run(ref job);
        double seconds = Stopwatch.GetElapsedTime(start).TotalSeconds;
        // 10 accumulators × 8 lanes × 2 FLOPs per FMA, per iteration, per thread.
        return iterations * 10.0 * Vector256<float>.Count * 2 * pool.ThreadCount / seconds;
    }

    private struct SumJob : IParallelJob
    {
        public float* Data;
        public long Count;
        public float Sink;

        public void Execute(int threadIndex, int threadCount)
        {
            long per = Count / threadCount / 32 * 32;
            float* p = Data + per * threadIndex;
            var a0 = Vector256<float>.Zero;
            var a1 = Vector256<float>.Zero;
            var a2 = Vector256<float>.Zero;
            var a3 = Vector256<float>.Zero;
            for (long i = 0; i < per; i += 32)
            {
                a0 += Vector256.Load(p + i);
                a1 += Vector256.Load(p + i + 8);
                a2 += Vector256.Load(p + i + 16);
                a3 += Vector256.Load(p + i + 24);
            }
            float sum = Vector256.Sum(a0 + a1 + a2 + a3);
            if (sum == 1234.5f) Sink = sum; // keep the loads alive
        }
    }

    private struct FmaJob : IParallelJob
    {
        public long Iterations;
        public float Sink;

        public void Execute(int threadIndex, int threadCount)
        {
            var m = Vector256.Create(0.9999f);
            var c = Vector256.Create(1e-7f);
            Vector256<float> a0 = Vector256.Create(1f), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0, a8 = a0, a9 = a0;
            for (long i = 0; i < Iterations; i++)
            {
                a0 = Vector256.FusedMultiplyAdd(a0, m, c);
                a1 = Vector256.FusedMultiplyAdd(a1, m, c);
                a2 = Vector256.FusedMultiplyAdd(a2, m, c);
                a3 = Vector256.FusedMultiplyAdd(a3, m, c);
                a4 = Vector256.FusedMultiplyAdd(a4, m, c);
                a5 = Vector256.FusedMultiplyAdd(a5, m, c);
                a6 = Vector256.FusedMultiplyAdd(a6, m, c);
                a7 = Vector256.FusedMultiplyAdd(a7, m, c);
                a8 = Vector256.FusedMultiplyAdd(a8, m, c);
                a9 = Vector256.FusedMultiplyAdd(a9, m, c);
            }
            float sum = Vector256.Sum(a0 + a1 + a2 + a3 + a4 + a5 + a6 + a7 + a8 + a9);
            if (sum == 1234.5f) Sink = sum;
        }
    }
}
