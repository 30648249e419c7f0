namespace Velo.Tests.Cli;

public sealed class ServeCommandTests
{
    [Theory]
    [InlineData("--host", "not-an-address")]
    [InlineData("--parallel", "0")]
    [InlineData("--queue", "-1")]
    [InlineData("--ctx", "-5")]
    [InlineData("--threads", "0")]
    [InlineData("--threads", "1000")]
    [InlineData("--keep-alive", "soon")]
    [InlineData("--memory-cap", "lots")]
    [InlineData("--model", "bad name=model.gguf")]
    public void Bad_options_end_with_one_error_line_instead_of_a_server(string option, string value)
    {
        var result = CliRunner.Run("serve", "-m", TestPaths.Stories260K, "--port", "0", option, value);
        Assert.Equal(1, result.ExitCode);
        Assert.StartsWith("error: ", result.Stderr);
        Assert.Single(result.Stderr.Trim().Split('\n'));
    }

    [Fact]
    public void A_missing_model_file_is_reported_before_listening()
    {
        var result = CliRunner.Run("serve", "-m", Path.Combine(Path.GetTempPath(), "velo-no-such-model.gguf"), "--port", "0");
        Assert.Equal(1, result.ExitCode);
        Assert.Contains("model file not found", result.Stderr);
    }

    [Fact]
    public void A_named_model_file_that_is_missing_or_a_memory_cap_too_small_for_the_default_is_reported_before_serving()
    {
        var missing = CliRunner.Run("serve", "-m", TestPaths.Stories260K, "--model", "small=" + Path.Combine(Path.GetTempPath(), "velo-no-such-model.gguf"), "--port", "0");
        Assert.Equal(1, missing.ExitCode);
        Assert.Contains("model file not found", missing.Stderr);

        var capped = CliRunner.Run("serve", "-m", TestPaths.Stories260K, "--memory-cap", "64KiB", "--port", "0");
        Assert.Equal(1, capped.ExitCode);
        Assert.Contains("error: the model 'stories260K' needs", capped.Stderr);
        Assert.Contains("memory cap of 64.0 KiB", capped.Stderr);
    }

    [Theory]
    [InlineData("--keep-alive", "10m")]
    [InlineData("--memory-cap", "8GiB")]
    [InlineData("--model", "small={stories}")]
    public void A_pipeline_refuses_the_options_of_a_server_of_several_models(string option, string value)
    {
        var result = CliRunner.Run("serve", "-m", TestPaths.Stories260K, "--port", "0", "--pipeline", "http://127.0.0.1:1", option,
            value.Replace("{stories}", TestPaths.Stories260K));
        Assert.Equal(1, result.ExitCode);
        Assert.Contains("--pipeline serves one model split across stages", result.Stderr);
        Assert.Contains(option, result.Stderr);
    }

    [Theory]
    [InlineData("8GiB", 8L << 30)]
    [InlineData("512MiB", 512L << 20)]
    [InlineData("512M", 512L << 20)]
    [InlineData("2GB", 2_000_000_000L)]
    [InlineData("1.5KiB", 1536L)]
    [InlineData("1073741824", 1L << 30)]
    public void Memory_caps_read_binary_and_decimal_units(string text, long bytes) =>
        Assert.Equal(bytes, Velo.Cli.Commands.ServeCommand.ByteSize(text));

    /// <summary>1.2 PB of KV cache: refused by the memory plan with what fits, before allocating, instead of an OutOfMemoryException.</summary>
    [Fact]
    public void A_configuration_too_large_for_memory_exits_with_what_fits()
    {
        var clock = System.Diagnostics.Stopwatch.StartNew();
        var result = CliRunner.Run("serve", "-m", TestPaths.Stories260K, "--port", "0", "--ctx", "10000000", "--parallel", "100000");
        Assert.Equal(1, result.ExitCode);
        Assert.Contains("error: this configuration needs", result.Stderr);
        Assert.Matches(@"what fits: --ctx \d+ with --parallel 100000", result.Stderr);
        Assert.DoesNotContain("   at ", result.Stderr);
        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(60), $"took {clock.Elapsed}");
    }
}
