using Velo.Generation;
using Velo.Inference;
using Velo.Threading;

namespace Velo.Tools;

/// <summary>What <see cref="ModelComparison"/> measured of one model; the divergence is from the first model's distributions (null for the first).</summary>
public sealed record ModelReport(
    string Path, long FileBytes, long WeightBytes, long Parameters, double Perplexity, double PerplexityError,
    double DecodeTokensPerSecond, KlDivergenceSummary? Divergence);

/// <summary>
/// The accuracy report a compressed model needs beside its original: size, perplexity over a held-out text, the KL
/// divergence of its next-token distributions from the original's with top-token agreement, and decode speed.
/// Perplexity follows llama-perplexity's convention (<see cref="Perplexity"/>); the divergence is D(original ‖ model).
/// </summary>
public static class ModelComparison
{
    /// <summary>Refuses two models whose token ids mean different texts: their distributions would not be comparable.</summary>
    public static void RequireSameTokenizer(LanguageModel a, string roleA, LanguageModel b, string roleB)
    {
        string where = $"the {roleA} ({a.Path}) and the {roleB} ({b.Path}) do not share a tokenizer";
        if (a.Info.VocabSize != b.Info.VocabSize || a.Tokenizer.VocabSize != b.Tokenizer.VocabSize)
            throw new ArgumentException($"{where}: {a.Tokenizer.VocabSize} tokens against {b.Tokenizer.VocabSize}");
        for (int id = 0; id < a.Tokenizer.VocabSize; id++)
            if (a.Tokenizer.TokenText(id) != b.Tokenizer.TokenText(id))
                throw new ArgumentException($"{where}: token {id} is '{a.Tokenizer.TokenText(id)}' in one and '{b.Tokenizer.TokenText(id)}' in the other");
    }

    /// <summary>Measures every model; the first is the reference the others' divergence is measured from.</summary>
    /// <param name="decodeTokens">Tokens decoded greedily from BOS for the speed figure (0: not measured).</param>
    public static IReadOnlyList<ModelReport> Compare(
        IReadOnlyList<string> modelPaths, string text, PerplexitySettings settings, int threads, int decodeTokens, Action<string>? progress = null)
    {
        if (modelPaths.Count == 0) throw new ArgumentException("give at least one model");
        string basePath = Path.Combine(Path.GetTempPath(), $"velo-eval-{Environment.ProcessId}-{Guid.NewGuid():N}.kld");
        var reports = new List<ModelReport>();
        using var pool = new WorkerPool(threads);
        using var reference = LanguageModel.Load(modelPaths[0]);
        int[] tokens = reference.Tokenizer.Encode(text, addSpecial: true);
        try
        {
            for (int i = 0; i < modelPaths.Count; i++)
            {
                progress?.Invoke(modelPaths[i]);
                using var loaded = i == 0 ? null : LanguageModel.Load(modelPaths[i]);
                var model = loaded ?? reference;
                if (loaded != null) RequireSameTokenizer(reference, "reference model", loaded, "model");
                int bos = model.Tokenizer.AddBos ? model.Tokenizer.BosId : -1;
                PerplexityResult result;
                using (var perplexity = new Perplexity(model.Model, settings, pool))
                using (var writer = i == 0 ? new LogProbWriter(basePath) : null)
                using (var reader = i == 0 ? null : new LogProbReader(basePath))
                    result = perplexity.Run(tokens, bos, writer, reader);
                double speed = decodeTokens > 0 ? DecodeSpeed(model, pool, decodeTokens) : double.NaN;
                reports.Add(new ModelReport(model.Path, new FileInfo(model.Path).Length, model.Model.WeightBytes,
                    model.Model.File.Tensors.Sum(t => t.ElementCount), result.Perplexity, result.PerplexityError, speed, result.KlDivergence));
            }
        }
        finally
        {
            File.Delete(basePath);
        }
        return reports;
    }

    /// <summary>Greedy decode tokens/s after BOS alone, end-of-generation ignored, the first token (the prompt's) not counted.</summary>
    private static double DecodeSpeed(LanguageModel model, WorkerPool pool, int tokens)
    {
        int context = Math.Min(model.Info.ContextLength, tokens + 1);
        using var generator = new TextGenerator(model, contextLength: context, pool: pool);
        var options = new GenerationOptions { MaxTokens = context - 1, IgnoreEos = true, Sampling = new SamplerOptions { Temperature = 0 } };
        foreach (var _ in generator.Generate([model.Tokenizer.BosId], options)) { }
        return generator.LastStats.GenerationTokensPerSecond;
    }
}
