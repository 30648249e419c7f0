using System.Text.Json;

namespace Velo.Tests.Cli;

public class BenchCommandTests
{
    [Fact]
    public void ReportsEveryTestAndThreadCountAsJson()
    {
        var r = CliRunner.Run("bench", "-m", TestPaths.Stories260K, "-p", "16", "-n", "8", "-t", "1,2", "-r", "2", "--json");
        Assert.True(r.ExitCode == 0, r.Stderr);
        using var doc = JsonDocument.Parse(r.Stdout);
        var results = doc.RootElement.GetProperty("results").EnumerateArray().ToArray();
        Assert.Equal(["pp16/1", "tg8/1", "pp16/2", "tg8/2"], results.Select(e => $"{e.GetProperty("Test").GetString()}/{e.GetProperty("Threads").GetInt32()}"));
        Assert.All(results, e =>
        {
            Assert.Equal(2, e.GetProperty("Runs").GetArrayLength());
            Assert.True(e.GetProperty("Median").GetDouble() > 0);
            Assert.True(e.GetProperty("LimitTokensPerSecond").GetDouble() > 0);
        });
    }

    [Fact]
    public void DecodesSeveralSequencesTogetherWithParallel()
    {
        var r = CliRunner.Run("bench", "-m", TestPaths.Stories260K, "-p", "0", "-n", "8", "-t", "2", "-r", "1", "-np", "1,3", "--json");
        Assert.True(r.ExitCode == 0, r.Stderr);
        using var doc = JsonDocument.Parse(r.Stdout);
        var results = doc.RootElement.GetProperty("results").EnumerateArray().ToArray();
        Assert.Equal(["tg8", "tg8 x3"], results.Select(e => e.GetProperty("Test").GetString()));
        // The limit of a step that reads the weights once for three sequences is three tokens per read.
        Assert.Equal(3 * results[0].GetProperty("LimitTokensPerSecond").GetDouble(), results[1].GetProperty("LimitTokensPerSecond").GetDouble(),
            1e-9 * results[1].GetProperty("LimitTokensPerSecond").GetDouble());
    }

    [Fact]
    public void RejectsABadThreadList()
    {
        var r = CliRunner.Run("bench", "-m", TestPaths.Stories260K, "-t", "1,x");
        Assert.Equal(1, r.ExitCode);
        Assert.Contains("'x' is not a positive number", r.Stderr);
    }

    [Fact]
    public void RefusesAPromptTooLargeForMemoryBeforeMeasuring()
    {
        var r = CliRunner.Run("bench", "-m", TestPaths.Stories260K, "-p", "2000000000", "-n", "0");
        Assert.Equal(1, r.ExitCode);
        Assert.Matches(@"^error: this configuration needs .* what fits: --n-prompt \d+", r.Stderr);
    }

    [Fact]
    public void RejectsMoreThreadsThanProcessors()
    {
        var r = CliRunner.Run("bench", "-m", TestPaths.Stories260K, "-t", $"1,{Environment.ProcessorCount + 1}");
        Assert.Equal(1, r.ExitCode);
        Assert.Contains($"--threads must be between 1 and {Environment.ProcessorCount}", r.Stderr);
    }
}
