using System.Text.Json;
using Velo.Formats;
using Velo.Models;
using Velo.Tests.Formats;

namespace Velo.Tests.Cli;

/// <summary>Speculative decoding's flags on the commands that run the batch scheduler: chat, serve and bench.</summary>
public sealed class SpeculationCommandTests : IDisposable
{
    private readonly string _folder = Directory.CreateTempSubdirectory("velo-speculation-cli-").FullName;

    public void Dispose() => Directory.Delete(_folder, recursive: true);

    [Fact]
    public void Chat_with_the_model_as_its_own_draft_answers_as_without_it()
    {
        string[] common = ["chat", "-m", TestPaths.Stories260K, "--temp", "0", "-n", "24", "-t", "1"];
        var plain = CliRunner.RunWithInput("Hello\n", common);
        var speculative = CliRunner.RunWithInput("Hello\n", [.. common, "-md", TestPaths.Stories260K, "--draft-max", "4", "--draft-p-min", "0"]);
        Assert.True(plain.ExitCode == 0, plain.Stderr);
        Assert.True(speculative.ExitCode == 0, speculative.Stderr);
        Assert.Equal(plain.Stdout, speculative.Stdout);
    }

    [Fact]
    public void Serve_refuses_a_draft_of_another_vocabulary_at_startup()
    {
        string draft = Path.Combine(_folder, "other-vocabulary.gguf");
        var spec = new SynthSpec { Name = "draft", Dim = 32, Layers = 1, Heads = 2, FfnDim = 64, VocabSize = 512, ContextLength = 64, Seed = 3 };
        ModelSynthesizer.Write(draft, spec, tokenizer: null, threads: 1);
        var result = CliRunner.Run("serve", "-m", TestPaths.Stories260K, "--port", "0", "-md", draft);
        Assert.Equal(1, result.ExitCode);
        Assert.Contains("do not share a vocabulary", result.Stderr);
    }

    [Fact]
    public void Serve_refuses_a_draft_of_an_architecture_it_cannot_run_at_startup()
    {
        using var draft = HostileGguf.Rewrite(TestPaths.Stories260K, w => w.Set("general.architecture", "mamba"));
        var result = CliRunner.Run("serve", "-m", TestPaths.Stories260K, "--port", "0", "-md", draft.Path);
        Assert.Equal(1, result.ExitCode);
        Assert.Contains($"{draft.Path}: architecture 'mamba' is not supported", result.Stderr);
    }

    [Fact]
    public void Bench_measures_generation_with_and_without_speculation_and_reports_the_acceptance()
    {
        var r = CliRunner.Run("bench", "-m", TestPaths.Stories260K, "-p", "0", "-n", "16", "-t", "1", "-r", "1", "--spec-ngram", "2", "--json");
        Assert.True(r.ExitCode == 0, r.Stderr);
        using var doc = JsonDocument.Parse(r.Stdout);
        var results = doc.RootElement.GetProperty("results").EnumerateArray().ToArray();
        Assert.Equal(["tg16", "tg16 scheduler", "tg16 speculative"], results.Select(e => e.GetProperty("Test").GetString()));
        var speculative = results[2];
        Assert.InRange(speculative.GetProperty("AcceptanceRate").GetDouble(), 0, 1);
        Assert.True(speculative.GetProperty("TokensPerTargetPass").GetDouble() >= 1);
        Assert.True(speculative.GetProperty("SpeedUp").GetDouble() > 0);
        // Each side reports what it got of the machine: busy threads, and on Linux the major page faults it took.
        foreach (var side in results[1..])
        {
            Assert.True(side.GetProperty("BusyThreads").GetDouble() > 0);
            if (OperatingSystem.IsLinux()) Assert.True(side.GetProperty("MajorPageFaults").GetInt64() >= 0);
        }
    }
}
