namespace Velo.Tests.Cli;

public class TokenizeCommandTests
{
    [Fact]
    public void PrintsTheReferenceIdsForStories260K()
    {
        var r = CliRunner.Run("tokenize", "-m", TestPaths.Stories260K, "--text", "Once upon a time", "--ids");
        Assert.True(r.ExitCode == 0, r.Stderr);
        Assert.Equal("1 403 407 261 378", r.Stdout.Trim());
    }

    [Fact]
    public void ReadsAHuggingFaceFolderAndPrintsPieces()
    {
        var r = CliRunner.Run("tokenize", "-m", TestPaths.SharedFile("tokenizers", "hf", "qwen3"), "--text", "Hello world", "--no-special");
        Assert.True(r.ExitCode == 0, r.Stderr);
        Assert.Contains("-> 'Hello'", r.Stdout);
        Assert.Contains("-> 'Ġworld'", r.Stdout);
    }

    [Fact]
    public void NeedsSomeText()
    {
        var r = CliRunner.Run("tokenize", "-m", TestPaths.Stories260K);
        Assert.Equal(1, r.ExitCode);
        Assert.Contains("--text or --file", r.Stderr);
    }
}
