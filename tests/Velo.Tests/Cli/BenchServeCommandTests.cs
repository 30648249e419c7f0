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
}
