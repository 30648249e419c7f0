using System.Diagnostics;
using System.Text.Json;
using Velo.Cli.Commands;
using Velo.Generation;
using Velo.Inference;
using Velo.Threading;

namespace Velo.Tests.Cli;

/// <summary><c>velo chat</c>'s session: stopping an answer, the slash commands, and the notice when old turns go.</summary>
public sealed class ChatSessionTests
{
    private static (ChatSession Session, StringWriter Notices, MemoryStream Output) Session(BatchScheduler scheduler, string input, GenerationOptions? options = null,
        Stream? output = null)
    {
        var notices = new StringWriter();
        var stdout = new MemoryStream();
        var session = new ChatSession(scheduler, options ?? new GenerationOptions { MaxTokens = 6, Sampling = SamplerOptions.Greedy, Stop = scheduler.Chat.StopStrings },
            null, new StringReader(input), output ?? stdout, notices);
        return (session, notices, stdout);
    }

    [Fact]
    public void Stopping_an_answer_keeps_the_chat_going()
    {
        using var model = LanguageModel.Load(TestPaths.Stories260K);
        using var pool = new WorkerPool(1);
        using var scheduler = new BatchScheduler(model, new BatchSchedulerOptions { Parallel = 1, ContextLength = 512 }, pool);
        ChatSession? session = null;
        // Ctrl+C as the first piece of the first answer is written: that answer stops, the next one runs in full.
        var output = new StopOnFirstWrite(() => session!.StopAnswer());
        var options = new GenerationOptions { MaxTokens = 200, IgnoreEos = true, Sampling = SamplerOptions.Greedy };
        (session, var notices, _) = Session(scheduler, "Tell me a story\nAnd another\n", options, output);
        session.Run();
        Assert.Contains("[stopped]", notices.ToString());
        Assert.Equal(4, session.Conversation.Count);
        Assert.True(session.Conversation[1].Content.Length < session.Conversation[3].Content.Length / 4, session.Conversation[1].Content);
        Assert.DoesNotContain("error", notices.ToString());
    }

    [Fact]
    public void Slash_commands_help_save_and_reset_after_asking()
    {
        using var model = LanguageModel.Load(TestPaths.Stories260K);
        using var pool = new WorkerPool(1);
        using var scheduler = new BatchScheduler(model, new BatchSchedulerOptions { Parallel = 1, ContextLength = 512 }, pool);
        string file = Path.Combine(Path.GetTempPath(), $"velo-chat-{Guid.NewGuid():N}.json");
        try
        {
            var (session, notices, _) = Session(scheduler, $"Hello\n/help\n/reset\nn\n/save {file}\n/reset\ny\n/wat\n/exit\nnever read\n");
            session.Run();
            string said = notices.ToString();
            Assert.Contains("/save FILE", said);
            Assert.Contains("[kept]", said);
            Assert.Contains("[conversation forgotten]", said);
            Assert.Contains("unknown command /wat", said);
            Assert.Empty(session.Conversation);
            var saved = JsonDocument.Parse(File.ReadAllText(file)).RootElement;
            Assert.Equal(2, saved.GetArrayLength());
            Assert.Equal("Hello", saved[0].GetProperty("content").GetString());
            Assert.Equal("assistant", saved[1].GetProperty("role").GetString());
        }
        finally
        {
            File.Delete(file);
        }
    }

    [Fact]
    public void Dropping_old_turns_to_fit_the_context_is_said()
    {
        using var model = LanguageModel.Load(TestPaths.Stories260K);
        using var pool = new WorkerPool(1);
        using var scheduler = new BatchScheduler(model, new BatchSchedulerOptions { Parallel = 1, ContextLength = 96 }, pool);
        var options = new GenerationOptions { MaxTokens = 20, IgnoreEos = true, Sampling = SamplerOptions.Greedy };
        var (session, notices, _) = Session(scheduler, "Once upon a time\nThen what\nAnd then\nThe end\n", options);
        session.Run();
        Assert.Contains("oldest messages were dropped to fit the context of 96 tokens", notices.ToString());
    }

    /// <summary>The real signal: SIGINT to a running <c>velo chat</c> stops the answer and the chat goes on. The answer
    /// could fill a context of 16384 tokens, so it is still running however slowly the signal arrives.</summary>
    [Fact]
    public async Task Sigint_stops_the_answer_not_the_chat()
    {
        // A process started with SIGINT ignored (a background job of a shell without job control) passes that on.
        if (SigintIgnoredHere()) return;
        var start = new ProcessStartInfo("dotnet")
        {
            RedirectStandardInput = true, RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false,
        };
        foreach (string arg in (string[])[Path.Combine(AppContext.BaseDirectory, "Velo.Cli.dll"), "chat", "-n", "-1", "--ctx", "16384", "--temp", "1", "-t", "1"])
            start.ArgumentList.Add(arg);
        using var process = Process.Start(start)!;
        try
        {
            var stderr = new System.Text.StringBuilder();
            process.ErrorDataReceived += (_, e) => { lock (stderr) stderr.AppendLine(e.Data); };
            process.BeginErrorReadLine();
            process.StandardInput.WriteLine("Tell me a long story");
            process.StandardInput.Flush();
            var buffer = new char[16];
            Assert.True(await process.StandardOutput.ReadAsync(buffer, 0, buffer.Length) > 0);
            using (var kill = Process.Start("kill", ["-INT", process.Id.ToString()])) await kill.WaitForExitAsync();
            var rest = process.StandardOutput.ReadToEndAsync();
            await Task.Delay(500);
            process.StandardInput.WriteLine("/exit");
            process.StandardInput.Close();
            using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(60));
            await process.WaitForExitAsync(timeout.Token);
            await rest;
            Assert.Equal(0, process.ExitCode);
            lock (stderr) Assert.Contains("[stopped]", stderr.ToString());
        }
        finally
        {
            if (!process.HasExited) process.Kill();
        }
    }

    private static bool SigintIgnoredHere()
    {
        string? line = File.ReadLines("/proc/self/status").FirstOrDefault(l => l.StartsWith("SigIgn:", StringComparison.Ordinal));
        return line != null && (Convert.ToUInt64(line["SigIgn:".Length..].Trim(), 16) & (1UL << 1)) != 0;
    }

    /// <summary>The terminal, as far as the session sees it: on the first answer's first write, the user presses Ctrl+C.</summary>
    private sealed class StopOnFirstWrite(Func<bool> stop) : MemoryStream
    {
        private bool _stopped;

        // MemoryStream passes its other Write overloads here when derived from.
        public override void Write(byte[] buffer, int offset, int count)
        {
            base.Write(buffer, offset, count);
            if (_stopped || count == 0 || buffer[offset] == (byte)'\n') return;
            _stopped = stop();
        }
    }
}
