using System.Buffers;
using System.Diagnostics;
using System.Runtime.InteropServices;
using System.Text;
using System.Text.Json;
using System.Text.Unicode;
using Json.Schema;
using LLama;
using LLama.Common;
using LLama.Native;
using Velo.Diagnostics;
using Velo.Generation;
using Velo.Inference;
using Velo.Sampling.Grammars;
using Velo.Threading;

/// <summary>One schema's figures: medians of the timed rounds, the mean tokens per document and what the documents were.</summary>
internal sealed record GrammarPeerRow(string Model, string Schema, double LlamaPlain, double LlamaGrammar, double VeloPlain, double VeloGrammar,
    double LlamaTokensPerDocument, double VeloTokensPerDocument, string LlamaDocuments, string VeloDocuments);

/// <summary>One generation: the tokens it produced, the seconds after its first (whose time is the prompt's), its text, and
/// where its bytes stopped being UTF-8, if they did (a grammar constrains characters; bytes that form none escape it).</summary>
internal readonly record struct Generation(int Tokens, double TimedSeconds, string Text, string? NotUtf8)
{
    /// <summary>A generation from its tokens' bytes in order.</summary>
    public static Generation FromPieces(List<(int Id, byte[] Bytes)> pieces, double timedSeconds)
    {
        byte[] bytes = pieces.SelectMany(p => p.Bytes).ToArray();
        return new Generation(pieces.Count, pieces.Count > 0 ? timedSeconds : 0, Encoding.UTF8.GetString(bytes), FirstNonUtf8Token(pieces));
    }

    /// <summary>The first token after which the text is not UTF-8 (but for a character the token limit may cut at the end),
    /// with its bytes; null when there is none.</summary>
    private static string? FirstNonUtf8Token(List<(int Id, byte[] Bytes)> pieces)
    {
        var bytes = new List<byte>();
        foreach (var (id, piece) in pieces)
        {
            bytes.AddRange(piece);
            var span = CollectionsMarshal.AsSpan(bytes);
            if (Utf8.ToUtf16(span, new char[span.Length], out _, out _, replaceInvalidSequences: false, isFinalBlock: false)
                is not (OperationStatus.Done or OperationStatus.NeedMoreData))
                return $"token {id} ({Convert.ToHexString(piece)})";
        }
        return null;
    }
}

/// <summary>
/// Decode speed with a JSON Schema's grammar and without, in llama.cpp (its grammar sampler, the one behind
/// <c>json_schema</c>, by default as its common sampler applies it) and in Velo (the code of <c>velo bench-grammar</c>),
/// on the same file. Both engines get the same GBNF text, Velo's compilation of the schema, and the same sampling: llama.cpp's defaults (top-k 40, top-p 0.95,
/// min-p 0.05, temperature 0.8) with a seed, or greedy. A document that ends before -n tokens is followed by another
/// (the next seed) until -n tokens are generated, so short documents still time enough steps.
/// </summary>
internal static class GrammarPeer
{
    private const ulong FirstSeed = 42;

