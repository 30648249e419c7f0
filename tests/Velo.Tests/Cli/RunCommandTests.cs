namespace Velo.Tests.Cli;

public class RunCommandTests
{
    [Fact]
    public void GreedyOnceUponATimeMatchesTheReferenceExactly()
    {
        var r = CliRunner.Run("run", "-m", TestPaths.Stories260K, "-p", "Once upon a time", "-n", "200", "--temp", "0", "--ignore-eos");
        Assert.True(r.ExitCode == 0, r.Stderr);
        Assert.Equal(File.ReadAllBytes(TestPaths.SharedFile("eval", "stories260K-greedy-once-upon-a-time.txt")), r.StdoutBytes);
        Assert.Contains("tokens/s", r.Stderr);
        Assert.Contains("MiB resident", r.Stderr);
    }

    /// <summary>An F16 KV cache, llama.cpp's default, still reproduces the reference text.</summary>
    [Fact]
    public void GreedyWithAnF16KvCacheMatchesTheReference()
    {
        var r = CliRunner.Run("run", "-m", TestPaths.Stories260K, "-p", "Once upon a time", "-n", "200", "--temp", "0", "--ignore-eos",
            "-ctk", "f16", "-ctv", "f16");
        Assert.True(r.ExitCode == 0, r.Stderr);
        Assert.Equal(File.ReadAllBytes(TestPaths.SharedFile("eval", "stories260K-greedy-once-upon-a-time.txt")), r.StdoutBytes);
    }

    [Fact]
    public void AnUnsupportedKvCacheTypeIsAClearError()
    {
        var r = CliRunner.Run("run", "-m", TestPaths.Stories260K, "-p", "Hi", "-n", "4", "--cache-type-k", "q4_0");
        Assert.Equal(1, r.ExitCode);
        Assert.Contains("unknown KV cache type 'q4_0': use f32, f16 or q8_0", r.Stderr);
    }

    /// <summary>Q8_0 blocks of 32 would straddle stories260K's heads of 8 dimensions.</summary>
    [Fact]
    public void A_Q8_0_cache_for_heads_not_a_multiple_of_32_is_a_clear_error()
    {
        var r = CliRunner.Run("run", "-m", TestPaths.Stories260K, "-p", "Hi", "-n", "4", "-ctk", "q8_0", "-ctv", "q8_0");
        Assert.Equal(1, r.ExitCode);
        Assert.Contains("A q8_0 KV cache needs head dimensions that are multiples of 32; this model's keys have 8", r.Stderr);
    }

    /// <summary>
    /// The reference zoo text is exactly 100 generated tokens (the model's end-of-sequence logit is far below the
    /// newline it emits next), so it is reproduced with -n 100.
    /// </summary>
    [Fact]
    public void GreedyZooMatchesTheReferenceExactly()
    {
        var r = CliRunner.Run("run", "-m", TestPaths.Stories260K, "-p", "Lily and Ben went to the zoo", "-n", "100", "--temp", "0");
        Assert.True(r.ExitCode == 0, r.Stderr);
        Assert.Equal(File.ReadAllBytes(TestPaths.SharedFile("eval", "stories260K-greedy-zoo.txt")), r.StdoutBytes);
    }

    [Fact]
    public void WithoutAModelItUsesTheBundledOne()
    {
        var r = CliRunner.Run("run", "-p", "Once upon a time", "-n", "20", "--temp", "0");
        Assert.True(r.ExitCode == 0, r.Stderr);
        Assert.StartsWith(" Once upon a time, there was a little girl", r.Stdout);
    }

    [Fact]
    public void SameSeedSameText()
    {
        string[] args = ["run", "-m", TestPaths.Stories260K, "-p", "Once upon a time", "-n", "40", "--temp", "1", "--seed", "7"];
        var a = CliRunner.Run(args);
        var b = CliRunner.Run(args);
        Assert.Equal(0, a.ExitCode);
        Assert.Equal(a.Stdout, b.Stdout);
        var c = CliRunner.Run([.. args[..^1], "8"]);
        Assert.NotEqual(a.Stdout, c.Stdout);
    }

