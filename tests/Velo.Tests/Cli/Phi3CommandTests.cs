using System.Text.Json;
using System.Text.RegularExpressions;

namespace Velo.Tests.Cli;

/// <summary>A random-weight Phi-3 of the <c>phi3-tiny</c> shape through every command a user runs on a model.</summary>
public sealed class Phi3CommandTests : IDisposable
{
    private readonly string _folder = Directory.CreateTempSubdirectory("velo-phi3-cli-").FullName;

    public void Dispose() => Directory.Delete(_folder, recursive: true);

    private static CliRunner.Result Succeeds(params string[] args) => SucceedsWithInput(null, args);

    private static CliRunner.Result SucceedsWithInput(string? input, params string[] args)
    {
        var r = CliRunner.RunWithInput(input, args);
        Assert.True(r.ExitCode == 0, $"velo {string.Join(' ', args)}: {r.Stderr}");
        return r;
    }

    [Fact]
    public void SynthesizedPhi3TinyWorksInInfoRunChatBenchAndPerplexity()
    {
        string model = Path.Combine(_folder, "phi3-tiny.gguf");
        Succeeds("synth", "--shape", "phi3-tiny", "-t", "Q4_0", "-o", model);

        var info = Succeeds("info", model);
        Assert.Contains("phi3", info.Stdout);
        Assert.Contains("LongRoPE factors (long beyond 4096 tokens)", info.Stdout);

        var run = Succeeds("run", "-m", model, "-p", "Once upon a time", "-n", "4", "--temp", "0", "-t", "2");
        Assert.StartsWith("▁Once▁upon▁a▁time", run.Stdout);
        Assert.Contains("generation:      4 tokens", run.Stderr);

        var chat = SucceedsWithInput("Hello\n", "chat", "-m", model, "--temp", "0", "-n", "4", "-t", "2");
        Assert.Matches(@"0 of \d+ prompt tokens reused", chat.Stderr);

        var bench = Succeeds("bench", "-m", model, "-p", "16", "-n", "4", "-t", "2", "-r", "1", "--json");
        using (var doc = JsonDocument.Parse(bench.Stdout))
            Assert.Equal(["pp16", "tg4"], doc.RootElement.GetProperty("results").EnumerateArray().Select(e => e.GetProperty("Test").GetString()));

        var perplexity = Succeeds("perplexity", "-m", model, "-f", TestPaths.SharedFile("eval", "tinystories-public.txt"), "-c", "128", "--chunks", "2", "-t", "2");
        // Random weights spread their guesses over the whole vocabulary of 32064: a perplexity of that order.
        var figure = Regex.Match(perplexity.Stdout, @"Final estimate: PPL = (\d+\.\d{4})");
        Assert.True(figure.Success, perplexity.Stdout);
        Assert.InRange(double.Parse(figure.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture), 5000, 200000);
    }
}
