using System.Diagnostics;
using System.Globalization;
using Velo.Diagnostics;
using Velo.Generation;
using Velo.Inference;
using Velo.Runtime;
using Velo.Threading;

namespace Velo.Benchmarks.Serving;

/// <summary>
/// The server's load test without HTTP: N clients each send streaming requests back to back (every prompt prefixed by
/// its number, or with <c>--prompt-words</c> drawn per request as <see cref="LoadPrompts"/>, so none shares a cached
/// prefix) to a <see cref="BatchScheduler"/> in this process, as <c>velo bench-serve</c> does to a running server. Each pair of a <c>--batch</c> value and a <c>--cache-type</c> (keys
/// and values alike) is its own scheduler on the same model and worker pool; rounds alternate between them, and the
/// table gives the median of the rounds with the machine's load average beside it.
/// <code>dotnet run -c Release --project bench/Velo.Benchmarks -- scheduler -m MODEL [--prompt-file F | --prompt-words N] [--clients 8]
///   [--requests 32] [-n 64] [--parallel 8] [--threads 2] [--rounds 3] [--batch 512,256] [--cache-type f32,f16]</code>
/// </summary>
internal static class SchedulerBench
{
    public static int Run(string[] args)
    {
        string? modelPath = null;
        string prompt = "Once upon a time";
        int clients = 8, requests = 32, maxTokens = 64, parallel = 8, threads = 2, rounds = 3, words = 0;
        int[] batches = [512];
        string[] cacheTypes = ["f32"];
        for (int i = 0; i < args.Length; i++)
        {
            string value = i + 1 < args.Length ? args[i + 1] : throw new ArgumentException($"{args[i]} needs a value");
            switch (args[i++])
            {
                case "-m": modelPath = value; break;
                case "--prompt-file": prompt = File.ReadAllText(value).Trim(); break;
                case "--prompt-words": words = int.Parse(value, CultureInfo.InvariantCulture); break;
                case "--clients": clients = int.Parse(value, CultureInfo.InvariantCulture); break;
                case "--requests": requests = int.Parse(value, CultureInfo.InvariantCulture); break;
                case "-n": maxTokens = int.Parse(value, CultureInfo.InvariantCulture); break;
                case "--parallel": parallel = int.Parse(value, CultureInfo.InvariantCulture); break;
                case "--threads": threads = int.Parse(value, CultureInfo.InvariantCulture); break;
                case "--rounds": rounds = int.Parse(value, CultureInfo.InvariantCulture); break;
                case "--batch": batches = [.. value.Split(',').Select(b => int.Parse(b, CultureInfo.InvariantCulture))]; break;
                case "--cache-type": cacheTypes = value.Split(','); break;
                default: throw new ArgumentException($"unknown option {args[i - 1]}");
            }
        }
        if (modelPath == null) throw new ArgumentException("-m MODEL is required");
        Func<int, string> promptFor = words > 0 ? number => LoadPrompts.For(seed: 1, number, words) : number => $"{number}. {prompt}";

        using var model = LanguageModel.Load(modelPath);
        using var pool = new WorkerPool(threads);
        var configs = (from batch in batches from type in cacheTypes select (Batch: batch, CacheType: type, Name: $"{batch} {type}")).ToArray();
        var schedulers = configs.Select(c => new BatchScheduler(model, new BatchSchedulerOptions
        {
            Parallel = parallel, ContextLength = 512, MaxBatchTokens = c.Batch,
            CacheTypes = new KvCacheTypes(KvCacheTypes.Parse(c.CacheType), KvCacheTypes.Parse(c.CacheType)),
        }, pool)).ToArray();
        try
        {
            int promptTokens = model.Tokenizer.Encode(promptFor(1)).Length;
            Console.WriteLine($"{Path.GetFileName(modelPath)}: {clients} clients, {requests} requests of {promptTokens} prompt tokens and {maxTokens} generated, " +
                              $"{parallel} sequences, {threads} threads");
            var results = configs.Select(_ => new List<Result>()).ToArray();
            int next = 0;
            foreach (var scheduler in schedulers) Round(scheduler, model, promptFor, 1, 1, maxTokens, ref next); // JIT and first touch
            for (int r = 0; r < rounds; r++)
            for (int b = 0; b < configs.Length; b++)
            {
                var result = Round(schedulers[b], model, promptFor, clients, requests, maxTokens, ref next);
                results[b].Add(result);
                Console.WriteLine($"  round {r + 1} batch {configs[b].Name}: {result.TokensPerSecond:F1} t/s, TTFT p50 {result.TtftP50Ms:F0} ms, " +
                                  $"p99 {result.TtftP99Ms:F0} ms  (load {File.ReadAllText("/proc/loadavg").Split(' ')[0]})");
            }
            Console.WriteLine($"{"batch cache",11} {"tokens/s",9} {"TTFT p50 ms",12} {"TTFT p99 ms",12} {"ms/token",9}   (medians of {rounds} rounds)");
            for (int b = 0; b < configs.Length; b++)
                Console.WriteLine($"{configs[b].Name,11} {Median(results[b], x => x.TokensPerSecond),9:F1} {Median(results[b], x => x.TtftP50Ms),12:F0} " +
                                  $"{Median(results[b], x => x.TtftP99Ms),12:F0} {Median(results[b], x => x.MsPerToken),9:F2}");
            Console.WriteLine($"load average: {File.ReadAllText("/proc/loadavg").Trim()}");
            return 0;
        }
        finally
        {
            foreach (var scheduler in schedulers) scheduler.Dispose();
        }
    }

