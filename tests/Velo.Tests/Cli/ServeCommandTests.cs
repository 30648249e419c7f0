namespace Velo.Tests.Cli;

public sealed class ServeCommandTests
{
    [Theory]
    [InlineData("--host", "not-an-address")]
    [InlineData("--parallel", "0")]
    [InlineData("--queue", "-1")]
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
}
