using System.Diagnostics;
using System.Reflection;

namespace Velo.Tests.Packaging;

/// <summary>
/// The NuGet packages as a user meets them: packed into a folder feed, referenced by a fresh console app built in Debug,
/// and the <c>velo</c> tool installed from the same feed. Each run packs a version of its own, so NuGet's package cache
/// never serves an earlier run's build; the dependencies come from nuget.org (or the cache), Velo's packages only from
/// the folder. Filter with <c>--filter Category!=Packaging</c> to leave it out.
/// </summary>
[Trait("Category", "Packaging")]
public sealed class PackageTests : IDisposable
{
    private static readonly string[] PackageIds = ["Velo", "Velo.Server", "Velo.Cli"];

    private readonly string _folder = Directory.CreateTempSubdirectory("velo-packaging-").FullName;
    private readonly string _version = $"0.0.0-test.{Guid.NewGuid():N}";

    public void Dispose()
    {
        Directory.Delete(_folder, recursive: true);
        foreach (string id in PackageIds)
        {
            string cached = Path.Combine(GlobalPackagesFolder, id.ToLowerInvariant(), _version);
            if (Directory.Exists(cached)) Directory.Delete(cached, recursive: true);
        }
    }

    private static string GlobalPackagesFolder => Environment.GetEnvironmentVariable("NUGET_PACKAGES") is { Length: > 0 } folder
        ? folder
        : Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".nuget", "packages");

    /// <summary>The configuration the tests (and so the packed projects) were built in.</summary>
    private static string Configuration => typeof(PackageTests).Assembly.GetCustomAttribute<AssemblyConfigurationAttribute>()!.Configuration;

    [Fact]
    public void DebugAppRunsTheEngineFromThePackagesAndTheToolInstalls()
    {
        string feed = Path.Combine(_folder, "feed");
        // The projects are built already (the tests reference them); packing only gathers them.
        Dotnet(TestPaths.RepoRoot, "pack", Path.Combine(TestPaths.RepoRoot, "Velo.slnx"), "-c", Configuration, "--no-build", "-o", feed,
            $"-p:PackageVersion={_version}");
        foreach (string id in PackageIds)
        {
            Assert.True(File.Exists(Path.Combine(feed, $"{id}.{_version}.nupkg")), $"{id} was not packed");
            Assert.True(File.Exists(Path.Combine(feed, $"{id}.{_version}.snupkg")), $"{id} has no symbol package");
        }

        string app = Path.Combine(_folder, "app");
        WriteConsoleApp(app, feed);
        // `dotnet run` builds the app in Debug: Velo must still arrive as the packed (optimized) build.
        string output = Dotnet(app, "run", "--", TestPaths.Stories260K);
        Assert.Contains("app optimized: False", output);
        Assert.Contains($"velo optimized: {Configuration == "Release"}", output);
        Assert.Contains("endpoints: Velo.Server.VeloEndpoints", output);
        // The Velo package's buildTransitive props reach an app that references only Velo.Server.
        Assert.Matches("tiered compilation: (?i:false)", output);
        Assert.Matches(@"answer: .*\S", output);

        string tools = Path.Combine(_folder, "tools");
        Dotnet(app, "tool", "install", "Velo.Cli", "--version", _version, "--tool-path", tools, "--configfile", Path.Combine(app, "nuget.config"));
        // With no -m the tool runs the demo model packed inside it.
        string run = Run(Path.Combine(tools, "velo"), app, "run", "-p", "Once upon a time", "-n", "4", "--temp", "0", "-t", "2");
        Assert.StartsWith(" Once upon a time", run);
    }

    /// <summary>A console app that streams an answer through <c>VeloChatClient</c> as README shows, and names a type of Velo.Server.</summary>
    private void WriteConsoleApp(string app, string feed)
    {
        Directory.CreateDirectory(app);
        // Empty Directory.Build files stop MSBuild from importing any found above the temporary folder.
        File.WriteAllText(Path.Combine(app, "Directory.Build.props"), "<Project />");
        File.WriteAllText(Path.Combine(app, "Directory.Build.targets"), "<Project />");
        File.WriteAllText(Path.Combine(app, "nuget.config"), $"""
            <?xml version="1.0" encoding="utf-8"?>
            <configuration>
              <packageSources>
                <clear />
                <add key="velo-test-feed" value="{feed}" />
                <add key="nuget.org" value="https://api.nuget.org/v3/index.json" />
              </packageSources>
              <packageSourceMapping>
                <packageSource key="velo-test-feed">
                  <package pattern="Velo" />
                  <package pattern="Velo.*" />
                </packageSource>
                <packageSource key="nuget.org">
                  <package pattern="*" />
                </packageSource>
              </packageSourceMapping>
            </configuration>
            """);
        File.WriteAllText(Path.Combine(app, "app.csproj"), $"""
            <Project Sdk="Microsoft.NET.Sdk">
              <PropertyGroup>
                <OutputType>Exe</OutputType>
                <TargetFramework>net10.0</TargetFramework>
                <ImplicitUsings>enable</ImplicitUsings>
                <Nullable>enable</Nullable>
              </PropertyGroup>
              <ItemGroup>
                <PackageReference Include="Velo.Server" Version="{_version}" />
              </ItemGroup>
            </Project>
            """);
        File.WriteAllText(Path.Combine(app, "Program.cs"), """
            using System.Diagnostics;
            using System.Reflection;
            using Microsoft.Extensions.AI;
            using Velo.Generation;

            static bool Optimized(Assembly assembly) => assembly.GetCustomAttribute<DebuggableAttribute>()?.IsJITOptimizerDisabled != true;

            // README's snippet, shortened.
            using IChatClient client = VeloChatClient.Open(args[0], threads: 2);
            var answer = new System.Text.StringBuilder();
            await foreach (var update in client.GetStreamingResponseAsync("Tell me a story about a cat.", new ChatOptions { MaxOutputTokens = 8, Temperature = 0 }))
                answer.Append(update.Text);
            Console.WriteLine($"answer: {answer}");
            Console.WriteLine($"app optimized: {Optimized(typeof(Program).Assembly)}");
            Console.WriteLine($"velo optimized: {Optimized(typeof(VeloChatClient).Assembly)}");
            Console.WriteLine($"endpoints: {typeof(Velo.Server.VeloEndpoints).FullName}");
            Console.WriteLine($"tiered compilation: {AppContext.GetData("System.Runtime.TieredCompilation") ?? "default"}");
            """);
    }

    private static string Dotnet(string workingDirectory, params string[] args) => Run("dotnet", workingDirectory, args);

    private static string Run(string program, string workingDirectory, params string[] args)
    {
        var start = new ProcessStartInfo(program)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
            WorkingDirectory = workingDirectory,
        };
        foreach (string a in args) start.ArgumentList.Add(a);
        // The test host runs inside `dotnet test`, whose MSBuild variables would steer the child's build to the wrong SDK paths.
        foreach (string name in start.Environment.Keys.Where(k => k.StartsWith("MSBuild", StringComparison.OrdinalIgnoreCase)).ToList())
            start.Environment.Remove(name);
        start.Environment["DOTNET_CLI_TELEMETRY_OPTOUT"] = "1";
        start.Environment["DOTNET_NOLOGO"] = "1";
        using var process = Process.Start(start)!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        if (!process.WaitForExit(TimeSpan.FromMinutes(5)))
        {
            process.Kill(entireProcessTree: true);
            throw new TimeoutException($"{program} {string.Join(' ', args)} did not finish in 5 minutes");
        }
        Assert.True(process.ExitCode == 0, $"{program} {string.Join(' ', args)} exited with {process.ExitCode}:\n{stdout.Result}\n{stderr.Result}");
        return stdout.Result;
    }
}