    [Fact]
    public void PromptFile()
    {
        string path = Path.GetTempFileName();
        File.WriteAllText(path, "Once upon a time");
        try
        {
            var r = CliRunner.Run("run", "-m", TestPaths.Stories260K, "--prompt-file", path, "-n", "200", "--temp", "0", "--ignore-eos");
            Assert.Equal(File.ReadAllBytes(TestPaths.SharedFile("eval", "stories260K-greedy-once-upon-a-time.txt")), r.StdoutBytes);
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Theory]
    [InlineData("missing.gguf", "model file not found")]
    [InlineData("README.md", "not a GGUF file")]
    public void BadModelGivesAClearError(string model, string message)
    {
        var r = CliRunner.Run("run", "-m", model, "-p", "hi");
        Assert.Equal(1, r.ExitCode);
        Assert.Contains(message, r.Stderr);
        Assert.DoesNotContain("   at ", r.Stderr); // no stack trace
    }

    [Fact]
    public void PromptLongerThanTheContextIsRefused()
    {
        var r = CliRunner.Run("run", "-m", TestPaths.Stories260K, "-p", string.Join(' ', Enumerable.Repeat("Once upon a time", 20)), "--ctx", "16");
        Assert.Equal(1, r.ExitCode);
        Assert.Contains("the context holds 16", r.Stderr);
    }

    [Fact]
    public void ANegativeContextIsAnErrorNamingTheOption()
    {
        var r = CliRunner.Run("run", "-m", TestPaths.Stories260K, "-p", "hi", "-n", "4", "--ctx", "-5");
        Assert.Equal(1, r.ExitCode);
        Assert.Equal("error: --ctx must be at least 0 (0 or absent means the model's own), got -5", r.Stderr.Trim());
    }

    [Fact]
    public void MoreThreadsThanProcessorsIsAnError()
    {
        var r = CliRunner.Run("run", "-m", TestPaths.Stories260K, "-p", "hi", "-n", "4", "-t", "1000");
        Assert.Equal(1, r.ExitCode);
        Assert.StartsWith($"error: --threads must be between 1 and {Environment.ProcessorCount}", r.Stderr);
        Assert.Contains("got 1000", r.Stderr);
    }

    [Fact]
    public void AContextBeyondTheTrainedOneIsAllowedWithAWarning()
    {
        var r = CliRunner.Run("run", "-m", TestPaths.Stories260K, "-p", "hi", "-n", "4", "--ctx", "4096");
        Assert.True(r.ExitCode == 0, r.Stderr);
        Assert.Contains("warning: the context of 4096 tokens is longer than the 2048", r.Stderr);
    }

    [Fact]
    public void AContextTooLargeForMemoryIsRefusedWithOneThatFits()
    {
        var r = CliRunner.Run("run", "-m", TestPaths.Stories260K, "-p", "hi", "-n", "4", "--ctx", "2000000000");
        Assert.Equal(1, r.ExitCode);
        Assert.Contains("error: this configuration needs", r.Stderr);
        Assert.Matches(@"what fits: --ctx \d+ with --parallel 1", r.Stderr);
        Assert.DoesNotContain("   at ", r.Stderr);
    }

    /// <summary>Speculation, with the model as its own draft or with prompt lookup, prints the reference text and its statistics.</summary>
    [Theory]
    [InlineData("-md", "MODEL", "draft")]
    [InlineData("--spec-ngram", "2", "prompt lookup, n-gram 2")]
    public void GreedySpeculationMatchesTheReferenceAndReportsAcceptance(string option, string value, string source)
    {
        var r = CliRunner.Run("run", "-m", TestPaths.Stories260K, "-p", "Once upon a time", "-n", "200", "--temp", "0", "--ignore-eos",
            option, value == "MODEL" ? TestPaths.Stories260K : value, "--draft-max", "8", "--draft-p-min", "0.5");
        Assert.True(r.ExitCode == 0, r.Stderr);
        Assert.Equal(File.ReadAllBytes(TestPaths.SharedFile("eval", "stories260K-greedy-once-upon-a-time.txt")), r.StdoutBytes);
        Assert.Matches(@"speculation: +\d+ drafted, \d+ accepted \(\d+\.\d%\), \d+\.\d\d tokens per target pass", r.Stderr);
        Assert.Contains(source, r.Stderr);
    }

    [Fact]
    public void ADraftMinAboveTheDraftMaxIsAClearError()
    {
        var r = CliRunner.Run("run", "-m", TestPaths.Stories260K, "-p", "Hi", "-n", "4", "--spec-ngram", "2", "--draft-max", "4", "--draft-min", "5");
        Assert.Equal(1, r.ExitCode);
        Assert.Contains("--draft-min must be between 0 and --draft-max (4), got 5", r.Stderr);
    }

    [Fact]
    public void ADraftModelAndPromptLookupTogetherAreAClearError()
    {
        var r = CliRunner.Run("run", "-m", TestPaths.Stories260K, "-p", "Hi", "-n", "4", "--spec-ngram", "2", "-md", TestPaths.Stories260K);
        Assert.Equal(1, r.ExitCode);
        Assert.Contains("give either --model-draft or --spec-ngram", r.Stderr);
    }
}
