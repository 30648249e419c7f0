using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using Velo.Inference;
using Velo.Threading;

namespace Velo.Cli.Commands;

/// <summary>
/// <c>velo perplexity</c>: a model's perplexity over a text, printed as llama.cpp's llama-perplexity prints it, and
/// the KL divergence of its next-token distributions from a recorded base model's.
/// </summary>
internal static class PerplexityCommand
{
    public static Command Create()
    {
        var model = CommonOptions.Model();
        var textFile = new Option<FileInfo?>("--file", "-f") { Description = "Text to score (with --kl-divergence it may be left out: the base file holds the tokens)" };
        var context = new Option<int>("--ctx-size", "-c") { Description = "Tokens per chunk; the second half of each chunk is scored", DefaultValueFactory = _ => 512 }
            .AtLeast(4, "half of each chunk is context for the other half");
        var batch = new Option<int>("--batch-size", "-b") { Description = "Tokens per forward pass (at most the chunk size)", DefaultValueFactory = _ => 512 }.AtLeast(1);
        var chunks = new Option<int>("--chunks") { Description = "Score at most this many chunks (0: all)" }.AtLeast(0, "0 means all");
        var threads = CommonOptions.Threads();
        var klBase = new Option<string?>("--kl-divergence-base") { Description = "Record the model's log-probabilities to this file, or with --kl-divergence read them from it" };
        var cacheTypeK = CommonOptions.CacheTypeK();
        var cacheTypeV = CommonOptions.CacheTypeV();
        var kl = new Option<bool>("--kl-divergence") { Description = "Compare against the base file: mean KL divergence, its 99th percentile, top-token agreement" };

        var command = new Command("perplexity", "Measure perplexity over a text (llama.cpp's convention), or KL divergence against a base model")
        {
            model, textFile, context, batch, chunks, threads, klBase, kl, cacheTypeK, cacheTypeV,
        };
        command.SetAction(parse => CommonOptions.Guard(() => Run(
            parse.GetValue(model)!, parse.GetValue(textFile), parse.GetValue(klBase), parse.GetValue(kl), parse.GetValue(threads),
            new PerplexitySettings
            {
                ContextLength = parse.GetValue(context), BatchSize = parse.GetValue(batch), MaxChunks = parse.GetValue(chunks),
                CacheTypes = CommonOptions.CacheTypes(parse, cacheTypeK, cacheTypeV),
            })));
        return command;
    }

    private static int Run(string modelPath, FileInfo? textFile, string? klBasePath, bool compare, int threads, PerplexitySettings settings)
    {
        if (compare && klBasePath == null) throw new ArgumentException("--kl-divergence needs --kl-divergence-base FILE, the base recorded earlier");
        if (textFile == null && !compare) throw new ArgumentException("give the text to score with -f FILE");

        using var model = LanguageModel.Load(modelPath);
        using var reader = compare ? new LogProbReader(klBasePath!) : null;
        int[] tokens;
        if (textFile != null)
        {
            Console.Error.WriteLine("perplexity: tokenizing the input ..");
            tokens = model.Tokenizer.Encode(File.ReadAllText(textFile.FullName), addSpecial: true);
        }
        else
        {
            tokens = reader!.Tokens;
        }
        if (reader != null && settings.ContextLength != reader.ContextLength)
            settings = settings with { ContextLength = reader.ContextLength };
        int bos = model.Tokenizer.AddBos ? model.Tokenizer.BosId : -1;

        using var pool = new WorkerPool(threads);
        using var perplexity = new Perplexity(model.Model, settings, pool);
        using var writer = klBasePath != null && !compare ? new LogProbWriter(klBasePath) : null;
        int chunkCount = perplexity.ChunkCount(tokens.Length);
        Console.Error.WriteLine(Invariant(
            $"perplexity: {tokens.Length} tokens, {chunkCount} chunks, n_ctx={settings.ContextLength}, batch_size={settings.BatchSize}, n_seq={perplexity.ChunksPerPass}, {perplexity.ScoredPerChunk} tokens scored per chunk"));

        var clock = Stopwatch.StartNew();
        var result = perplexity.Run(tokens, bos, writer, reader, (chunk, ppl) =>
        {
            Console.Out.Write(Invariant($"[{chunk + 1}]{ppl:F4},"));
            Console.Out.Flush();
        });
        Console.Out.WriteLine();
        Console.Out.WriteLine(Invariant($"Final estimate: PPL = {result.Perplexity:F4} +/- {result.PerplexityError:F5}"));
        if (result.KlDivergence is { } d)
        {
            Console.Out.WriteLine(Invariant($"Mean KLD: {d.Mean:F6} +/- {d.MeanError:F6}"));
            Console.Out.WriteLine(Invariant($"Median KLD: {d.Median:F6}"));
            Console.Out.WriteLine(Invariant($"99.0% KLD: {d.Percentile99:F6}"));
            Console.Out.WriteLine(Invariant($"Maximum KLD: {d.Maximum:F6}"));
            Console.Out.WriteLine(Invariant($"Same top token: {100 * d.TopTokenAgreement:F3} % of {d.Positions} positions"));
        }
        double seconds = clock.Elapsed.TotalSeconds;
        Console.Error.WriteLine(Invariant($"perplexity: {result.ScoredTokens} tokens scored, {chunkCount * settings.ContextLength / seconds:F1} tokens/s evaluated"));
        if (writer != null) Console.Error.WriteLine($"perplexity: base log-probabilities written to {klBasePath}");
        return 0;
    }

    private static string Invariant(FormattableString s) => s.ToString(CultureInfo.InvariantCulture);
}
