namespace Velo.Tests;

public class SharedDataTests
{
    [Fact]
    public void SharedFolderIsBesideTheRepository()
    {
        Assert.True(File.Exists(TestPaths.Stories260K), $"missing {TestPaths.Stories260K}: clone with ../shared beside the repository");
    }
}