    public static List<GrammarPeerRow> Run(string path, Options options)
    {
        string modelName = Path.GetFileName(path);
        var schemas = options.Schemas!;
        var grammars = schemas.Select(s => GrammarBenchmark.Compile(s.Schema)).ToList();
        var validators = schemas.Select(s => JsonSchema.FromText(s.Schema)).ToList();
        // The prompt and each decoded token stay in the context: room for both.
        int contextLength = options.GenTokens + 64;

        using var veloModel = LanguageModel.Load(path);
        using var pool = new WorkerPool(options.Threads);
        using var generator = new TextGenerator(veloModel, contextLength, pool: pool);
        int[] veloPrompt = veloModel.Tokenizer.Encode(GrammarBenchmark.PromptText, addSpecial: true);

        using var llamaWeights = LLamaWeights.LoadFromFile(new ModelParams(path) { GpuLayerCount = 0 });
        using var llamaContext = llamaWeights.CreateContext(new ModelParams("")
        {
            ContextSize = (uint)contextLength, BatchSize = 64, UBatchSize = 64, SeqMax = 1, Threads = options.Threads, BatchThreads = options.Threads,
        });
        LLamaToken[] llamaPrompt = llamaWeights.Tokenize(GrammarBenchmark.PromptText, add_bos: true, special: false, Encoding.UTF8);

        // Test 0 decodes without a grammar, test 1 + s under schema s; each engine's figures per test, one per round.
        int testCount = 1 + schemas.Count;
        var llama = Enumerable.Range(0, testCount).Select(_ => new List<double>()).ToArray();
        var velo = Enumerable.Range(0, testCount).Select(_ => new List<double>()).ToArray();
        var llamaDocuments = Enumerable.Range(0, testCount).Select(_ => new List<string>()).ToArray();
        var veloDocuments = Enumerable.Range(0, testCount).Select(_ => new List<string>()).ToArray();
        // Tokens and documents over the timed rounds, for the mean length of a document.
        var llamaCounts = new (int Tokens, int Documents)[testCount];
        var veloCounts = new (int Tokens, int Documents)[testCount];
        for (int round = -1; round < options.Rounds; round++)
        {
            // Round -1 warms both engines up on every test, a few tokens each; then each test runs in both engines in
            // turn, which one goes first alternating by round, so plain and constrained decoding share the same minutes.
            int tokens = round < 0 ? Math.Min(16, options.GenTokens) : options.GenTokens;
            for (int test = 0; test < testCount; test++)
            {
                Grammar? grammar = test == 0 ? null : grammars[test - 1];
                Generation RunLlama(int maxTokens, ulong seed) =>
                    LlamaGrammar.Generate(llamaWeights, llamaContext, llamaPrompt, maxTokens, grammar?.Source, options.Greedy ? null : seed,
                        options.LlamaGrammar);
                Generation RunVelo(int maxTokens, ulong seed)
                {
                    var sampling = options.Greedy ? SamplerOptions.Greedy : new SamplerOptions { Seed = seed };
                    var (stats, ids) = GrammarBenchmark.Decode(generator, veloPrompt, maxTokens, sampling, grammar);
                    return Generation.FromPieces(ids.Select(id => (id, veloModel.Tokenizer.TokenBytes(id, skipSpecial: true).ToArray())).ToList(),
                        stats.GenerationTime.TotalSeconds);
                }
                (double Speed, List<Generation> Runs) l, v;
                if (round % 2 == 0) { l = Measure(RunLlama, tokens); v = Measure(RunVelo, tokens); }
                else { v = Measure(RunVelo, tokens); l = Measure(RunLlama, tokens); }
                if (round < 0) continue;
                llama[test].Add(l.Speed);
                velo[test].Add(v.Speed);
                llamaCounts[test] = (llamaCounts[test].Tokens + l.Runs.Sum(r => r.Tokens), llamaCounts[test].Documents + l.Runs.Count);
                veloCounts[test] = (veloCounts[test].Tokens + v.Runs.Sum(r => r.Tokens), veloCounts[test].Documents + v.Runs.Count);
                string name = test == 0 ? "plain" : schemas[test - 1].Name;
                Console.Error.WriteLine($"{modelName} {name} round {round + 1}/{options.Rounds}: llama.cpp {l.Speed:F1} t/s ({l.Runs.Count} document(s)), " +
                    $"Velo {v.Speed:F1} t/s ({v.Runs.Count} document(s))");
                if (test == 0) continue;
                foreach (var (engine, runs, documents) in (ReadOnlySpan<(string, List<Generation>, List<string>)>)
                    [("llama.cpp", l.Runs, llamaDocuments[test]), ("Velo", v.Runs, veloDocuments[test])])
                    for (int r = 0; r < runs.Count; r++)
                    {
                        // Only the last generation can have been cut short by the token limit.
                        var (verdict, errors) = Verdict(validators[test - 1], runs[r], reachedLimit: r == runs.Count - 1 && runs.Sum(g => g.Tokens) >= tokens);
                        documents.Add(verdict);
                        // The last round's documents on stderr, each once (greedy decoding repeats a short one).
                        if (round == options.Rounds - 1 && (r == 0 || runs[r].Text != runs[r - 1].Text))
                            Console.Error.WriteLine($"{modelName} {name} {engine} ({verdict}{errors}{(runs[r].NotUtf8 is string at ? $", not UTF-8 from {at}" : "")}, " +
                                $"{runs[r].Tokens} tokens): {runs[r].Text}");
                    }
            }
        }

        return schemas.Select((s, i) => new GrammarPeerRow(modelName, s.Name, Stats.Median(llama[0]), Stats.Median(llama[1 + i]),
            Stats.Median(velo[0]), Stats.Median(velo[1 + i]), (double)llamaCounts[1 + i].Tokens / llamaCounts[1 + i].Documents,
            (double)veloCounts[1 + i].Tokens / veloCounts[1 + i].Documents,
            Summary(llamaDocuments[1 + i]), Summary(veloDocuments[1 + i]))).ToList();
    }

