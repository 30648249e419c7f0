using System.Text;
using System.Text.Json;
using Velo.Generation;
using Velo.Text.ChatTemplates;

namespace Velo.Cli.Commands;

/// <summary>
/// One terminal conversation over an <see cref="IGenerationService"/>: reads lines, answers them through the chat
/// template, and runs the slash commands. Each turn resends the whole conversation; the scheduler finds it in the KV
/// cache and only computes the new tokens. <see cref="StopAnswer"/> (Ctrl+C) ends the answer being written, not the chat.
/// </summary>
internal sealed class ChatSession(IGenerationService generator, GenerationOptions options, string? systemPrompt, TextReader input, Stream output, TextWriter notices)
{
    public const string Help = """
        /help         this list
        /reset        forget the conversation (asks first); the system prompt stays
        /save FILE    write the conversation to FILE as JSON messages (role, content)
        /exit, /bye   leave (so does the end of the input, Ctrl+D)
        Ctrl+C        stop the answer being written
        """;

    private readonly List<ChatMessage> _conversation = string.IsNullOrEmpty(systemPrompt) ? [] : [new ChatMessage("system", systemPrompt)];
    private readonly Lock _lock = new();
    private CancellationTokenSource? _answering;

    private int FirstTurn => string.IsNullOrEmpty(systemPrompt) ? 0 : 1;

    public IReadOnlyList<ChatMessage> Conversation => _conversation;

    /// <summary>Stops the answer being generated, if one is; false when none is (then Ctrl+C may end the program).</summary>
    public bool StopAnswer()
    {
        lock (_lock)
        {
            if (_answering == null) return false;
            _answering.Cancel();
            return true;
        }
    }

    /// <summary>Runs until /exit or the end of the input.</summary>
    public void Run()
    {
        while (true)
        {
            notices.Write("> ");
            string? line = input.ReadLine();
            if (line == null) return;
            string trimmed = line.Trim();
            if (trimmed.Length == 0) continue;
            if (trimmed.StartsWith('/') && !Command(trimmed)) return;
            if (!trimmed.StartsWith('/')) Answer(line);
        }
    }

    /// <summary>Runs a slash command; false when it ends the chat.</summary>
    private bool Command(string line)
    {
        string name = line.Split(' ', 2)[0];
        string argument = line.Length > name.Length ? line[name.Length..].Trim() : "";
        switch (name)
        {
            case "/exit" or "/bye" or "/quit":
                return false;
            case "/help" or "/?":
                notices.WriteLine(Help);
                return true;
            case "/reset":
                notices.Write("Forget the conversation so far? [y/N] ");
                if (input.ReadLine()?.Trim().ToLowerInvariant() is "y" or "yes")
                {
                    _conversation.RemoveRange(FirstTurn, _conversation.Count - FirstTurn);
                    notices.WriteLine("[conversation forgotten]");
                }
                else
                {
                    notices.WriteLine("[kept]");
                }
                return true;
            case "/save":
                if (argument.Length == 0)
                {
                    notices.WriteLine("error: give a file name: /save FILE");
                    return true;
                }
                try
                {
                    File.WriteAllText(argument, JsonSerializer.Serialize(_conversation.Select(m => new { role = m.Role, content = m.Content }),
                        new JsonSerializerOptions { WriteIndented = true, Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping }));
                    notices.WriteLine($"[saved {_conversation.Count} messages to {argument}]");
                }
                catch (Exception e) when (e is IOException or UnauthorizedAccessException or ArgumentException or NotSupportedException)
                {
                    notices.WriteLine($"error: cannot save to {argument}: {e.Message}");
                }
                return true;
            default:
                notices.WriteLine($"unknown command {name}; /help lists the commands");
                return true;
        }
    }

    private void Answer(string line)
    {
        _conversation.Add(new ChatMessage("user", line));
        var chat = generator.Chat;
        int[] prompt = chat.Format(_conversation);
        // Forget the oldest exchanges until the conversation fits, keeping the system prompt and this message.
        int dropped = 0;
        while (prompt.Length >= generator.ContextLength && _conversation.Count - FirstTurn > 1)
        {
            int count = Math.Min(2, _conversation.Count - FirstTurn - 1);
            _conversation.RemoveRange(FirstTurn, count);
            dropped += count;
            prompt = chat.Format(_conversation);
        }
        if (prompt.Length >= generator.ContextLength)
        {
            notices.WriteLine($"error: the message needs {prompt.Length} tokens but the context holds {generator.ContextLength}; raise --ctx");
            _conversation.RemoveAt(_conversation.Count - 1);
            return;
        }
        if (dropped > 0)
            notices.WriteLine($"[the {dropped} oldest messages were dropped to fit the context of {generator.ContextLength} tokens; /reset starts over]");

        using var answering = new CancellationTokenSource();
        lock (_lock) _answering = answering;
        var answer = new StringBuilder();
        try
        {
            var stream = generator.Submit(new GenerationRequest { Prompt = prompt, Options = options }, answering.Token);
            try
            {
                foreach (var piece in stream.Pieces.ReadAllAsync(CancellationToken.None).ToBlockingEnumerable())
                {
                    answer.Append(piece.Text);
                    output.Write(Encoding.UTF8.GetBytes(piece.Text));
                    output.Flush();
                    // Pieces may already wait in the stream (a small model outruns the terminal): stop showing them at once.
                    answering.Token.ThrowIfCancellationRequested();
                }
                var summary = stream.Completion.GetAwaiter().GetResult();
                output.Write("\n"u8);
                output.Flush();
                notices.WriteLine($"[{summary.GeneratedTokens} tokens in {summary.Duration.TotalSeconds:F2} s; " +
                                  $"{summary.CachedPromptTokens} of {summary.PromptTokens} prompt tokens reused from the last turn" +
                                  (summary.FinishReason == FinishReason.Length ? "; stopped at the -n limit" : "") + "]");
            }
            catch (OperationCanceledException) when (answering.IsCancellationRequested)
            {
                output.Write("\n"u8);
                output.Flush();
                notices.WriteLine("[stopped]");
            }
        }
        finally
        {
            lock (_lock) _answering = null;
        }
        // What was said stays said, a stopped answer's part too: the next turn follows it.
        _conversation.Add(new ChatMessage("assistant", answer.ToString()));
    }
}
