using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Text;
using System.Text.RegularExpressions;

namespace Velo.Tests.Cli;

/// <summary><c>velo serve</c> as an operator runs it: a port in use, SIGTERM with a stream running, the request log.</summary>
public sealed class ServeOperatorCommandTests
{
    [Fact]
    public void A_port_in_use_is_one_clear_line()
    {
        using var taken = new TcpListener(IPAddress.Loopback, 0);
        taken.Start();
        int port = ((IPEndPoint)taken.LocalEndpoint).Port;
        var result = CliRunner.Run("serve", "-m", TestPaths.Stories260K, "--port", port.ToString());
        Assert.Equal(1, result.ExitCode);
        Assert.Equal($"error: Failed to bind to address http://127.0.0.1:{port}: address already in use.", result.Stderr.Trim());
    }

    /// <summary>SIGTERM while a stream runs: the stream finishes within the grace period and ends with [DONE]; the process exits 0.</summary>
    [Fact]
    public async Task Sigterm_lets_a_running_stream_finish_and_exits_cleanly()
    {
        var (started, stderr, address) = await StartServeAsync("--ctx", "2048", "--log-format", "json");
        using var process = started;
        try
        {
            using var http = new HttpClient { BaseAddress = new Uri(address) };
            using var request = new HttpRequestMessage(HttpMethod.Post, "/v1/completions")
            {
                Content = new StringContent("{\"prompt\": \"Once\", \"max_tokens\": 1000, \"ignore_eos\": true, \"stream\": true}", Encoding.UTF8, "application/json"),
            };
            using var response = await http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead);
            using var reader = new StreamReader(await response.Content.ReadAsStreamAsync());
            Assert.StartsWith("data: ", await reader.ReadLineAsync());
            using (var kill = Process.Start("kill", ["-TERM", process.Id.ToString()])) await kill.WaitForExitAsync();
            string rest = await reader.ReadToEndAsync();
            Assert.EndsWith("data: [DONE]", rest.Trim());
            using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(60));
            await process.WaitForExitAsync(timeout.Token);
            Assert.Equal(0, process.ExitCode);
            lock (stderr)
                Assert.Matches("\"route\":\"/v1/completions\",\"model\":\"stories260K\",\"status\":200,\"prompt_tokens\":\\d+,\"completion_tokens\":1000", stderr.ToString());
        }
        finally
        {
            if (!process.HasExited) process.Kill();
        }
    }

    /// <summary><c>velo serve -m FILE --model NAME=FILE</c>: both listed, each answering under its name.</summary>
    [Fact]
    public async Task Named_models_are_served_beside_the_default()
    {
        var (started, _, address) = await StartServeAsync("--model", "tiny=" + TestPaths.Stories260K, "--ctx", "256", "--keep-alive", "1s");
        using var process = started;
        try
        {
            using var http = new HttpClient { BaseAddress = new Uri(address) };
            string models = await http.GetStringAsync("/v1/models");
            Assert.Matches("\"id\":\"stories260K\".*\"id\":\"tiny\"", models);
            using var response = await http.PostAsync("/v1/completions",
                new StringContent("{\"model\": \"tiny\", \"prompt\": \"Once\", \"max_tokens\": 3}", Encoding.UTF8, "application/json"));
            Assert.Contains("\"model\":\"tiny\"", await response.Content.ReadAsStringAsync());
        }
        finally
        {
            process.Kill();
        }
    }

    /// <summary>
    /// Starts <c>velo serve -m stories260K --port 0 -t 1 --parallel 1</c> with <paramref name="args"/> and waits until it
    /// says the model is loaded: the process, its standard error so far (lock it to read) and the address it serves on.
    /// </summary>
    private static async Task<(Process Process, StringBuilder Stderr, string Address)> StartServeAsync(params string[] args)
    {
        var start = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (string arg in (string[])[Path.Combine(AppContext.BaseDirectory, "Velo.Cli.dll"), "serve", "-m", TestPaths.Stories260K, "--port", "0",
                     "-t", "1", "--parallel", "1", .. args])
            start.ArgumentList.Add(arg);
        var process = Process.Start(start)!;
        try
        {
            var stderr = new StringBuilder();
            var loaded = new TaskCompletionSource();
            process.ErrorDataReceived += (_, e) =>
            {
                lock (stderr) stderr.AppendLine(e.Data);
                if (e.Data?.Contains("model loaded") == true) loaded.TrySetResult();
            };
            process.BeginErrorReadLine();
            await loaded.Task.WaitAsync(TimeSpan.FromMinutes(2));
            lock (stderr) return (process, stderr, Regex.Match(stderr.ToString(), @" on (http://[\d.:]+)").Groups[1].Value);
        }
        catch
        {
            if (!process.HasExited) process.Kill();
            process.Dispose();
            throw;
        }
    }
}