    /// <summary>Generations after one another (seeds 42, 43, ...) until <paramref name="tokens"/> are generated (a plain one
    /// makes them all at once); the timed tokens per second over all of them, and the generations.</summary>
    private static (double Speed, List<Generation> Runs) Measure(Func<int, ulong, Generation> generate, int tokens)
    {
        var runs = new List<Generation>();
        int generated = 0, timedTokens = 0;
        double seconds = 0;
        while (generated < tokens)
        {
            var run = generate(tokens - generated, FirstSeed + (ulong)runs.Count);
            runs.Add(run);
            if (run.Tokens == 0) break;
            generated += run.Tokens;
            timedTokens += run.Tokens - 1;
            seconds += run.TimedSeconds;
        }
        return (timedTokens / Math.Max(seconds, 1e-9), runs);
    }

    public static void Print(IEnumerable<GrammarPeerRow> rows, Options options)
    {
        var d = new SamplerOptions();
        string sampling = options.Greedy ? "greedy"
            : $"sampled (top-k {d.TopK}, top-p {d.TopP}, min-p {d.MinP}, temperature {d.Temperature}; seeds {FirstSeed}, {FirstSeed + 1}, ...)";
        Console.WriteLine(options.LlamaGrammar == LlamaGrammarMode.Reject
            ? "llama.cpp's grammar: checks the token sampled without it, applied to the whole vocabulary only when that token fails (its common sampler, llama-server's json_schema)"
            : "llama.cpp's grammar: the first stage of its sampler chain, applied to the whole vocabulary every step (grammar_first)");
        Console.WriteLine($"{options.GenTokens} tokens after \"{GrammarBenchmark.PromptText}\", {sampling}: plain in one generation past end-of-generation, "
            + "under a grammar in documents one after another; t/s after each document's first token; grammar share: the part of a constrained step the grammar adds (1 - constrained / plain)");
        Console.WriteLine();
        Console.WriteLine("| model | schema | tokens per document llama.cpp / Velo | llama.cpp t/s plain / grammar (grammar share) | Velo t/s plain / grammar (grammar share) | Velo / llama.cpp with grammar | documents llama.cpp / Velo |");
        Console.WriteLine("|---|---|---:|---:|---:|---:|---|");
        foreach (var r in rows)
            Console.WriteLine($"| {r.Model} | {r.Schema} | {r.LlamaTokensPerDocument:F0} / {r.VeloTokensPerDocument:F0} | {r.LlamaPlain:F1} / {r.LlamaGrammar:F1} ({Share(r.LlamaPlain, r.LlamaGrammar)}) | " +
                $"{r.VeloPlain:F1} / {r.VeloGrammar:F1} ({Share(r.VeloPlain, r.VeloGrammar)}) | {r.VeloGrammar / r.LlamaGrammar:F2} | {r.LlamaDocuments} / {r.VeloDocuments} |");
    }

