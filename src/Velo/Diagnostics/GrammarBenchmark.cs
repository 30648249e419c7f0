using System.Diagnostics;
using System.Text.Json;
using Velo.Generation;
using Velo.Inference;
using Velo.Sampling;
using Velo.Sampling.Grammars;

namespace Velo.Diagnostics;

/// <summary>What constrained decoding cost on one schema.</summary>
/// <param name="MaskMicroseconds">Mean time per generated token to compute the mask (from fresh caches, as a new request
/// starts), apply it to the vocabulary's candidates and move the matcher past the token.</param>
/// <param name="ColdMaskMicroseconds">The same for the tokens whose grammar state had no cached mask yet.</param>
/// <param name="ConstrainedTokensPerSecond">Median decode speed with the schema.</param>
public sealed record GrammarBenchmarkResult(string Schema, int Tokens, double MaskMicroseconds, double ColdMaskMicroseconds, int ColdSteps,
    double ConstrainedTokensPerSecond, string Output);

/// <summary>
/// The cost of grammar-constrained decoding: for each schema, decode speed with and without it (alternating rounds,
/// medians), and the mask's own cost per token, replayed on the tokens the constrained run produced.
/// </summary>
public static class GrammarBenchmark
{
    /// <summary>Three typical schemas: a small record, OpenAI's reasoning example, and a catalog of nested objects.</summary>
    public static IReadOnlyList<(string Name, string Schema)> TypicalSchemas { get; } =
    [
        ("person", """{"type":"object","properties":{"name":{"type":"string","maxLength":24},"age":{"type":"integer"},"city":{"enum":["Oslo","Lima","Pune","Kyoto"]},"tags":{"type":"array","items":{"type":"string","maxLength":12},"maxItems":3}},"required":["name","age","city","tags"],"additionalProperties":false}"""),
        ("reasoning", """{"type":"object","properties":{"steps":{"type":"array","items":{"type":"object","properties":{"explanation":{"type":"string"},"output":{"type":"string"}},"required":["explanation","output"],"additionalProperties":false}},"final_answer":{"type":"string"}},"required":["steps","final_answer"],"additionalProperties":false}"""),
        ("catalog", """{"type":"array","maxItems":4,"items":{"type":"object","properties":{"id":{"type":"integer"},"name":{"type":"string","maxLength":20},"price":{"type":"number"},"category":{"enum":["book","tool","toy","food","game"]},"in_stock":{"type":"boolean"},"size":{"type":"object","properties":{"w":{"type":"number"},"h":{"type":"number"}},"required":["w","h"],"additionalProperties":false}},"required":["id","name","price","category","in_stock","size"],"additionalProperties":false}}"""),
    ];

    /// <summary>What every run continues, in the model's own tokens (with its start token).</summary>
    public const string PromptText = "Here is the data as JSON:";

    /// <summary>The grammar of a JSON Schema given as text.</summary>
    public static Grammar Compile(string schema)
    {
        using var document = JsonDocument.Parse(schema);
        return Grammar.FromJsonSchema(document.RootElement);
    }

    public static (double PlainTokensPerSecond, List<GrammarBenchmarkResult> Results) Run(LanguageModel model, TextGenerator generator, int tokens, int rounds,
        IReadOnlyList<(string Name, string Schema)> schemas, Action<string>? log = null)
    {
        int[] prompt = model.Tokenizer.Encode(PromptText, addSpecial: true);
        var sampling = new SamplerOptions { Temperature = 0.8f, Seed = 42 };
        var grammars = schemas.Select(s => Compile(s.Schema)).ToList();

        var plain = new List<double>();
        var constrained = grammars.Select(_ => new List<double>()).ToList();
        var outputs = new List<int>[grammars.Count];
        for (int round = -1; round < rounds; round++) // round -1 warms up
        {
            var plainStats = Decode(generator, prompt, tokens, sampling, grammar: null).Stats;
            if (round >= 0) plain.Add(plainStats.GenerationTokensPerSecond);
            for (int g = 0; g < grammars.Count; g++)
            {
                (var stats, outputs[g]) = Decode(generator, prompt, tokens, sampling, grammars[g]);
                if (round >= 0) constrained[g].Add(stats.GenerationTokensPerSecond);
            }
            log?.Invoke($"round {round + 1}/{rounds}: plain {(round >= 0 ? plain[^1] : 0):F2} tokens/s");
        }

        var results = new List<GrammarBenchmarkResult>();
        var logits = new float[model.Info.VocabSize];
        var random = new Random(1);
        for (int i = 0; i < logits.Length; i++) logits[i] = (float)random.NextDouble();
        var candidates = new Candidates(model.Info.VocabSize);
        for (int g = 0; g < grammars.Count; g++)
        {
            // Replay: what the mask cost while these tokens were generated, from fresh caches.
            var matcher = new GrammarMatcher(grammars[g], model.Tokenizer, model.Info.VocabSize);
            double total = 0, cold = 0;
            int coldSteps = 0;
            foreach (int token in outputs[g])
            {
                bool isCold = !matcher.HasCachedMask;
                long start = Stopwatch.GetTimestamp();
                candidates.Reset(logits);
                candidates.Retain(matcher.NextTokens());
                matcher.Accept(token);
                double elapsed = Stopwatch.GetElapsedTime(start).TotalMicroseconds;
                total += elapsed;
                if (isCold)
                {
                    cold += elapsed;
                    coldSteps++;
                }
            }
            int count = Math.Max(outputs[g].Count, 1);
            results.Add(new GrammarBenchmarkResult(schemas[g].Name, outputs[g].Count, total / count, cold / Math.Max(coldSteps, 1), coldSteps,
                Median(constrained[g]), model.Tokenizer.Decode(outputs[g].ToArray(), skipSpecial: true)));
        }
        return (Median(plain), results);
    }

    /// <summary>
    /// One generation after <paramref name="prompt"/>: without a grammar exactly <paramref name="maxTokens"/> tokens (past
    /// end-of-generation), with one until its document is complete or <paramref name="maxTokens"/>. Returns the
    /// generation's counts and timings and the tokens generated.
    /// </summary>
    public static (GenerationStats Stats, List<int> Tokens) Decode(TextGenerator generator, int[] prompt, int maxTokens, SamplerOptions sampling, Grammar? grammar)
    {
        var options = new GenerationOptions { MaxTokens = maxTokens, Sampling = sampling, IgnoreEos = grammar == null, Grammar = grammar };
        var tokens = new List<int>();
        foreach (var piece in generator.Generate(prompt, options)) tokens.Add(piece.TokenId);
        return (generator.LastStats, tokens);
    }

    private static double Median(List<double> values) => values.Count == 0 ? 0 : values.Order().ElementAt(values.Count / 2);
}
