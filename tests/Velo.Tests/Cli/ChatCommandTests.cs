using System.Text;
using System.Text.RegularExpressions;
using Velo.Generation;
using Velo.Inference;
using Velo.Text.ChatTemplates;
using Velo.Threading;

namespace Velo.Tests.Cli;

public sealed class ChatCommandTests
{
    [Fact]
    public async Task Chat_answers_each_turn_like_the_engine_and_reuses_the_previous_turn_from_the_cache()
    {
        var result = CliRunner.RunWithInput("Hello\nTell me more\n", "chat", "-m", TestPaths.Stories260K, "--temp", "0", "-n", "12", "-t", "1");
        Assert.Equal(0, result.ExitCode);

        using var model = LanguageModel.Load(TestPaths.Stories260K);
        using var pool = new WorkerPool(1);
        using var scheduler = new BatchScheduler(model, new BatchSchedulerOptions { Parallel = 1 }, pool);
        var formatter = new ChatPromptFormatter(model);
        var options = new GenerationOptions { MaxTokens = 12, Sampling = SamplerOptions.Greedy, Stop = formatter.StopStrings };
        var conversation = new List<ChatMessage> { new("user", "Hello") };
        string first = await Answer(scheduler, formatter.Format(conversation), options);
        conversation.AddRange([new("assistant", first), new("user", "Tell me more")]);
        string second = await Answer(scheduler, formatter.Format(conversation), options);
        Assert.Equal(first + "\n" + second + "\n", result.Stdout);

        var reused = Regex.Matches(result.Stderr, @"(\d+) of (\d+) prompt tokens reused").Select(m => int.Parse(m.Groups[1].Value)).ToArray();
        Assert.Equal(2, reused.Length);
        Assert.Equal(0, reused[0]);
        Assert.True(reused[1] > 0, result.Stderr);
    }

    private static async Task<string> Answer(BatchScheduler scheduler, int[] prompt, GenerationOptions options)
    {
        var stream = scheduler.Submit(new GenerationRequest { Prompt = prompt, Options = options });
        var text = new StringBuilder();
        await foreach (var piece in stream.Pieces.ReadAllAsync()) text.Append(piece.Text);
        return text.ToString();
    }
}
