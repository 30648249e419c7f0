using System.Diagnostics;

namespace Velo.Tests.Cli;

/// <summary>Runs the built <c>velo</c> command in a child process, as a user would.</summary>
public static class CliRunner
{
    public sealed record Result(int ExitCode, byte[] StdoutBytes, string Stderr)
    {
        public string Stdout => System.Text.Encoding.UTF8.GetString(StdoutBytes);
    }

    public static Result Run(params string[] args) => RunWithInput(null, args);

    /// <summary>Runs the command with <paramref name="input"/> as its standard input (closed after it).</summary>
    public static Result RunWithInput(string? input, params string[] args)
    {
        var start = new ProcessStartInfo("dotnet")
        {
            RedirectStandardInput = input != null,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
            WorkingDirectory = TestPaths.RepoRoot,
        };
        start.ArgumentList.Add(Path.Combine(AppContext.BaseDirectory, "Velo.Cli.dll"));
        foreach (var a in args) start.ArgumentList.Add(a);
        using var process = Process.Start(start)!;
        if (input != null)
        {
            process.StandardInput.Write(input);
            process.StandardInput.Close();
        }
        var stdout = new MemoryStream();
        var copy = process.StandardOutput.BaseStream.CopyToAsync(stdout);
        var stderr = process.StandardError.ReadToEndAsync();
        if (!process.WaitForExit(TimeSpan.FromMinutes(3)))
        {
            process.Kill(entireProcessTree: true);
            throw new TimeoutException($"velo {string.Join(' ', args)} did not finish in 3 minutes");
        }
        copy.Wait();
        return new Result(process.ExitCode, stdout.ToArray(), stderr.Result);
    }
}
