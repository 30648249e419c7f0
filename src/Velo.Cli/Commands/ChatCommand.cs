using System.CommandLine;
using System.Text;
using Velo.Generation;
using Velo.Inference;
using Velo.Runtime;
using Velo.Text.ChatTemplates;
using Velo.Threading;

namespace Velo.Cli.Commands;

/// <summary>
/// <c>velo chat</c>: an interactive terminal chat on the server's path (chat template, batch scheduler). Each turn
/// resends the whole conversation; the scheduler finds it in the KV cache and only computes the new tokens.
/// </summary>
internal static class ChatCommand
{
    public static Command Create()
    {
        var model = CommonOptions.Model();
        var system = new Option<string?>("--system") { Description = "System prompt" };
        var tokens = new Option<int>("--n-predict", "-n") { Description = "Tokens per answer at most (-1: until the context is full)", DefaultValueFactory = _ => -1 }
            .AtLeast(-1, "-1 means until the context is full");
        var temperature = CommonOptions.Temperature();
        var seed = new Option<long>("--seed", "-s") { Description = "Random seed (-1: random)", DefaultValueFactory = _ => -1 };
        var threads = CommonOptions.Threads();
        var context = CommonOptions.Context();
        var cacheTypeK = CommonOptions.CacheTypeK();
        var cacheTypeV = CommonOptions.CacheTypeV();

        var command = new Command("chat", "Chat with a model in the terminal (type /exit or end the input to leave, /reset to start over)")
        {
            model, system, tokens, temperature, seed, threads, context, cacheTypeK, cacheTypeV,
        };
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
                CommonOptions.CacheTypes(parse, cacheTypeK, cacheTypeV));
        }));
        return command;
    }

    private static int Run(string modelPath, string? systemPrompt, GenerationOptions options, int threads, int context, KvCacheTypes cacheTypes)
    {
        using var model = LanguageModel.Load(modelPath);
        using var pool = new WorkerPool(threads);
        using var scheduler = new BatchScheduler(model, new BatchSchedulerOptions
        {
            Parallel = 1, ContextLength = CommonOptions.ContextFor(model, context), CacheTypes = cacheTypes,
        }, pool);
        var formatter = scheduler.Chat;
        if (formatter.FallbackReason != null) Console.Error.WriteLine($"note: using the ChatML template because {formatter.FallbackReason}");
        options = options with { Stop = formatter.StopStrings };

        var conversation = new List<ChatMessage>();
        if (!string.IsNullOrEmpty(systemPrompt)) conversation.Add(new ChatMessage("system", systemPrompt));
        int firstTurn = conversation.Count;
        var stdout = Console.OpenStandardOutput();
        while (true)
        {
            Console.Error.Write("> ");
            string? line = Console.ReadLine();
            if (line == null || line.Trim() == "/exit") return 0;
            if (line.Trim() == "/reset")
            {
                conversation.RemoveRange(firstTurn, conversation.Count - firstTurn);
                continue;
            }
            if (line.Trim().Length == 0) continue;
            conversation.Add(new ChatMessage("user", line));

            int[] prompt = formatter.Format(conversation);
            // Forget the oldest exchanges until the conversation fits, keeping the system prompt and this message.
            while (prompt.Length >= scheduler.ContextLength && conversation.Count - firstTurn > 1)
            {
                conversation.RemoveRange(firstTurn, Math.Min(2, conversation.Count - firstTurn - 1));
                prompt = formatter.Format(conversation);
            }
            if (prompt.Length >= scheduler.ContextLength)
            {
                Console.Error.WriteLine($"error: the message needs {prompt.Length} tokens but the context holds {scheduler.ContextLength}");
                conversation.RemoveAt(conversation.Count - 1);
                continue;
            }

            var stream = scheduler.Submit(new GenerationRequest { Prompt = prompt, Options = options });
            var answer = new StringBuilder();
            foreach (var piece in stream.Pieces.ReadAllAsync().ToBlockingEnumerable())
            {
                answer.Append(piece.Text);
                stdout.Write(Encoding.UTF8.GetBytes(piece.Text));
                stdout.Flush();
            }
            var summary = stream.Completion.GetAwaiter().GetResult();
            stdout.Write("\n"u8);
            stdout.Flush();
            conversation.Add(new ChatMessage("assistant", answer.ToString()));
            Console.Error.WriteLine($"[{summary.GeneratedTokens} tokens in {summary.Duration.TotalSeconds:F2} s; " +
                                    $"{summary.CachedPromptTokens} of {summary.PromptTokens} prompt tokens reused from the last turn]");
        }
    }
}
