namespace Velo.Tests.Cli;

/// <summary>The edges a new user meets first: option errors, colour in files, -n and --ctx limits, defaults, the bundled model.</summary>
public sealed class CliRoughEdgesTests
{
    [Theory]
    [InlineData("serve", "--port", "99999", "--port must be between 0 and 65535, got 99999")]
    [InlineData("serve", "--host", "999.1.1.1", "--host must be an IP address")]
    [InlineData("run", "-t", "0", "--threads must be between 1 and")]
    [InlineData("run", "--seed", "abc", "--seed takes a whole number, got 'abc'")]
    [InlineData("run", "--temp", "hot", "--temp takes a number, got 'hot'")]
    [InlineData("serve", "--log-format", "xml", "--log-format must be one of text, json, none; got 'xml'")]
    [InlineData("run", "-n", "-5", "--n-predict must be at least -1")]
    [InlineData("chat", "-n", "0", "--n-predict must be -1 (until the context is full) or at least 1")]
    public void Option_errors_are_one_plain_line(string command, string option, string value, string expected)
    {
        var result = CliRunner.Run(command, option, value);
        Assert.Equal(1, result.ExitCode);
        Assert.Equal($"error: {expected}", result.Stderr.Trim()[..(expected.Length + 7)]);
        Assert.Single(result.Stderr.Trim().Split('\n'));
        Assert.DoesNotContain("System.", result.Stderr);
        Assert.Equal("", result.Stdout);
    }

    /// <summary>Redirected output (a file, a pipe) has no colour codes; the bundled model stands in for a missing one; ids a file marks absent read "none".</summary>
    [Fact]
    public void Info_without_a_model_describes_the_bundled_one_in_plain_text()
    {
        var result = CliRunner.Run("info");
        Assert.True(result.ExitCode == 0, result.Stderr);
        Assert.Contains("stories260K.gguf", result.Stdout);
        Assert.DoesNotContain("\u001b[", result.Stdout);
        Assert.Matches(@"padding id\s+│ none", result.Stdout);
        Assert.Matches(@"bos id\s+│ 1 ", result.Stdout);
    }

    [Fact]
    public void Tokenize_without_a_model_uses_the_bundled_one()
    {
        var result = CliRunner.Run("tokenize", "--text", "Once upon a time", "--ids");
        Assert.True(result.ExitCode == 0, result.Stderr);
        Assert.Matches(@"^1( \d+)+\s*$", result.Stdout);
    }

    [Fact]
    public void Zero_tokens_generate_nothing_and_a_context_shorter_than_the_prompt_says_so()
    {
        var none = CliRunner.Run("run", "-p", "Once upon a time", "-n", "0");
        Assert.True(none.ExitCode == 0, none.Stderr);
        Assert.Equal(" Once upon a time\n\n", none.Stdout);

        var tooShort = CliRunner.Run("run", "-p", "Once upon a time there was a girl", "--ctx", "4");
        Assert.Equal(1, tooShort.ExitCode);
        Assert.Equal("", tooShort.Stdout);
        Assert.Matches(@"^error: the prompt has \d+ tokens but the context holds 4; shorten the prompt or raise --ctx", tooShort.Stderr);
    }

    [Fact]
    public void Help_shows_each_default_once()
    {
        var result = CliRunner.Run("run", "--help");
        Assert.Equal(0, result.ExitCode);
        string[] lines = result.Stdout.Split('\n');
        Assert.Contains(lines, line => line.Contains("--threads") && line.Contains("(default: all cores)"));
        Assert.Contains(lines, line => line.Contains("--n-predict") && line.Contains("[default: 128]"));
        Assert.DoesNotContain(lines, line => line.Contains("(default:") && line.Contains("[default:"));
        Assert.DoesNotContain(AppContext.BaseDirectory, result.Stdout);
    }
}