    private static string Share(double plain, double constrained) => $"{100 * (1 - constrained / plain):F0} %";

    /// <summary>What a run produced: a document valid for the schema, one cut short at the token limit, or an invalid one
    /// (with the schema's complaints); and whether its bytes were not UTF-8.</summary>
    private static (string Verdict, string Errors) Verdict(JsonSchema validator, Generation run, bool reachedLimit)
    {
        string utf8 = run.NotUtf8 == null ? "" : " not UTF-8";
        JsonDocument document;
        try { document = JsonDocument.Parse(run.Text); }
        catch (JsonException) { return ((reachedLimit ? "cut" : "not JSON") + utf8, ""); }
        using (document)
        {
            var result = validator.Evaluate(document.RootElement, new EvaluationOptions { RequireFormatValidation = true, OutputFormat = OutputFormat.List });
            if (result.IsValid) return ("valid" + utf8, "");
            var errors = (result.Details ?? []).Where(d => d.Errors != null)
                .SelectMany(d => d.Errors!.Values.Select(e => $"{d.InstanceLocation}: {e}"));
            return ("INVALID" + utf8, ": " + string.Join("; ", errors));
        }
    }

    /// <summary>The rounds' verdicts counted: "3 valid", "2 cut, 1 valid".</summary>
    private static string Summary(List<string> verdicts) =>
        string.Join(", ", verdicts.GroupBy(v => v).OrderBy(g => g.Key, StringComparer.Ordinal).Select(g => $"{g.Count()} {g.Key}"));
}

/// <summary>How llama.cpp applies the grammar.</summary>
internal enum LlamaGrammarMode
{
    /// <summary>llama.cpp's common sampler (llama-server's <c>json_schema</c>, llama-cli's <c>--json-schema</c>): sample
    /// without the grammar, check that one token against it, and only when it fails apply the grammar to the whole
    /// vocabulary and sample again.</summary>
    Reject,

    /// <summary>The grammar as the first stage of the sampler chain, applied to the whole vocabulary every step (the
    /// common sampler's <c>grammar_first</c>).</summary>
    Chain,
}

/// <summary>Generation under a GBNF grammar through llama.cpp's sampler API, the way its common sampler does it.</summary>
internal static class LlamaGrammar
{
    /// <summary>Errors llama.cpp logged so far (its grammar parser reports a rejected grammar only there).</summary>
    public static int ErrorsLogged;

    /// <summary>
    /// Generation after <paramref name="prompt"/> from an empty cache: without a grammar exactly <paramref name="maxTokens"/>
    /// tokens (past end-of-generation), with one until it samples end-of-generation or <paramref name="maxTokens"/>, as
    /// Velo's runs. Sampling is greedy without a seed, else the chain of llama.cpp's defaults that Velo's defaults copy.
    /// </summary>
    public static Generation Generate(LLamaWeights weights, LLamaContext context, LLamaToken[] prompt, int maxTokens, string? gbnf, ulong? seed,
        LlamaGrammarMode mode)
    {
        var vocab = weights.Vocab;
        using var sampler = new GrammarSampler(weights, gbnf, seed, mode);
        context.NativeHandle.MemoryClear(true);
        var batch = new LLamaBatch();
        batch.AddRange(prompt, 0, LLamaSeqId.Zero, true);
        Decode(context, batch);
        LLamaToken token = sampler.Sample(context, prompt.Length - 1);
        var pieces = new List<(int Id, byte[] Bytes)>();
        Span<byte> piece = stackalloc byte[256];
        int generated = 0;
        long start = Stopwatch.GetTimestamp();
        while (gbnf == null || !token.IsEndOfGeneration(vocab))
        {
            if (++generated == 1) start = Stopwatch.GetTimestamp();
            int length = NativeApi.llama_token_to_piece(vocab, token, piece, 0, false);
            pieces.Add(((int)token, piece[..Math.Max(length, 0)].ToArray()));
            if (generated >= maxTokens) break;
            batch.Clear();
            batch.Add(token, prompt.Length + generated - 1, LLamaSeqId.Zero, true);
            Decode(context, batch);
            token = sampler.Sample(context, 0);
        }
        double seconds = Stopwatch.GetElapsedTime(start).TotalSeconds;
        return Generation.FromPieces(pieces, seconds);
    }

