using System.CommandLine;
using System.Diagnostics;
using System.Text;
using Velo.Generation;
using Velo.Inference;
using Velo.Runtime;
using Velo.Threading;

namespace Velo.Cli.Commands;

/// <summary><c>velo run</c>: generate text from a prompt, streaming it as it comes, like llama.cpp's llama-cli.</summary>
internal static class RunCommand
{
    public static Command Create()
    {
        var model = CommonOptions.Model();
        var prompt = new Option<string?>("--prompt", "-p") { Description = "Prompt text" };
        var promptFile = new Option<FileInfo?>("--prompt-file", "-f") { Description = "Read the prompt from a file" };
        var tokens = new Option<int>("--n-predict", "-n") { Description = "Tokens to generate (-1: until the context is full, 0: none)", DefaultValueFactory = _ => 128 }
            .AtLeast(-1, "-1 means until the context is full");
        var temperature = CommonOptions.Temperature();
        var topK = CommonOptions.TopK();
        var topP = CommonOptions.TopP();
        var minP = CommonOptions.MinP();
        var repeatPenalty = CommonOptions.RepeatPenalty();
        var seed = new Option<long>("--seed", "-s") { Description = "Random seed (-1: random)", DefaultValueFactory = _ => -1 };
        var threads = CommonOptions.Threads();
        var context = CommonOptions.Context();
        var ignoreEos = new Option<bool>("--ignore-eos") { Description = "Keep generating past the end-of-sequence token" };
        var cacheTypeK = CommonOptions.CacheTypeK();
        var cacheTypeV = CommonOptions.CacheTypeV();
        var speculation = new CommonOptions.SpeculationOptionSet();
        var grammar = new CommonOptions.GrammarOptionSet();

        var command = new Command("run", "Generate text from a prompt")
        {
            model, prompt, promptFile, tokens, temperature, topK, topP, minP, repeatPenalty, seed, threads, context, ignoreEos, cacheTypeK, cacheTypeV,
        };
        foreach (var option in speculation.All) command.Options.Add(option);
        foreach (var option in grammar.All) command.Options.Add(option);
        command.SetAction(parse => CommonOptions.Guard(() =>
        {
            string text = parse.GetValue(promptFile) is { } file ? File.ReadAllText(file.FullName) : parse.GetValue(prompt) ?? "";
            var options = new GenerationOptions
            {
                MaxTokens = parse.GetValue(tokens),
                IgnoreEos = parse.GetValue(ignoreEos),
                Grammar = grammar.Grammar(parse),
                Sampling = new SamplerOptions
                {
                    Temperature = parse.GetValue(temperature),
                    TopK = parse.GetValue(topK),
                    TopP = parse.GetValue(topP),
                    MinP = parse.GetValue(minP),
                    RepeatPenalty = parse.GetValue(repeatPenalty),
                    Seed = parse.GetValue(seed) is >= 0 and var s ? (ulong)s : null,
                },
            };
            return Run(parse.GetValue(model)!, text, options, parse.GetValue(threads), parse.GetValue(context),
                CommonOptions.CacheTypes(parse, cacheTypeK, cacheTypeV), speculation.Speculation(parse), parse.GetValue(speculation.DraftModel));
        }));
        return command;
    }

    private static int Run(string modelPath, string prompt, GenerationOptions options, int threads, int context, KvCacheTypes cacheTypes,
        SpeculationOptions? speculation, string? draftPath)
    {
        Sampler.Validate(options.Sampling);
        using var model = LanguageModel.Load(modelPath);
        using var draft = draftPath != null ? LanguageModel.Load(draftPath) : null;
        using var pool = new WorkerPool(threads);
        using var generator = new TextGenerator(model, CommonOptions.ContextFor(model, context), pool: pool, cacheTypes: cacheTypes,
            speculation: speculation, draft: draft);
        int[] promptTokens = model.Tokenizer.Encode(prompt, addSpecial: true);
        if (promptTokens.Length == 0) promptTokens = [model.Tokenizer.BosId >= 0 ? model.Tokenizer.BosId : 0];
        // Said before the prompt is echoed, so the error is not glued to its end.
        if (promptTokens.Length >= generator.ContextLength) throw new PromptTooLongException(promptTokens.Length, generator.ContextLength);

        var stdout = Console.OpenStandardOutput();
        // The prompt is echoed as its tokens decode, exactly as llama.cpp prints it.
        foreach (int id in promptTokens) stdout.Write(model.Tokenizer.TokenBytes(id, skipSpecial: true));
        stdout.Flush();
        var utf8 = new byte[256];
        // -n 0 asks for no tokens: the prompt alone, as llama-cli prints it.
        var pieces = options.MaxTokens == 0 ? [] : generator.Generate(promptTokens, options);
        foreach (var piece in pieces)
        {
            int length = Encoding.UTF8.GetBytes(piece.Text, utf8);
            stdout.Write(utf8, 0, length);
            stdout.Flush();
        }

        // Like llama-cli, end the text with a blank line so the statistics that follow stand apart.
        stdout.Write("\n\n"u8);
        stdout.Flush();

        var stats = generator.LastStats;
        var repack = model.Model.Repack;
        Console.Error.WriteLine($"load time:  {model.LoadTime.TotalMilliseconds,9:F1} ms" + (repack.Describe() is { Length: > 0 } copies ? $" ({copies})" : ""));
        Console.Error.WriteLine($"prompt:     {stats.PromptTokens,6} tokens in {stats.PromptTime.TotalMilliseconds,9:F1} ms ({stats.PromptTokensPerSecond:F1} tokens/s)");
        Console.Error.WriteLine($"generation: {stats.GeneratedTokens,6} tokens in {stats.GenerationTime.TotalMilliseconds,9:F1} ms ({stats.GenerationTokensPerSecond:F1} tokens/s)");
        if (speculation != null)
            Console.Error.WriteLine($"speculation: {stats.DraftedTokens,5} drafted, {stats.AcceptedDrafts} accepted ({100 * stats.AcceptanceRate:F1}%), " +
                $"{stats.TokensPerPass:F2} tokens per target pass ({(draft != null ? $"draft {draft.Path}" : $"prompt lookup, n-gram {speculation.NGram}")})");
        Console.Error.WriteLine($"memory:     {Process.GetCurrentProcess().WorkingSet64 / (1024.0 * 1024),9:F1} MiB resident ({model.Path})");
        return 0;
    }
}
