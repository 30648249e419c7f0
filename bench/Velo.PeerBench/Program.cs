using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using LLama;
using LLama.Common;
using LLama.Native;
using Velo.Diagnostics;
using Velo.Models;
using Velo.Threading;

// llama-bench's pp and tg (and batched decode) on the same GGUF file in llama.cpp (LLamaSharp's native libraries)
// and in Velo, in one process, the engines taking turns round by round; one markdown table of medians and ratios.
CultureInfo.DefaultThreadCurrentCulture = CultureInfo.InvariantCulture;
CultureInfo.CurrentCulture = CultureInfo.InvariantCulture;

Options options;
try { options = Options.Parse(args); }
catch (ArgumentException e)
{
    Console.Error.WriteLine($"error: {e.Message}");
    Console.Error.WriteLine(Options.Usage);
    return 2;
}
if (options.Help) { Console.WriteLine(Options.Usage); return 0; }

// llama.cpp's load chatter is kept back; its errors still reach stderr (and are counted: a grammar it rejects shows only there).
NativeLibraryConfig.All.WithLogCallback((level, message) =>
{
    if (level != LLamaLogLevel.Error) return;
    Interlocked.Increment(ref LlamaGrammar.ErrorsLogged);
    Console.Error.Write($"llama.cpp: {message}");
});

string loadBefore = File.ReadAllText("/proc/loadavg").Trim();
if (options.Schemas != null)
{
    var grammarRows = new List<GrammarPeerRow>();
    foreach (string path in options.Models) grammarRows.AddRange(GrammarPeer.Run(path, options));
    PrintHeader(LoadedNativeLibrary());
    GrammarPeer.Print(grammarRows, options);
    return 0;
}
var rows = new List<(string Model, string Test, double Llama, double Velo, double? LlamaShare, double? VeloShare)>();
var bandwidths = new List<(string Model, double BytesPerSecond, long BytesPerToken)>();
string? nativeLibrary = null;
foreach (string path in options.Models)
{
    string modelName = Path.GetFileName(path);
    using var veloModel = ModelRegistry.Load(path);
    using var pool = new WorkerPool(options.Threads);
    using var llamaModel = LLamaWeights.LoadFromFile(new ModelParams(path) { GpuLayerCount = 0 });
    nativeLibrary ??= LoadedNativeLibrary();
    int vocab = veloModel.Info.VocabSize;
    // Decode streams the weights once per step: its speed is judged against the read bandwidth measured with the
    // same threads (each sums its slice of 1 GiB, far past the caches; best of 3 passes), before each tg test and
    // after the last, the best of those, since on a shared machine what others take comes and goes.
    long bytesPerToken = Benchmark.WeightBytesPerToken(veloModel);
    double bandwidth = 0;

    var tests = new List<PeerTest>();
    if (options.PromptTokens > 0)
        tests.Add(new PeerTest($"pp{options.PromptTokens}", options.PromptTokens, 1,
            () => LlamaCpp.PromptProcessing(llamaModel, options.PromptTokens, options.Threads, vocab),
            () => Benchmark.PromptProcessing(veloModel, pool, options.PromptTokens, repetitions: 1, batchSize: options.PromptTokens).Median));
    if (options.GenTokens > 0)
        foreach (int sequences in options.Parallel)
            tests.Add(new PeerTest(sequences == 1 ? $"tg{options.GenTokens}" : $"tg{options.GenTokens} x{sequences}", options.GenTokens, sequences,
                () => LlamaCpp.TextGeneration(llamaModel, options.GenTokens, sequences, options.Threads, vocab),
                () => Benchmark.TextGeneration(veloModel, pool, options.GenTokens, repetitions: 1, sequences: sequences).Median));

    var results = new List<(string Test, int Sequences, double Llama, double Velo)>();
    foreach (var test in tests)
    {
        if (test.Name.StartsWith("tg", StringComparison.Ordinal)) bandwidth = Math.Max(bandwidth, MachineProbe.ReadBandwidth(pool));
        var llama = new List<double>();
        var velo = new List<double>();
        for (int round = 0; round < options.Rounds; round++)
        {
            // Each engine's figure is one timed run right after one warm-up run (as velo bench and llama-bench do);
            // which engine goes first alternates, so neither always runs on the cooler or the hotter machine.
            if (round % 2 == 0) { llama.Add(test.RunLlama()); velo.Add(test.RunVelo()); }
            else { velo.Add(test.RunVelo()); llama.Add(test.RunLlama()); }
            Console.Error.WriteLine($"{modelName} {test.Name} round {round + 1}/{options.Rounds}: llama.cpp {llama[^1]:F1} t/s, Velo {velo[^1]:F1} t/s");
        }
        results.Add((test.Name, test.Sequences, Stats.Median(llama), Stats.Median(velo)));
    }
    if (bandwidth > 0) bandwidth = Math.Max(bandwidth, MachineProbe.ReadBandwidth(pool));
    // The share of the bandwidth a decode step's weight reads take: bytes per step × steps per second ÷ bandwidth.
    foreach (var r in results)
    {
        double? Share(double tokensPerSecond) => r.Test.StartsWith("tg", StringComparison.Ordinal)
            ? bytesPerToken * (tokensPerSecond / r.Sequences) / bandwidth : null;
        rows.Add((modelName, r.Test, r.Llama, r.Velo, Share(r.Llama), Share(r.Velo)));
    }
    if (bandwidth > 0) bandwidths.Add((modelName, bandwidth, bytesPerToken));
}
PrintHeader(nativeLibrary);
foreach (var b in bandwidths)
    Console.WriteLine($"{b.Model}: read bandwidth {b.BytesPerSecond / 1e9:F1} GB/s with {options.Threads} thread(s); a decode step reads {b.BytesPerToken / (1024.0 * 1024):F1} MiB of weights");