    private static void Decode(LLamaContext context, LLamaBatch batch)
    {
        var result = context.NativeHandle.Decode(batch);
        if (result != DecodeResult.Ok) throw new InvalidOperationException($"llama_decode failed: {result}");
    }

    /// <summary>llama.cpp's common_sampler_sample and common_sampler_accept, over LLamaSharp's chain handles: a sampling
    /// chain and, apart from it (<see cref="LlamaGrammarMode.Reject"/>) or at its head (<see cref="LlamaGrammarMode.Chain"/>), the grammar.</summary>
    private sealed class GrammarSampler : IDisposable
    {
        private readonly SafeLLamaSamplerChainHandle _chain;
        private readonly SafeLLamaSamplerChainHandle? _grammar;
        private readonly LLamaTokenData[] _candidates;
        private readonly LLamaTokenData[] _single = new LLamaTokenData[1];

        public GrammarSampler(LLamaWeights weights, string? gbnf, ulong? seed, LlamaGrammarMode mode)
        {
            _candidates = new LLamaTokenData[weights.Vocab.Count];
            _chain = SafeLLamaSamplerChainHandle.Create(LLamaSamplerChainParams.Default());
            if (gbnf != null)
            {
                var grammarChain = mode == LlamaGrammarMode.Chain ? _chain : _grammar = SafeLLamaSamplerChainHandle.Create(LLamaSamplerChainParams.Default());
                int errors = Volatile.Read(ref ErrorsLogged);
                grammarChain.AddGrammar(weights.Vocab, gbnf, "root");
                // A grammar llama.cpp rejects leaves a null stage in the chain, which would crash the first sample.
                if (Volatile.Read(ref ErrorsLogged) != errors) throw new InvalidOperationException("llama.cpp rejected the grammar (its error is above):\n" + gbnf);
            }
            if (seed is ulong value)
            {
                var defaults = new SamplerOptions();
                _chain.AddTopK(defaults.TopK);
                _chain.AddTopP(defaults.TopP, 1);
                _chain.AddMinP(defaults.MinP, 1);
                _chain.AddTemperature(defaults.Temperature);
                _chain.AddDistributionSampler((uint)value);
            }
            else _chain.AddGreedySampler();
        }

        /// <summary>Samples from the logits of the batch's token <paramref name="index"/> and accepts the token.</summary>
        public LLamaToken Sample(LLamaContext context, int index)
        {
            if (_grammar == null) return _chain.Sample(context.NativeHandle, index); // samples and accepts
            var logits = context.NativeHandle.GetLogitsIth(index);
            LLamaToken token = Apply(logits, withGrammar: false);
            _single[0] = new LLamaTokenData(token, 1, 0);
            using (LLamaTokenDataArrayNative.Create(new LLamaTokenDataArray(_single), out var single))
                _grammar.Apply(ref single);
            if (float.IsNegativeInfinity(_single[0].Logit)) token = Apply(logits, withGrammar: true);
            _grammar.Accept(token);
            _chain.Accept(token);
            return token;
        }

        private LLamaToken Apply(ReadOnlySpan<float> logits, bool withGrammar)
        {
            var array = LLamaTokenDataArray.Create(logits, _candidates);
            using var pin = LLamaTokenDataArrayNative.Create(array, out var native);
            if (withGrammar) _grammar!.Apply(ref native);
            _chain.Apply(ref native);
            return native.Data[checked((int)native.Selected)].ID;
        }

        public void Dispose()
        {
            _grammar?.Dispose();
            _chain.Dispose();
        }
    }
}
