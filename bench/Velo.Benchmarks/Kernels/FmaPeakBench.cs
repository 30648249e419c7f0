using System.Diagnostics;
using System.Globalization;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using System.Runtime.InteropServices;

namespace Velo.Benchmarks.Kernels;

/// <summary>
/// One core's fp32 FMA throughput, the ceiling a GEMM micro-kernel is judged against: independent 512-bit (and
/// 256-bit) accumulator chains with no memory operands, then the packed GEMM's instruction mix (per column four
/// 512-bit weight loads and broadcast activations feeding a tile of accumulators) on data that stays in L1. GFLOP/s
/// on the calling thread: each probe runs a few milliseconds, many times, and the best run is the core's peak (on a
/// shared machine most runs lose part of their time slice to neighbours; the median shows how many).
/// </summary>
internal static unsafe class FmaPeakBench
{
    public static int Run(string[] args)
    {
        int rounds = Option(args, "--rounds", 60);
        Console.WriteLine($"load average before: {File.ReadAllText("/proc/loadavg").Trim()}");
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"zmm FMA, 12 chains, registers only   {BestAndMedian(rounds, Registers512)}"));
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"ymm FMA, 12 chains, registers only   {BestAndMedian(rounds, Registers256)}"));
        // Panels of 64 columns (16 KiB, in L1) and of MiniLM's widths 384 and 1536 (96 and 384 KiB, in L2).
        float* panel = (float*)NativeMemory.AlignedAlloc(64 * MaxCols * sizeof(float), 64);
        float* x = (float*)NativeMemory.AlignedAlloc(6 * MaxCols * sizeof(float), 64);
        try
        {
            for (int i = 0; i < 64 * MaxCols; i++) panel[i] = 1e-3f;
            for (int i = 0; i < 6 * MaxCols; i++) x[i] = 1e-3f;
            foreach (int cols in new[] { 64, 384, MaxCols })
                Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                    $"64 × 6 tile mix (4 loads, 6 broadcasts, 24 FMAs a column), panel of {cols,4} columns   {BestAndMedian(rounds, () => TileMix(panel, x, cols))}"));
        }
        finally
        {
            NativeMemory.AlignedFree(panel);
            NativeMemory.AlignedFree(x);
        }
        Console.WriteLine($"load average after: {File.ReadAllText("/proc/loadavg").Trim()}");
        return 0;
    }

    private static string BestAndMedian(int rounds, Func<double> probe)
    {
        probe();
        var values = Enumerable.Range(0, rounds).Select(_ => probe()).Order().ToList();
        return string.Create(CultureInfo.InvariantCulture, $"best {values[^1],6:F1}  median {values[values.Count / 2],6:F1} GFLOP/s");
    }

    private const long Iterations = 1_000_000;
    private const int MaxCols = 1536, ColumnsPerRun = 320_000;

    private static double Registers512()
    {
        long start = Stopwatch.GetTimestamp();
        Keep(Chains512(Iterations));
        return Iterations * 12.0 * 16 * 2 / Stopwatch.GetElapsedTime(start).TotalSeconds / 1e9;
    }

    private static double Registers256()
    {
        long start = Stopwatch.GetTimestamp();
        var sums = Chains256(Iterations);
        Keep(Vector512.Create(sums, sums));
        return Iterations * 12.0 * 8 * 2 / Stopwatch.GetElapsedTime(start).TotalSeconds / 1e9;
    }

    private static double TileMix(float* panel, float* x, int cols)
    {
        long start = Stopwatch.GetTimestamp();
        Keep(Tiles(panel, x, cols, ColumnsPerRun / cols));
        return (double)(ColumnsPerRun / cols) * cols * 24 * 16 * 2 / Stopwatch.GetElapsedTime(start).TotalSeconds / 1e9;
    }

    // The loops below call nothing: a call inside would make the JIT keep the accumulators in memory.

    [MethodImpl(MethodImplOptions.AggressiveOptimization | MethodImplOptions.NoInlining)]
    private static Vector512<float> Chains512(long iterations)
    {
        var m = Vector512.Create(0.9999f);
        var c = Vector512.Create(1e-7f);
        Vector512<float> a0 = Vector512<float>.One, a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0, a8 = a0, a9 = a0, a10 = a0, a11 = a0;
        for (long i = 0; i < iterations; i++)
        {
            a0 = Avx512F.FusedMultiplyAdd(a0, m, c); a1 = Avx512F.FusedMultiplyAdd(a1, m, c);
            a2 = Avx512F.FusedMultiplyAdd(a2, m, c); a3 = Avx512F.FusedMultiplyAdd(a3, m, c);
            a4 = Avx512F.FusedMultiplyAdd(a4, m, c); a5 = Avx512F.FusedMultiplyAdd(a5, m, c);
            a6 = Avx512F.FusedMultiplyAdd(a6, m, c); a7 = Avx512F.FusedMultiplyAdd(a7, m, c);
            a8 = Avx512F.FusedMultiplyAdd(a8, m, c); a9 = Avx512F.FusedMultiplyAdd(a9, m, c);
            a10 = Avx512F.FusedMultiplyAdd(a10, m, c); a11 = Avx512F.FusedMultiplyAdd(a11, m, c);
        }
        return a0 + a1 + a2 + a3 + a4 + a5 + a6 + a7 + a8 + a9 + a10 + a11;
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization | MethodImplOptions.NoInlining)]
    private static Vector256<float> Chains256(long iterations)
    {
        var m = Vector256.Create(0.9999f);
        var c = Vector256.Create(1e-7f);
        Vector256<float> a0 = Vector256<float>.One, a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0, a8 = a0, a9 = a0, a10 = a0, a11 = a0;
        for (long i = 0; i < iterations; i++)
        {
            a0 = Fma.MultiplyAdd(a0, m, c); a1 = Fma.MultiplyAdd(a1, m, c);
            a2 = Fma.MultiplyAdd(a2, m, c); a3 = Fma.MultiplyAdd(a3, m, c);
            a4 = Fma.MultiplyAdd(a4, m, c); a5 = Fma.MultiplyAdd(a5, m, c);
            a6 = Fma.MultiplyAdd(a6, m, c); a7 = Fma.MultiplyAdd(a7, m, c);
            a8 = Fma.MultiplyAdd(a8, m, c); a9 = Fma.MultiplyAdd(a9, m, c);
            a10 = Fma.MultiplyAdd(a10, m, c); a11 = Fma.MultiplyAdd(a11, m, c);
        }
        return a0 + a1 + a2 + a3 + a4 + a5 + a6 + a7 + a8 + a9 + a10 + a11;
    }

    /// <summary>The packed GEMM's 64 × 6 tile over a panel of <paramref name="cols"/> columns and six tokens, again and again.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization | MethodImplOptions.NoInlining)]
    private static Vector512<float> Tiles(float* panel0, float* x, int cols, int passes)
    {
        Vector512<float> a0 = default, b0 = default, c0 = default, d0 = default, a1 = default, b1 = default, c1 = default, d1 = default;
        Vector512<float> a2 = default, b2 = default, c2 = default, d2 = default, a3 = default, b3 = default, c3 = default, d3 = default;
        Vector512<float> a4 = default, b4 = default, c4 = default, d4 = default, a5 = default, b5 = default, c5 = default, d5 = default;
        float* x0 = x, x1 = x + cols, x2 = x + 2 * cols, x3 = x + 3 * cols, x4 = x + 4 * cols, x5 = x + 5 * cols;
        for (int pass = 0; pass < passes; pass++)
        {
            float* panel = panel0;
            for (int c = 0; c < cols; c++, panel += 64)
            {
                var w0 = Avx512F.LoadVector512(panel);
                var w1 = Avx512F.LoadVector512(panel + 16);
                var w2 = Avx512F.LoadVector512(panel + 32);
                var w3 = Avx512F.LoadVector512(panel + 48);
                var v = Vector512.Create(x0[c]);
                a0 = Avx512F.FusedMultiplyAdd(w0, v, a0); b0 = Avx512F.FusedMultiplyAdd(w1, v, b0);
                c0 = Avx512F.FusedMultiplyAdd(w2, v, c0); d0 = Avx512F.FusedMultiplyAdd(w3, v, d0);
                v = Vector512.Create(x1[c]);
                a1 = Avx512F.FusedMultiplyAdd(w0, v, a1); b1 = Avx512F.FusedMultiplyAdd(w1, v, b1);
                c1 = Avx512F.FusedMultiplyAdd(w2, v, c1); d1 = Avx512F.FusedMultiplyAdd(w3, v, d1);
                v = Vector512.Create(x2[c]);
                a2 = Avx512F.FusedMultiplyAdd(w0, v, a2); b2 = Avx512F.FusedMultiplyAdd(w1, v, b2);
                c2 = Avx512F.FusedMultiplyAdd(w2, v, c2); d2 = Avx512F.FusedMultiplyAdd(w3, v, d2);
                v = Vector512.Create(x3[c]);
                a3 = Avx512F.FusedMultiplyAdd(w0, v, a3); b3 = Avx512F.FusedMultiplyAdd(w1, v, b3);
                c3 = Avx512F.FusedMultiplyAdd(w2, v, c3); d3 = Avx512F.FusedMultiplyAdd(w3, v, d3);
                v = Vector512.Create(x4[c]);
                a4 = Avx512F.FusedMultiplyAdd(w0, v, a4); b4 = Avx512F.FusedMultiplyAdd(w1, v, b4);
                c4 = Avx512F.FusedMultiplyAdd(w2, v, c4); d4 = Avx512F.FusedMultiplyAdd(w3, v, d4);
                v = Vector512.Create(x5[c]);
                a5 = Avx512F.FusedMultiplyAdd(w0, v, a5); b5 = Avx512F.FusedMultiplyAdd(w1, v, b5);
                c5 = Avx512F.FusedMultiplyAdd(w2, v, c5); d5 = Avx512F.FusedMultiplyAdd(w3, v, d5);
            }
        }
        return a0 + b0 + c0 + d0 + a1 + b1 + c1 + d1 + a2 + b2 + c2 + d2 + a3 + b3 + c3 + d3 + a4 + b4 + c4 + d4 + a5 + b5 + c5 + d5;
    }

    private static float _sink;

    /// <summary>Keeps the sums alive, so the JIT cannot drop the loops that make them.</summary>
    private static void Keep(Vector512<float> sums) => _sink += Vector512.Sum(sums);

    private static int Option(string[] args, string name, int fallback)
    {
        int i = Array.IndexOf(args, name);
        return i >= 0 && i + 1 < args.Length ? int.Parse(args[i + 1], CultureInfo.InvariantCulture) : fallback;
    }
}
