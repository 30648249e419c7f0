using System.CommandLine;
using System.Text.Json;
using Spectre.Console;
using Velo.Diagnostics;
using Velo.Models;
using Velo.Threading;

namespace Velo.Cli.Commands;

/// <summary>
/// <c>velo bench</c>: llama-bench's pp and tg tests, with the machine's read bandwidth and FMA peak measured in the
/// same run so each figure comes with its share of the physical limit.
/// </summary>
internal static class BenchCommand
{
    public static Command Create()
    {
        var model = CommonOptions.Model();
        var prompt = new Option<int>("--n-prompt", "-p") { Description = "Prompt tokens for the pp test (0: skip)", DefaultValueFactory = _ => 512 }
            .AtLeast(0, "0 skips the test");
        var generate = new Option<int>("--n-gen", "-n") { Description = "Tokens for the tg test (0: skip)", DefaultValueFactory = _ => 128 }
            .AtLeast(0, "0 skips the test");
        var threads = new Option<string>("--threads", "-t") { Description = "Thread counts, comma-separated", DefaultValueFactory = _ => Environment.ProcessorCount.ToString() };
        var repetitions = new Option<int>("--repetitions", "-r") { Description = "Runs per test", DefaultValueFactory = _ => 3 }.AtLeast(1);
        var json = new Option<bool>("--json") { Description = "Print the results as JSON" };
        var cacheTypeK = CommonOptions.CacheTypeK();
        var cacheTypeV = CommonOptions.CacheTypeV();
        var parallel = new Option<string>("--parallel", "-np")
        {
            Description = "Sequences decoded together in the tg test, comma-separated (as the server's --parallel batches them)",
            DefaultValueFactory = _ => "1",
        };
        var speculation = new CommonOptions.SpeculationOptionSet();
        var command = new Command("bench", "Measure prompt processing and generation speed")
        {
            model, prompt, generate, threads, repetitions, json, cacheTypeK, cacheTypeV, parallel,
        };
        foreach (var option in speculation.All) command.Options.Add(option);
        command.SetAction(parse => CommonOptions.Guard(() => Run(
            parse.GetValue(model)!, parse.GetValue(prompt), parse.GetValue(generate),
            ParseThreadCounts(parse.GetValue(threads)!), parse.GetValue(repetitions), parse.GetValue(json),
            CommonOptions.CacheTypes(parse, cacheTypeK, cacheTypeV), ParseCounts("--parallel", parse.GetValue(parallel)!),
            speculation.Speculation(parse), parse.GetValue(speculation.DraftModel))));
        return command;
    }

    private static int[] ParseCounts(string option, string list)
    {
        var counts = list.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
            .Select(s => int.TryParse(s, out int n) && n > 0 ? n : throw new ArgumentException($"{option}: '{s}' is not a positive number"))
            .ToArray();
        return counts.Length > 0 ? counts : throw new ArgumentException($"{option}: give at least one count");
    }

    private static int[] ParseThreadCounts(string list)
    {
        int[] counts = ParseCounts("--threads", list);
        foreach (int threads in counts)
            if (CommonOptions.ThreadCountError(threads) is { } error) throw new ArgumentException(error);
        return counts;
    }

    /// <summary>A result row; the speculative generation test's also says what speculation did and its speed over the
    /// same generation without it (the median of alternating rounds' ratios).</summary>
    private sealed record Row(string Model, string Type, double SizeMiB, int Threads, string Test, double Mean, double StandardDeviation,
        double Median, double[] Runs, double LimitTokensPerSecond, double ShareOfLimit, string Limit,
        double? AcceptanceRate = null, double? TokensPerTargetPass = null, double? SpeedUp = null, double? BusyThreads = null, long? MajorPageFaults = null);

