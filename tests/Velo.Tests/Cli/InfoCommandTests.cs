namespace Velo.Tests.Cli;

public class InfoCommandTests
{
    public static TheoryData<string> SharedGgufFiles()
    {
        var data = new TheoryData<string>();
        foreach (var f in Directory.EnumerateFiles(TestPaths.Shared, "*.gguf", SearchOption.AllDirectories).Order())
            data.Add(Path.GetRelativePath(TestPaths.Shared, f));
        return data;
    }

    [Theory]
    [MemberData(nameof(SharedGgufFiles))]
    public void DescribesEverySharedGgufFile(string relativePath)
    {
        var r = CliRunner.Run("info", Path.Combine(TestPaths.Shared, relativePath));
        Assert.True(r.ExitCode == 0, r.Stderr);
        Assert.Contains("GGUF v", r.Stdout);
        Assert.Contains("tokenizer", r.Stdout);
        Assert.Matches(@"loads\s*│\s*yes", r.Stdout);
    }

    [Fact]
    public void Stories260KShowsArchitectureAndTensors()
    {
        var r = CliRunner.Run("info", TestPaths.Stories260K);
        Assert.Equal(0, r.ExitCode);
        Assert.Contains("grouped-query", r.Stdout);
        Assert.Contains("F32", r.Stdout);
        Assert.Contains("48", r.Stdout);
    }
}
