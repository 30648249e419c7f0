using System.CommandLine;
using Velo.Generation;
using Velo.Inference;
using Velo.Runtime;
using Velo.Threading;

namespace Velo.Cli.Commands;

/// <summary>
/// <c>velo chat</c>: an interactive terminal chat on the server's path (chat template, batch scheduler), run by a
/// <see cref="ChatSession"/>.
/// </summary>
internal static class ChatCommand
{
    public static Command Create()
    {
        var model = CommonOptions.Model();
        var system = new Option<string?>("--system") { Description = "System prompt" };
        var tokens = new Option<int>("--n-predict", "-n") { Description = "Tokens per answer at most (-1: until the context is full)", DefaultValueFactory = _ => 512 };
        tokens.Validators.Add(result =>
        {
            int value = result.GetValueOrDefault<int>();
            if (value is 0 or < -1) result.AddError($"--n-predict must be -1 (until the context is full) or at least 1 for an answer, got {value}");
        });
        var temperature = CommonOptions.Temperature();
        var seed = new Option<long>("--seed", "-s") { Description = "Random seed (-1: random)", DefaultValueFactory = _ => -1 };
        var threads = CommonOptions.Threads();
        var context = CommonOptions.Context();
        var cacheTypeK = CommonOptions.CacheTypeK();
        var cacheTypeV = CommonOptions.CacheTypeV();
        var speculation = new CommonOptions.SpeculationOptionSet();

        var command = new Command("chat", "Chat with a model in the terminal (/help lists the commands; Ctrl+C stops an answer)")
        {
            model, system, tokens, temperature, seed, threads, context, cacheTypeK, cacheTypeV,
        };
        foreach (var option in speculation.All) command.Options.Add(option);
        command.SetAction(parse => CommonOptions.Guard(() =>
        {
            var sampling = new SamplerOptions
            {
                Temperature = parse.GetValue(temperature),
                Seed = parse.GetValue(seed) is >= 0 and var s ? (ulong)s : null,
            };
            Sampler.Validate(sampling);
            var options = new GenerationOptions { MaxTokens = parse.GetValue(tokens), Sampling = sampling };
            return Run(parse.GetValue(model)!, parse.GetValue(system), options, parse.GetValue(threads), parse.GetValue(context),
                CommonOptions.CacheTypes(parse, cacheTypeK, cacheTypeV), speculation.Speculation(parse), parse.GetValue(speculation.DraftModel));
        }));
        return command;
    }

    private static int Run(string modelPath, string? systemPrompt, GenerationOptions options, int threads, int context, KvCacheTypes cacheTypes,
        SpeculationOptions? speculation, string? draftPath)
    {
        using var model = LanguageModel.Load(modelPath);
        using var draft = draftPath != null ? LanguageModel.Load(draftPath) : null;
        using var pool = new WorkerPool(threads);
        using var scheduler = new BatchScheduler(model, new BatchSchedulerOptions
        {
            Parallel = 1, ContextLength = CommonOptions.ContextFor(model, context), CacheTypes = cacheTypes, Speculation = speculation,
        }, pool, draft: draft);
        var formatter = scheduler.Chat;
        if (formatter.FallbackReason != null) Console.Error.WriteLine($"note: using the ChatML template because {formatter.FallbackReason}");
        options = options with { Stop = formatter.StopStrings };

        var session = new ChatSession(scheduler, options, systemPrompt, Console.In, Console.OpenStandardOutput(), Console.Error);
        // Ctrl+C stops the answer being written; at the prompt, with no answer to stop, it ends the chat as usual.
        ConsoleCancelEventHandler stop = (_, e) => e.Cancel = session.StopAnswer();
        Console.CancelKeyPress += stop;
        try
        {
            session.Run();
        }
        finally
        {
            Console.CancelKeyPress -= stop;
        }
        return 0;
    }
}