    private static int Run(string path, int promptTokens, int genTokens, int[] threadCounts, int repetitions, bool json, Velo.Runtime.KvCacheTypes cacheTypes,
        int[] parallel, Velo.Generation.SpeculationOptions? speculation, string? draftPath)
    {
        var clock = System.Diagnostics.Stopwatch.StartNew();
        using var model = ModelRegistry.Load(path);
        double loadSeconds = clock.Elapsed.TotalSeconds;
        if (model.Info.Output == ModelOutput.Embeddings)
            return speculation != null ? throw new ArgumentException($"{path} is an encoder: speculative decoding needs a model that generates text")
                : RunEncoder(model, path, threadCounts, repetitions, json, loadSeconds);
        // The speculative test generates real text, so it needs the tokenizer and, checked up front, a draft of the same vocabulary.
        using var target = speculation != null && genTokens > 0 ? Velo.Inference.LanguageModel.Load(path) : null;
        using var draft = target != null && draftPath != null ? Velo.Inference.LanguageModel.Load(draftPath) : null;
        if (draft != null) Velo.Generation.DraftModelSpeculator.CheckVocabulary(target!, draft);
        // Refused before the bandwidth and FMA probes, which take seconds, rather than after them.
        if (promptTokens > 0) Benchmark.EnsurePromptProcessingFits(model, promptTokens, cacheTypes: cacheTypes);
        if (genTokens > 0)
            foreach (int sequences in parallel)
                Benchmark.EnsureTextGenerationFits(model, genTokens, sequences, cacheTypes);
        string type = model.File.Tensors.Where(t => t.Shape.Count == 2).GroupBy(t => t.Type).MaxBy(g => g.Sum(t => t.ElementCount))!.Key.ToString();
        double sizeMiB = model.File.Tensors.Sum(t => t.ByteSize) / (1024.0 * 1024);
        long bytesPerToken = Benchmark.WeightBytesPerToken(model);
        double flopsPerToken = Benchmark.FlopsPerToken(model);
        string name = model.File.Metadata.GetString("general.name") ?? Path.GetFileNameWithoutExtension(path);

        var rows = new List<Row>();
        foreach (int threads in threadCounts)
        {
            using var pool = new WorkerPool(threads);
            double bandwidth = MachineProbe.ReadBandwidth(pool);
            double peak = MachineProbe.FmaPeak(pool);
            if (!json) AnsiConsole.MarkupLineInterpolated($"[grey]{threads} thread(s): read bandwidth {bandwidth / 1e9:F1} GB/s, FMA peak {peak / 1e9:F0} GFLOP/s[/]");
            if (promptTokens > 0)
            {
                var r = Benchmark.PromptProcessing(model, pool, promptTokens, repetitions, cacheTypes: cacheTypes);
                double limit = peak / flopsPerToken;
                rows.Add(new Row(name, type, sizeMiB, threads, r.Test, r.Mean, r.StandardDeviation, r.Median, [.. r.TokensPerSecond], limit, r.Median / limit, "compute"));
            }
            if (genTokens > 0)
                foreach (int sequences in parallel)
                {
                    var r = Benchmark.TextGeneration(model, pool, genTokens, repetitions, cacheTypes, sequences);
                    // Each step reads the weights once for all its sequences.
                    double limit = bandwidth / bytesPerToken * sequences;
                    rows.Add(new Row(name, type, sizeMiB, threads, r.Test, r.Mean, r.StandardDeviation, r.Median, [.. r.TokensPerSecond], limit, r.Median / limit, "bandwidth"));
                    if (target == null) continue;
                    var s = Benchmark.SpeculativeGeneration(target, draft, speculation!, pool, genTokens, repetitions, cacheTypes, sequences);
                    rows.Add(new Row(name, type, sizeMiB, threads, s.Plain.Test, s.Plain.Mean, s.Plain.StandardDeviation, s.Plain.Median,
                        [.. s.Plain.TokensPerSecond], limit, s.Plain.Median / limit, "bandwidth",
                        BusyThreads: s.PlainCost.BusyThreads, MajorPageFaults: s.PlainCost.MajorPageFaults));
                    rows.Add(new Row(name, type, sizeMiB, threads, s.Speculative.Test, s.Speculative.Mean, s.Speculative.StandardDeviation, s.Speculative.Median,
                        [.. s.Speculative.TokensPerSecond], limit, s.Speculative.Median / limit, "bandwidth",
                        s.Counters.AcceptanceRate, s.Counters.TokensPerStep, s.SpeedUp, s.SpeculativeCost.BusyThreads, s.SpeculativeCost.MajorPageFaults));
                }
        }

        if (json)
        {
            Console.WriteLine(JsonSerializer.Serialize(new { model = path, load_seconds = loadSeconds, results = rows }, new JsonSerializerOptions { WriteIndented = true }));
            return 0;
        }
        var table = new Table().AddColumns("model", "type", "size", "threads", "test", "t/s (mean ± sd)", "median", "limit t/s", "share");
        foreach (var r in rows)
            table.AddRow(Markup.Escape(r.Model), r.Type, $"{r.SizeMiB:F0} MiB", r.Threads.ToString(), r.Test,
                $"{r.Mean:F2} ± {r.StandardDeviation:F2}", $"{r.Median:F2}", $"{r.LimitTokensPerSecond:F1}", $"{r.ShareOfLimit:P0} of {r.Limit}");
        AnsiConsole.Write(table);
        string source = draft != null ? $"draft {draft.Path}" : $"prompt lookup, n-gram {speculation?.NGram}";
        foreach (var r in rows.Where(r => r.BusyThreads != null))
            AnsiConsole.MarkupLineInterpolated(
                $"[grey]{r.Test}: {r.BusyThreads:F2} of {r.Threads} thread(s) busy on average, {(r.MajorPageFaults is long f ? f.ToString() : "unknown")} major page faults (weights read from disk)[/]");
        foreach (var r in rows.Where(r => r.SpeedUp != null))
            AnsiConsole.MarkupLineInterpolated(
                $"[grey]{r.Test} ({r.Threads} thread(s), {source}): {100 * r.AcceptanceRate:F1}% of drafts accepted, {r.TokensPerTargetPass:F2} tokens per target pass, {r.SpeedUp:F2}× the scheduler without speculation (median of alternating rounds); load average {LoadAverage()}[/]");
        string repacked = model.Repack.Describe() is { Length: > 0 } copies ? $" ({copies})" : "";
        AnsiConsole.MarkupLineInterpolated($"[grey]load {loadSeconds:F2} s{repacked}; decode reads {bytesPerToken / (1024.0 * 1024):F1} MiB of weights per token; prefill needs {flopsPerToken / 1e9:F2} GFLOP per token[/]");
        return 0;
    }

