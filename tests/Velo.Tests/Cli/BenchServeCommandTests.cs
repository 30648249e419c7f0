using Velo.Tests.Server;

namespace Velo.Tests.Cli;

public sealed class BenchServeCommandTests
{
    [Fact]
    public void Bench_serve_runs_each_round_of_clients_and_counts_every_generated_token()
    {
        using var server = new TestServer(parallel: 2);
        var result = CliRunner.Run("bench-serve", "--url", server.Address.ToString(), "--clients", "1,2", "--requests", "3", "--max-tokens", "5");
        Assert.True(result.ExitCode == 0, result.Stderr);

        var rows = result.Stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries).Skip(1)
            .Select(line => line.Split(' ', StringSplitOptions.RemoveEmptyEntries)).ToArray();
        Assert.Equal(2, rows.Length);
        Assert.Equal(["1", "3", "15"], rows[0][..3]);
        Assert.Equal(["2", "3", "15"], rows[1][..3]);
        // The warm-up request and the two rounds all went through the server.
        Assert.Equal(7, server.Engine.Metrics.Requests("/v1/completions", 200));
    }

    [Fact]
    public void Bench_serve_sends_seeded_word_prompts_and_reports_their_length_in_tokens()
    {
        using var server = new TestServer(parallel: 2);
        var result = CliRunner.Run("bench-serve", "--url", server.Address.ToString(), "--clients", "2", "--requests", "2", "--max-tokens", "3",
            "--prompt-words", "12", "--seed", "5");
        Assert.True(result.ExitCode == 0, result.Stderr);

        var row = result.Stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries)[1].Split(' ', StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal(["2", "2", "6"], row[..3]);
        Assert.True(double.Parse(row[^1], System.Globalization.CultureInfo.InvariantCulture) > 12, result.Stdout); // prompt tokens
        Assert.True(double.Parse(row[^2], System.Globalization.CultureInfo.InvariantCulture) > 0, result.Stdout); // decode t/s
    }
}
