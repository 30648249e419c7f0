namespace Velo.Tests;

/// <summary>Locates the repository root and the <c>../shared</c> data folder beside it.</summary>
public static class TestPaths
{
    public static string RepoRoot { get; } = FindRepoRoot();

    public static string Shared { get; } = Path.GetFullPath(Path.Combine(RepoRoot, "..", "shared"));

    public static string SharedFile(params string[] parts) => Path.Combine([Shared, .. parts]);

    public static string Stories260K => SharedFile("models", "stories260K", "stories260K.gguf");

    private static string FindRepoRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir != null; dir = dir.Parent)
            if (File.Exists(Path.Combine(dir.FullName, "Velo.slnx")))
                return dir.FullName;
        throw new DirectoryNotFoundException("Velo.slnx not found above " + AppContext.BaseDirectory);
    }
}
