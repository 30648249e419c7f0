using System.Diagnostics;
using Velo.Generation;
using Velo.Inference;
using Velo.Models;
using Velo.Runtime;
using Velo.Threading;

namespace Velo.Diagnostics;

/// <summary>One benchmark figure: the runs' tokens per second.</summary>
public sealed record BenchmarkResult(string Test, int Threads, int Tokens, IReadOnlyList<double> TokensPerSecond)
{
    public double Mean => TokensPerSecond.Average();
    public double Median => TokensPerSecond.Order().ElementAt(TokensPerSecond.Count / 2);
    public double StandardDeviation =>
        TokensPerSecond.Count < 2 ? 0 : Math.Sqrt(TokensPerSecond.Sum(v => (v - Mean) * (v - Mean)) / (TokensPerSecond.Count - 1));
}

/// <summary>Greedy generation through the scheduler without and with speculation, measured in alternating rounds:
/// each side's speeds, the median of the rounds' speed ratios, what the speculation did, and what each side got of the machine.</summary>
public sealed record SpeculationBenchmarkResult(BenchmarkResult Plain, BenchmarkResult Speculative, double SpeedUp, SpeculationCounters Counters,
    RunCost PlainCost, RunCost SpeculativeCost);

/// <summary>
/// What measured rounds got of the machine: the process's CPU time over their wall time (threads kept busy; on a
/// shared machine far fewer than the pool's when other processes take the cores) and major page faults (weights
/// read back from disk because the page cache could not hold them; null where the system does not count them).
/// Either explains a side that is slow for reasons other than its own work.
/// </summary>
public readonly record struct RunCost(double BusyThreads, long? MajorPageFaults);

/// <summary>
/// llama-bench's two tests: pp (a prompt of N tokens in one batch, from an empty cache) and tg (N tokens decoded
/// one at a time, from an empty cache), the latter also for several sequences decoded together, one batched
/// forward pass per step as the server's continuous batching runs them. Tokens are arbitrary ids: speed does not
/// depend on which.
/// </summary>
public static class Benchmark
{
    public static BenchmarkResult PromptProcessing(IModel model, WorkerPool pool, int tokens, int repetitions, int batchSize = 512,
        KvCacheTypes cacheTypes = default)
    {
        EnsurePromptProcessingFits(model, tokens, batchSize, cacheTypes);
        using var state = model.CreateState(contextLength: tokens, maxBatch: Math.Min(batchSize, tokens), pool: pool, cacheTypes: cacheTypes);
        var batch = new ForwardBatch(state.MaxBatch);
        var speeds = new List<double>();
        for (int r = -1; r < repetitions; r++) // the first run warms up
        {
            long start = Stopwatch.GetTimestamp();
            for (int p0 = 0; p0 < tokens; p0 += batch.Capacity)
            {
                batch.Clear();
                int end = Math.Min(tokens, p0 + batch.Capacity);
                for (int p = p0; p < end; p++) batch.Add(TokenAt(p, model.Info.VocabSize), p, wantLogits: p == tokens - 1);
                model.Forward(state, batch);
            }
            if (r >= 0) speeds.Add(tokens / Stopwatch.GetElapsedTime(start).TotalSeconds);
        }
        return new BenchmarkResult($"pp{tokens}", pool.ThreadCount, tokens, speeds);
    }