    private sealed record Result(double TokensPerSecond, double TtftP50Ms, double TtftP99Ms, double MsPerToken);

    private static double Median(List<Result> results, Func<Result, double> value)
    {
        var sorted = results.Select(value).Order().ToArray();
        return sorted.Length % 2 == 1 ? sorted[sorted.Length / 2] : (sorted[sorted.Length / 2 - 1] + sorted[sorted.Length / 2]) / 2;
    }

    private static Result Round(BatchScheduler scheduler, LanguageModel model, Func<int, string> promptFor, int clients, int requests, int maxTokens, ref int next)
    {
        int remaining = requests, first = next;
        next += requests;
        var ttfts = new List<double>();
        var perToken = new List<double>();
        long tokens = 0;
        var clock = Stopwatch.StartNew();
        var tasks = Enumerable.Range(0, clients).Select(_ => Task.Run(async () =>
        {
            while (Interlocked.Decrement(ref remaining) >= 0)
            {
                int number = Interlocked.Increment(ref first);
                var request = new GenerationRequest
                {
                    Prompt = model.Tokenizer.Encode(promptFor(number)),
                    Options = new GenerationOptions { MaxTokens = maxTokens, IgnoreEos = true },
                };
                var started = Stopwatch.StartNew();
                var stream = scheduler.Submit(request);
                double ttft = -1;
                int generated = 0;
                await foreach (var piece in stream.Pieces.ReadAllAsync())
                {
                    if (ttft < 0) ttft = started.Elapsed.TotalMilliseconds;
                    if (piece.TokenId >= 0) generated++;
                }
                await stream.Completion;
                double total = started.Elapsed.TotalMilliseconds;
                lock (ttfts)
                {
                    ttfts.Add(ttft);
                    tokens += generated;
                    if (generated > 1) perToken.Add((total - ttft) / (generated - 1));
                }
            }
        })).ToArray();
        Task.WaitAll(tasks);
        double seconds = clock.Elapsed.TotalSeconds;
        ttfts.Sort();
        double Percentile(double p) => ttfts[Math.Clamp((int)Math.Ceiling(p * ttfts.Count) - 1, 0, ttfts.Count - 1)];
        return new Result(tokens / seconds, Percentile(0.50), Percentile(0.99), perToken.Count > 0 ? perToken.Average() : 0);
    }
}
