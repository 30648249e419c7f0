using System.Diagnostics;
using System.Globalization;
using Velo.Kernels;
using Velo.Tensors;
using Velo.Threading;

namespace Velo.Benchmarks.Encoders;

/// <summary>
/// all-MiniLM-L6-v2's matrix shapes (384 → 384, 384 → 1536, 1536 → 384) times a batch of encoder tokens: Q8_0 weights
/// through the integer row-group kernels (<see cref="MatMul"/>) against the same weights widened into
/// <see cref="PackedFloatGemm"/>'s F32 panels, alternating, in GMAC/s per thread (medians).
/// </summary>
internal static unsafe class EncoderGemmBench
{
    public static int Run(string[] args)
    {
        int threads = Option(args, "--threads", 1), rounds = Option(args, "--rounds", 7), tokens = Option(args, "--tokens", 4096);
        bool cpuTime = args.Contains("--cpu-time"), best = args.Contains("--best");
        Func<List<double>, double> summary = best ? values => values.Max() : Median;
        using var pool = new WorkerPool(threads);
        var random = new Random(1);
        Console.WriteLine($"load average before: {File.ReadAllText("/proc/loadavg").Trim()}");
        Console.WriteLine($"{threads} threads, {tokens} tokens, {rounds} rounds; GMAC/s per thread ({(best ? "best round" : "median")}{(cpuTime ? ", of the process's CPU time" : "")})");
        foreach (var (rows, cols) in new[] { (384, 384), (1536, 384), (384, 1536) })
        {
            long rowBytes = GgmlTypeInfo.RowBytes(GgmlType.Q8_0, cols);
            using var weights = new NativeBuffer(rowBytes * rows);
            var row = new float[cols];
            for (int r = 0; r < rows; r++)
            {
                for (int c = 0; c < cols; c++) row[c] = (float)(random.NextDouble() * 0.1 - 0.05);
                Quantize.Row(GgmlType.Q8_0, row, new Span<byte>((byte*)weights.Pointer + r * rowBytes, (int)rowBytes));
            }
            var file = new WeightMatrix((byte*)weights.Pointer, GgmlType.Q8_0, rows, cols);
            using var groups = new NativeBuffer(RowGroups.Bytes(GgmlType.Q8_0, rows, cols));
            RowGroups.Repack(file, (byte*)groups.Pointer, 0, RowGroups.GroupCount(rows));
            var grouped = file.WithPacked((byte*)groups.Pointer);
            using var panels = new PackedFloatMatrix(file);
            using var x = new NativeBuffer((long)tokens * cols * sizeof(float));
            for (long i = 0; i < (long)tokens * cols; i++) x.Floats[i] = (float)(random.NextDouble() * 2 - 1);
            using var y = new NativeBuffer((long)tokens * rows * sizeof(float));
            var integer = new List<double>();
            var floats = new List<double>();
            double macs = (double)tokens * rows * cols;
            for (int round = 0; round <= rounds; round++)
            {
                var clock = new RoundClock(cpuTime, threads);
                MatMul.Multiply(grouped, x.Floats, tokens, y.Floats, pool);
                double a = clock.Lap();
                PackedFloatGemm.Multiply([new PackedTarget(panels, y.Floats)], x.Floats, tokens, pool);
                double b = clock.Lap();
                if (round == 0) continue;
                integer.Add(macs / a / threads / 1e9);
                floats.Add(macs / b / threads / 1e9);
            }
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"{rows,5} × {cols,-5} Q8_0 row groups {summary(integer),6:F1}   F32 panels {summary(floats),6:F1}"));
        }
        Console.WriteLine($"load average after: {File.ReadAllText("/proc/loadavg").Trim()}");
        return 0;
    }

    /// <summary>
    /// Seconds since the last lap: wall-clock, or with <c>--cpu-time</c> the process's CPU time divided by the
    /// threads (as if each kept a core), which other processes sharing the cores do not inflate (for A/B runs on a loaded machine).
    /// </summary>
    private sealed class RoundClock(bool cpuTime, int threads)
    {
        private readonly Stopwatch wall = Stopwatch.StartNew();
        private TimeSpan cpu = Process.GetCurrentProcess().TotalProcessorTime;

        public double Lap()
        {
            if (!cpuTime)
            {
                double seconds = wall.Elapsed.TotalSeconds;
                wall.Restart();
                return seconds;
            }
            var now = Process.GetCurrentProcess().TotalProcessorTime;
            double used = (now - cpu).TotalSeconds;
            cpu = now;
            return used / threads;
        }
    }

    private static double Median(List<double> values)
    {
        values.Sort();
        return values[values.Count / 2];
    }

    private static int Option(string[] args, string name, int fallback)
    {
        int i = Array.IndexOf(args, name);
        return i >= 0 && i + 1 < args.Length ? int.Parse(args[i + 1], CultureInfo.InvariantCulture) : fallback;
    }
}