    /// <summary>
    /// <paramref name="tokens"/> decode steps of <paramref name="sequences"/> sequences each (all logits wanted);
    /// the speed is the tokens of all sequences per second.
    /// </summary>
    public static BenchmarkResult TextGeneration(IModel model, WorkerPool pool, int tokens, int repetitions, KvCacheTypes cacheTypes = default,
        int sequences = 1)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(sequences, 1);
        EnsureTextGenerationFits(model, tokens, sequences, cacheTypes);
        using var state = model.CreateState(contextLength: tokens, maxBatch: sequences, sequences: sequences, pool: pool, cacheTypes: cacheTypes);
        var batch = new ForwardBatch(sequences);
        var speeds = new List<double>();
        for (int r = -1; r < repetitions; r++)
        {
            long start = Stopwatch.GetTimestamp();
            for (int p = 0; p < tokens; p++)
            {
                batch.Clear();
                for (int s = 0; s < sequences; s++) batch.Add(TokenAt(p + 31 * s, model.Info.VocabSize), p, s, wantLogits: true);
                model.Forward(state, batch);
            }
            if (r >= 0) speeds.Add((double)tokens * sequences / Stopwatch.GetElapsedTime(start).TotalSeconds);
        }
        return new BenchmarkResult(sequences == 1 ? $"tg{tokens}" : $"tg{tokens} x{sequences}", pool.ThreadCount, tokens * sequences, speeds);
    }

    /// <summary>
    /// Generates <paramref name="tokens"/> greedy tokens for each of <paramref name="sequences"/> sequences through a
    /// <see cref="BatchScheduler"/>, end of text ignored, once without and once with speculation per round (a round before
    /// the measured ones warms both up), from a short prompt that differs per sequence. Generated tokens per second of
    /// wall time, prompts included (a few tokens against <paramref name="tokens"/>).
    /// </summary>
    public static SpeculationBenchmarkResult SpeculativeGeneration(LanguageModel target, LanguageModel? draft, SpeculationOptions speculation,
        WorkerPool pool, int tokens, int repetitions, KvCacheTypes cacheTypes = default, int sequences = 1)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(sequences, 1);
        int[] opening = target.Tokenizer.Encode("Once upon a time, there was a little girl", addSpecial: true);
        var prompts = Enumerable.Range(0, sequences).Select(s => (int[])[.. opening, TokenAt(31 * s, target.Info.VocabSize)]).ToArray();
        var options = new BatchSchedulerOptions
        {
            Parallel = sequences, ContextLength = opening.Length + 1 + tokens, CacheTypes = cacheTypes, QueueCapacity = sequences,
        };
        using var plain = new BatchScheduler(target, options, pool);
        using var speculative = new BatchScheduler(target, options with { Speculation = speculation }, pool, draft: draft);
        var plainSpeeds = new List<double>();
        var speculativeSpeeds = new List<double>();
        var ratios = new List<double>();
        var plainCost = new CostMeter();
        var speculativeCost = new CostMeter();
        for (int r = -1; r < repetitions; r++)
        {
            plainCost.Start();
            double without = Generate(plain);
            plainCost.Stop(measured: r >= 0);
            speculativeCost.Start();
            double with = Generate(speculative);
            speculativeCost.Stop(measured: r >= 0);
            if (r < 0) continue;
            plainSpeeds.Add(without);
            speculativeSpeeds.Add(with);
            ratios.Add(with / without);
        }
        string test = sequences == 1 ? $"tg{tokens}" : $"tg{tokens} x{sequences}";
        return new SpeculationBenchmarkResult(new BenchmarkResult($"{test} scheduler", pool.ThreadCount, tokens * sequences, plainSpeeds),
            new BenchmarkResult($"{test} speculative", pool.ThreadCount, tokens * sequences, speculativeSpeeds),
            ratios.Order().ElementAt(ratios.Count / 2), speculative.Speculation, plainCost.Total, speculativeCost.Total);

        double Generate(BatchScheduler scheduler)
        {
            long start = Stopwatch.GetTimestamp();
            var streams = prompts.Select(prompt => scheduler.Submit(new GenerationRequest
            {
                Prompt = prompt,
                Options = new GenerationOptions { MaxTokens = tokens, IgnoreEos = true, Sampling = SamplerOptions.Greedy },
            })).ToArray();
            long generated = 0;
            foreach (var stream in streams) generated += stream.Completion.GetAwaiter().GetResult().GeneratedTokens;
            return generated / Stopwatch.GetElapsedTime(start).TotalSeconds;
        }
    }

    /// <summary>Refuses, with what would fit, a pp test whose state needs more memory than is available.</summary>
    public static void EnsurePromptProcessingFits(IModel model, int tokens, int batchSize = 512, KvCacheTypes cacheTypes = default, long? availableBytes = null) =>
        MemoryPlan.EnsureFits((context, _) => MemoryPlan.For(model, context, 1, Math.Min(batchSize, context), 1, cacheTypes),
            tokens, 1, availableBytes, "--n-prompt", null);

    /// <summary>Refuses, with what would fit, a tg test whose state needs more memory than is available.</summary>
    public static void EnsureTextGenerationFits(IModel model, int tokens, int sequences, KvCacheTypes cacheTypes = default, long? availableBytes = null) =>
        MemoryPlan.EnsureFits((context, parallel) => MemoryPlan.For(model, context, parallel, parallel, parallel, cacheTypes),
            tokens, sequences, availableBytes, "--n-gen", "--parallel");

    /// <summary>Bytes of weights a decode step reads: every matrix once (the embedding only one row, unless it is also the output).</summary>
    public static long WeightBytesPerToken(IModel model)
    {
        long bytes = 0;
        foreach (var t in model.File.Tensors)
            bytes += t.Name == "token_embd.weight" && model.File.FindTensor("output.weight") != null ? t.ByteSize / t.Shape[^1] : t.ByteSize;
        return bytes;
    }

    /// <summary>Matrix-multiply FLOPs per token: 2 per weight of every matrix but the embedding lookup (the output matrix counts).</summary>
    public static double FlopsPerToken(IModel model)
    {
        double parameters = 0;
        foreach (var t in model.File.Tensors)
            if (t.Shape.Count == 2 && (t.Name != "token_embd.weight" || model.File.FindTensor("output.weight") == null))
                parameters += t.ElementCount;
        return 2 * parameters;
    }

    private static int TokenAt(int position, int vocab) => (int)((position * 2654435761L + 17) % vocab);

    /// <summary>Sums <see cref="RunCost"/> over the measured rounds of one side.</summary>
    private sealed class CostMeter
    {
        private readonly Process _process = Process.GetCurrentProcess();
        private long _startTimestamp;
        private TimeSpan _startCpu;
        private long? _startFaults;
        private double _wallSeconds, _cpuSeconds;
        private long? _faults = 0;

        public RunCost Total => new(_wallSeconds > 0 ? _cpuSeconds / _wallSeconds : 0, _faults);

        public void Start()
        {
            _process.Refresh();
            _startCpu = _process.TotalProcessorTime;
            _startFaults = MachineProbe.MajorPageFaults();
            _startTimestamp = Stopwatch.GetTimestamp();
        }

        public void Stop(bool measured)
        {
            double wall = Stopwatch.GetElapsedTime(_startTimestamp).TotalSeconds;
            _process.Refresh();
            double cpu = (_process.TotalProcessorTime - _startCpu).TotalSeconds;
            long? faults = MachineProbe.MajorPageFaults() - _startFaults;
            if (!measured) return;
            _wallSeconds += wall;
            _cpuSeconds += cpu;
            _faults += faults;
        }
    }
}
