using Velo.Fuzz;
using Xunit.Abstractions;

namespace Velo.Tests;

/// <summary>
/// Replays the fuzzers' seed corpora and every saved fuzz finding (FuzzRegressions/TARGET/*) through the same target
/// functions fuzz/run.sh fuzzes: each input must be accepted or rejected with the clean exception its surface
/// documents. A crash found by fuzzing is committed there, named after what it triggers, and stays fixed.
/// </summary>
/// <remarks>
/// FuzzRegressions/known-crashes.txt lists findings whose fix is not on this branch yet: "TARGET/FILE EXCEPTION why".
/// Such a file may still fail with that exception type; "process" marks one that kills the process (a stack overflow,
/// a native heap overflow), which cannot be replayed inside the test host at all. Delete a line once its fix lands.
/// </remarks>
public class FuzzRegressionTests(ITestOutputHelper output)
{
    private static readonly string Folder = Path.Combine(TestPaths.RepoRoot, "tests", "Velo.Tests", "FuzzRegressions");

    public static TheoryData<string> Targets() => [.. FuzzTargets.Names];

    public static TheoryData<string> RegressionFiles()
    {
        var files = new TheoryData<string>();
        foreach (string target in FuzzTargets.Names)
        {
            string dir = Path.Combine(Folder, target);
            if (!Directory.Exists(dir)) continue;
            foreach (string file in Directory.GetFiles(dir).Order(StringComparer.Ordinal)) files.Add($"{target}/{Path.GetFileName(file)}");
        }
        return files;
    }

    [Theory]
    [MemberData(nameof(Targets))]
    public void Seeds_are_accepted_or_cleanly_rejected(string target)
    {
        foreach (var (name, data) in FuzzSeeds.For(target, TestPaths.Shared))
            output.WriteLine($"{name}: {FuzzTargets.Run(target, data)}");
    }

    [Theory]
    [MemberData(nameof(RegressionFiles))]
    public void Saved_finding_is_accepted_or_cleanly_rejected(string file)
    {
        string target = file[..file.IndexOf('/')];
        byte[] input = File.ReadAllBytes(Path.Combine(Folder, file));
        if (!KnownCrashes().TryGetValue(file, out string? known))
        {
            output.WriteLine(FuzzTargets.Run(target, input));
            return;
        }
        if (known == "process")
        {
            output.WriteLine("not replayed: listed in known-crashes.txt as killing the process");
            return;
        }
        try
        {
            output.WriteLine(FuzzTargets.Run(target, input));
        }
        catch (Exception e) when (e.GetType().Name == known)
        {
            output.WriteLine($"known crash, still unfixed here: {e.GetType().Name}: {e.Message}");
        }
    }

    [Fact]
    public void Known_crashes_name_existing_files()
    {
        foreach (string file in KnownCrashes().Keys)
            Assert.True(File.Exists(Path.Combine(Folder, file)), $"known-crashes.txt names {file}, which is not in FuzzRegressions");
    }

    /// <summary>known-crashes.txt: file (TARGET/NAME) to the exception type name it may still throw, or "process".</summary>
    private static Dictionary<string, string> KnownCrashes()
    {
        string list = Path.Combine(Folder, "known-crashes.txt");
        if (!File.Exists(list)) return [];
        return File.ReadLines(list)
            .Where(line => line.Length > 0 && !line.StartsWith('#'))
            .Select(line => line.Split(' ', 3, StringSplitOptions.RemoveEmptyEntries))
            .ToDictionary(fields => fields[0], fields => fields[1]);
    }
}