Console.WriteLine();
Console.WriteLine("| model | test | llama.cpp t/s | Velo t/s | Velo / llama.cpp | llama.cpp bandwidth share | Velo bandwidth share |");
Console.WriteLine("|---|---|---:|---:|---:|---:|---:|");
foreach (var r in rows)
    Console.WriteLine($"| {r.Model} | {r.Test} | {r.Llama:F1} | {r.Velo:F1} | {r.Velo / r.Llama:F2} | {Percent(r.LlamaShare)} | {Percent(r.VeloShare)} |");
return 0;

void PrintHeader(string? nativeLibrary)
{
    string loadAfter = File.ReadAllText("/proc/loadavg").Trim();
    Console.WriteLine($"{options.Threads} thread(s), median of {options.Rounds} alternating round(s); llama.cpp: LLamaSharp 0.30.0, {nativeLibrary ?? "native library not found in /proc/self/maps"}");
    // LLamaSharp's llama.cpp is built with OpenMP, whose threads spin between operations unless told otherwise: on a busy
    // machine that decides llama.cpp's figures, so the table says which policy it ran under.
    Console.WriteLine($"OMP_WAIT_POLICY={Environment.GetEnvironmentVariable("OMP_WAIT_POLICY") ?? "(unset: OpenMP's default, spinning)"}");
    Console.WriteLine($"load average before: {loadBefore}");
    Console.WriteLine($"load average after:  {loadAfter}");
}

static string Percent(double? share) => share is double s ? $"{100 * s:F0} %" : "";

// Which build of llama.cpp's CPU backend LLamaSharp chose (avx512, avx2, avx, noavx): the folder it was mapped from.
static string? LoadedNativeLibrary()
{
    foreach (string line in File.ReadLines("/proc/self/maps"))
    {
        int at = line.IndexOf('/');
        if (at >= 0 && line.EndsWith("/libggml-cpu.so", StringComparison.Ordinal))
        {
            string file = line[at..];
            return $"{Path.GetFileName(Path.GetDirectoryName(file))} variant ({file})";
        }
    }
    return null;
}

internal static class Stats
{
    public static double Median(List<double> values)
    {
        var sorted = values.Order().ToArray();
        return sorted.Length % 2 == 1 ? sorted[sorted.Length / 2] : (sorted[sorted.Length / 2 - 1] + sorted[sorted.Length / 2]) / 2;
    }
}

internal sealed record PeerTest(string Name, int Tokens, int Sequences, Func<double> RunLlama, Func<double> RunVelo);

/// <summary>llama-bench's tests through llama.cpp's C API (LLamaSharp's thin wrappers), tokens per second.</summary>
internal static class LlamaCpp
{
    /// <summary>N prompt tokens decoded in one batch (n_batch = n_ubatch = N) from an empty cache; one warm-up run first.</summary>
    public static double PromptProcessing(LLamaWeights weights, int tokens, int threads, int vocab)
    {
        using var context = weights.CreateContext(new ModelParams("")
        {
            ContextSize = (uint)tokens, BatchSize = (uint)tokens, UBatchSize = (uint)tokens, SeqMax = 1,
            Threads = threads, BatchThreads = threads,
        });
        var batch = new LLamaBatch();
        double speed = 0;
        for (int run = 0; run < 2; run++)
        {
            context.NativeHandle.MemoryClear(true);
            batch.Clear();
            for (int p = 0; p < tokens; p++) batch.Add(TokenAt(p, vocab), p, LLamaSeqId.Zero, p == tokens - 1);
            long start = Stopwatch.GetTimestamp();
            Decode(context, batch);
            context.NativeHandle.Synchronize();
            speed = tokens / Stopwatch.GetElapsedTime(start).TotalSeconds;
        }
        return speed;
    }

    /// <summary>N decode steps of the given number of sequences (one token each, all logits wanted) from an empty cache; one warm-up run first.</summary>
    public static double TextGeneration(LLamaWeights weights, int tokens, int sequences, int threads, int vocab)
    {
        using var context = weights.CreateContext(new ModelParams("")
        {
            ContextSize = (uint)(tokens * sequences), BatchSize = (uint)Math.Max(sequences, 32), UBatchSize = (uint)Math.Max(sequences, 32),
            SeqMax = (uint)sequences, Threads = threads, BatchThreads = threads,
        });
        var batch = new LLamaBatch();
        double speed = 0;
        for (int run = 0; run < 2; run++)
        {
            context.NativeHandle.MemoryClear(true);
            long start = Stopwatch.GetTimestamp();
            for (int p = 0; p < tokens; p++)
            {
                batch.Clear();
                for (int s = 0; s < sequences; s++) batch.Add(TokenAt(p + 31 * s, vocab), p, (LLamaSeqId)s, true);
                Decode(context, batch);
            }
            context.NativeHandle.Synchronize();
            speed = (double)tokens * sequences / Stopwatch.GetElapsedTime(start).TotalSeconds;
        }
        return speed;
    }

    private static void Decode(LLamaContext context, LLamaBatch batch)
    {
        var result = context.NativeHandle.Decode(batch);
        if (result != DecodeResult.Ok) throw new InvalidOperationException($"llama_decode failed: {result}");
    }

    // The same arbitrary ids as Velo's benchmark: speed does not depend on which.
    private static LLamaToken TokenAt(int position, int vocab) => (int)((position * 2654435761L + 17) % vocab);
}

/// <param name="Schemas">JSON Schemas whose grammars the grammar mode decodes under (then no pp or tg test runs); null without it.</param>
/// <param name="Greedy">Grammar mode samples greedily instead of with llama.cpp's default chain and a seed.</param>
/// <param name="LlamaGrammar">How grammar mode has llama.cpp apply the grammar.</param>
internal sealed record Options(IReadOnlyList<string> Models, int PromptTokens, int GenTokens, int Threads, int Rounds, int[] Parallel,
    IReadOnlyList<(string Name, string Schema)>? Schemas, bool Greedy, LlamaGrammarMode LlamaGrammar, bool Help)
{
    public const string Usage =
        "usage: Velo.PeerBench -m MODEL.gguf [-m MODEL2.gguf ...] [-p 512] [-n 128] [-t 2] [-r 3] [-np 1[,2,4,8]]\n" +
        "  llama-bench's pp (-p prompt tokens in one batch) and tg (-n tokens one at a time; -np sequences decoded together)\n" +
        "  in llama.cpp (LLamaSharp) and Velo, alternating round by round; prints medians and the ratio Velo / llama.cpp,\n" +
        "  and for tg the share of the read bandwidth (measured in the same run, same threads, best of before each tg test\n" +
        "  and after the last) each engine's weight reads take.\n" +
        "usage: Velo.PeerBench -m MODEL.gguf [...] (--json-schema typical | -jf SCHEMA.json [SCHEMA2.json ...]) [-n 128] [-t 2] [-r 3] [--greedy]\n" +
        "       [--llama-grammar reject|chain]\n" +
        "  grammar mode: -n tokens decoded under each JSON Schema's grammar (Velo's GBNF of it, given to both engines; documents\n" +
        "  one after another, seeds 42, 43, ..., until -n tokens) and without it, sampled with llama.cpp's defaults (top-k 40,\n" +
        "  top-p 0.95, min-p 0.05, temperature 0.8) or --greedy, the engines alternating test by test; prints medians, the share\n" +
        "  of a step the grammar adds, the ratio Velo / llama.cpp with the grammar, and whether each document is valid for its\n" +
        "  schema (the documents on stderr). 'typical' is velo bench-grammar's three schemas (person, reasoning, catalog).\n" +
        "  llama.cpp applies the grammar as its common sampler does (llama-server's json_schema): 'reject' (the default)\n" +
        "  checks the token sampled without it and applies it to the whole vocabulary only when that token fails; 'chain'\n" +
        "  applies it to the whole vocabulary every step (grammar_first). Velo masks the whole vocabulary every step.";

    public static Options Parse(string[] args)
    {
        var models = new List<string>();
        int prompt = 512, gen = 128, threads = 2, rounds = 3;
        int[] parallel = [1];
        List<(string Name, string Schema)>? schemas = null;
        bool greedy = false, help = false;
        var llamaGrammar = LlamaGrammarMode.Reject;
        for (int i = 0; i < args.Length; i++)
        {
            string Value() => i + 1 < args.Length ? args[++i] : throw new ArgumentException($"{args[i]} needs a value");
            int Count(string name, int min) =>
                int.TryParse(Value(), NumberStyles.None, CultureInfo.InvariantCulture, out int n) && n >= min
                    ? n : throw new ArgumentException($"{name}: '{args[i]}' is not a number >= {min}");
            switch (args[i])
            {
                case "-m" or "--model": models.Add(Value()); break;
                case "-p" or "--n-prompt": prompt = Count("--n-prompt", 0); break;
                case "-n" or "--n-gen": gen = Count("--n-gen", 0); break;
                case "-t" or "--threads": threads = Count("--threads", 1); break;
                case "-r" or "--repetitions": rounds = Count("--repetitions", 1); break;
                case "-np" or "--parallel":
                    parallel = Value().Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
                        .Select(s => int.TryParse(s, NumberStyles.None, CultureInfo.InvariantCulture, out int n) && n >= 1
                            ? n : throw new ArgumentException($"--parallel: '{s}' is not a positive number"))
                        .ToArray();
                    if (parallel.Length == 0) throw new ArgumentException("--parallel: give at least one count");
                    break;
                case "--json-schema" or "-js":
                    string which = Value();
                    if (which != "typical") throw new ArgumentException($"--json-schema: '{which}' is not a set of schemas (only 'typical' is)");
                    (schemas ??= []).AddRange(GrammarBenchmark.TypicalSchemas);
                    break;
                case "--json-schema-file" or "-jf":
                    string first = Value();
                    var files = new List<string> { first };
                    while (i + 1 < args.Length && !args[i + 1].StartsWith('-')) files.Add(args[++i]);
                    foreach (string file in files)
                    {
                        if (!File.Exists(file)) throw new ArgumentException($"schema file '{file}' not found");
                        (schemas ??= []).Add((Path.GetFileNameWithoutExtension(file), File.ReadAllText(file)));
                    }
                    break;
                case "--greedy": greedy = true; break;
                case "--llama-grammar":
                    string mode = Value();
                    llamaGrammar = mode switch
                    {
                        "reject" => LlamaGrammarMode.Reject,
                        "chain" => LlamaGrammarMode.Chain,
                        _ => throw new ArgumentException($"--llama-grammar: '{mode}' is neither 'reject' nor 'chain'"),
                    };
                    break;
                case "-h" or "--help": help = true; break;
                default: throw new ArgumentException($"unknown argument '{args[i]}'");
            }
        }
        if (!help && models.Count == 0) throw new ArgumentException("give a model with -m");
        foreach (string m in models)
            if (!File.Exists(m)) throw new ArgumentException($"model file '{m}' not found");
        if (schemas != null && gen == 0) throw new ArgumentException("grammar mode needs -n above 0");
        foreach (var (name, schema) in schemas ?? [])
        {
            try { GrammarBenchmark.Compile(schema); }
            catch (Exception e) when (e is JsonException or ArgumentException) { throw new ArgumentException($"schema '{name}': {e.Message}"); }
        }
        if (prompt == 0 && gen == 0) throw new ArgumentException("nothing to run: -p and -n are both 0");
        return new Options(models, prompt, gen, threads, rounds, parallel, schemas, greedy, llamaGrammar, help);
    }
}