    /// <summary>An encoder: the latency of one 16-token input and the throughput of 32 inputs of 128 tokens.</summary>
    private static int RunEncoder(IModel model, string path, int[] threadCounts, int repetitions, bool json, double loadSeconds)
    {
        var results = new List<(int Threads, EncoderBenchResult Result)>();
        foreach (int threads in threadCounts)
        {
            using var pool = new WorkerPool(threads);
            using var embedder = new Velo.Inference.TextEmbedder(model, Velo.Text.Tokenizer.FromGguf(model.File.Metadata), pool);
            results.Add((threads, EncoderBenchmark.Run(embedder, 1, 16, Math.Max(repetitions, 5), model.Info.VocabSize)));
            results.Add((threads, EncoderBenchmark.Run(embedder, 32, 128, repetitions, model.Info.VocabSize)));
        }
        if (json)
        {
            var rows = results.Select(r => new
            {
                threads = r.Threads, test = r.Result.Test, inputs = r.Result.Inputs, tokens_per_input = r.Result.TokensPerInput,
                median_ms = r.Result.MedianMilliseconds, inputs_per_second = r.Result.InputsPerSecond, runs_ms = r.Result.Milliseconds,
            });
            Console.WriteLine(JsonSerializer.Serialize(new { model = path, load_seconds = loadSeconds, results = rows }, new JsonSerializerOptions { WriteIndented = true }));
            return 0;
        }
        var table = new Table().AddColumns("model", "threads", "test", "median ms", "inputs/s");
        foreach (var (threads, r) in results)
            table.AddRow(Markup.Escape(Path.GetFileName(path)), threads.ToString(), r.Test, $"{r.MedianMilliseconds:F2}", $"{r.InputsPerSecond:F1}");
        AnsiConsole.Write(table);
        AnsiConsole.MarkupLineInterpolated($"[grey]load {loadSeconds:F2} s; load average {LoadAverage()}[/]");
        return 0;
    }

    private static string LoadAverage() => File.Exists("/proc/loadavg") ? File.ReadAllText("/proc/loadavg").Trim() : "unknown";
}
