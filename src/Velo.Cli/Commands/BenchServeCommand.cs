using System.CommandLine;
using System.Diagnostics;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;
using Velo.Diagnostics;

namespace Velo.Cli.Commands;

/// <summary>
/// <c>velo bench-serve</c>: drives a running server with N concurrent streaming clients for a fixed number of
/// requests and reports aggregate generated tokens/s and time-to-first-token percentiles.
/// </summary>
internal static class BenchServeCommand
{
    public static Command Create()
    {
        var url = new Option<string>("--url") { Description = "Server address", DefaultValueFactory = _ => "http://127.0.0.1:8080" };
        var clients = new Option<string>("--clients", "-c") { Description = "Concurrent clients; a comma-separated list runs one round per value", DefaultValueFactory = _ => "1,8" };
        var requests = new Option<int>("--requests", "-r") { Description = "Requests per round", DefaultValueFactory = _ => 32 }.AtLeast(1);
        var tokens = new Option<int>("--max-tokens", "-n") { Description = "Tokens generated per request (end-of-text is ignored)", DefaultValueFactory = _ => 64 }
            .AtLeast(1);
        var prompt = new Option<string>("--prompt", "-p") { Description = "Prompt; each request prefixes its number so no two share a cached prompt", DefaultValueFactory = _ => "Once upon a time" };
        var promptWords = new Option<int>("--prompt-words")
        {
            Description = "Instead of --prompt, this many English words drawn per request from --seed (each request its own text, the same on every run)",
        }.AtLeast(0);
        var seed = new Option<int>("--seed") { Description = "Seed of the --prompt-words prompts; change it between runs against one server so no prompt is cached", DefaultValueFactory = _ => 1 };
        var apiKey = new Option<string?>("--api-key") { Description = "Bearer token for a server started with --api-key" };
        var duration = new Option<int>("--duration")
        {
            Description = "Soak test: keep the clients busy for this many seconds (streaming chat and completions, some abandoned " +
                          "mid-stream), then report status codes, hung requests and the server's resident memory over time",
        }.AtLeast(0);
        var requestTimeout = new Option<int>("--request-timeout") { Description = "Soak test: seconds after which a request counts as hung", DefaultValueFactory = _ => 120 }
            .AtLeast(1);

        var command = new Command("bench-serve", "Measure a running server's throughput and time to first token under concurrent streaming clients")
        {
            url, clients, requests, tokens, prompt, promptWords, seed, apiKey, duration, requestTimeout,
        };
        command.SetAction(parse => CommonOptions.Guard(() =>
        {
            int[] rounds = parse.GetValue(clients)!.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Select(int.Parse).ToArray();
            if (rounds.Length == 0 || rounds.Any(c => c < 1)) throw new ArgumentException("--clients must list positive numbers");
            // No drain of abandoned responses: a client that stops reading must look like a disconnect to the server.
            using var http = new HttpClient(new SocketsHttpHandler { MaxResponseDrainSize = 0 })
            {
                BaseAddress = new Uri(parse.GetValue(url)!), Timeout = TimeSpan.FromMinutes(30),
            };
            if (parse.GetValue(apiKey) is { } key) http.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", key);
            if (parse.GetValue(duration) is > 0 and var seconds)
                return new Soak(http, parse.GetValue(prompt)!, parse.GetValue(tokens), TimeSpan.FromSeconds(parse.GetValue(requestTimeout)))
                    .Run(rounds.Max(), TimeSpan.FromSeconds(seconds));
            string fixedPrompt = parse.GetValue(prompt)!;
            int words = parse.GetValue(promptWords), runSeed = parse.GetValue(seed);
            Func<int, string> promptFor = words > 0 ? number => LoadPrompts.For(runSeed, number, words) : number => $"{number}. {fixedPrompt}";
            int maxTokens = parse.GetValue(tokens);
            var bench = new Bench(http, promptFor, maxTokens);
            bench.RunAsync(1, 1).GetAwaiter().GetResult(); // warm-up: JIT and first-touch of the weights on both sides
            Console.WriteLine($"{"clients",7} {"requests",8} {"tokens",7} {"seconds",8} {"tokens/s",9} {"TTFT p50 ms",11} {"TTFT p99 ms",11} {"ms/token",8} " +
                              $"{"decode t/s p50",14} {"prompt tokens",13}");
            foreach (int round in rounds)
            {
                var r = bench.RunAsync(round, parse.GetValue(requests)).GetAwaiter().GetResult();
                Console.WriteLine($"{round,7} {r.Requests,8} {r.Tokens,7} {r.Seconds,8:F2} {r.Tokens / r.Seconds,9:F1} {r.TtftP50 * 1000,11:F1} {r.TtftP99 * 1000,11:F1} " +
                                  $"{r.MsPerToken,8:F2} {r.DecodeP50,14:F1} {r.PromptTokens,13:F1}");
                // Tokens per second compare servers only when each generated all it was asked for.
                if (r.Tokens != (long)r.Requests * maxTokens)
                    Console.Error.WriteLine($"bench-serve: {r.Requests * (long)maxTokens - r.Tokens} of {r.Requests * (long)maxTokens} tokens were not generated " +
                                            "(a request ended early: end of text where ignore_eos is not honoured, a stop, or the context's end)");
            }
            return 0;
        }));
        return command;
    }

    /// <param name="DecodeP50">The median request's generated tokens per second after its first.</param>
    /// <param name="PromptTokens">The mean prompt length in the server's tokens, as its usage reports it.</param>
    private sealed record RoundResult(int Requests, long Tokens, double Seconds, double TtftP50, double TtftP99, double MsPerToken, double DecodeP50, double PromptTokens);

    private sealed class Bench(HttpClient http, Func<int, string> promptFor, int maxTokens)
    {
        private int _next;

        public async Task<RoundResult> RunAsync(int clients, int requests)
        {
            int remaining = requests;
            var ttfts = new List<double>();
            var perToken = new List<double>();
            long tokens = 0, promptTokens = 0;
            var clock = Stopwatch.StartNew();
            await Task.WhenAll(Enumerable.Range(0, clients).Select(async _ =>
            {
                while (Interlocked.Decrement(ref remaining) >= 0)
                {
                    var (ttft, generated, prompt, seconds) = await OneAsync(Interlocked.Increment(ref _next));
                    lock (ttfts)
                    {
                        ttfts.Add(ttft);
                        tokens += generated;
                        promptTokens += prompt;
                        if (generated > 1) perToken.Add((seconds - ttft) / (generated - 1));
                    }
                }
            }));
            double elapsed = clock.Elapsed.TotalSeconds;
            ttfts.Sort();
            perToken.Sort();
            return new RoundResult(requests, tokens, elapsed, Percentile(ttfts, 0.50), Percentile(ttfts, 0.99),
                perToken.Count > 0 ? perToken.Average() * 1000 : 0, perToken.Count > 0 ? 1 / Percentile(perToken, 0.50) : 0,
                (double)promptTokens / requests);
        }

        /// <summary>Nearest-rank percentile of sorted values.</summary>
        private static double Percentile(List<double> sorted, double p) => sorted[Math.Clamp((int)Math.Ceiling(p * sorted.Count) - 1, 0, sorted.Count - 1)];

        private async Task<(double Ttft, int Tokens, int PromptTokens, double Seconds)> OneAsync(int number)
        {
            // Only fields llama-server and velo serve both honour, so the same requests drive either.
            string body = JsonSerializer.Serialize(new Dictionary<string, object>
            {
                ["prompt"] = promptFor(number),
                ["max_tokens"] = maxTokens,
                ["ignore_eos"] = true,
                ["stream"] = true,
                ["stream_options"] = new Dictionary<string, object> { ["include_usage"] = true },
            });
            var clock = Stopwatch.StartNew();
            using var request = new HttpRequestMessage(HttpMethod.Post, "/v1/completions") { Content = new StringContent(body, Encoding.UTF8, "application/json") };
            // A connection per request: llama-server's HTTP library closes a kept-alive connection after a few requests,
            // and a POST sent on it as it closes fails.
            request.Headers.ConnectionClose = true;
            using var response = await http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead);
            if (!response.IsSuccessStatusCode)
                throw new InvalidOperationException($"the server answered {(int)response.StatusCode}: {await response.Content.ReadAsStringAsync()}");
            using var reader = new StreamReader(await response.Content.ReadAsStreamAsync());
            double ttft = -1, seconds = -1;
            int generated = 0, promptTokens = 0;
            while (await reader.ReadLineAsync() is { } line)
            {
                if (seconds >= 0 || !line.StartsWith("data: ", StringComparison.Ordinal)) continue;
                // The response is read to its end: llama-server (c392e50) aborts when a client closes a stream it has
                // not finished.
                if (line == "data: [DONE]")
                {
                    seconds = clock.Elapsed.TotalSeconds;
                    continue;
                }
                // The client shares the server's cores, so it parses only the chunks it measures: until the first
                // token, and the usage chunk (inside a JSON string the quotes would be escaped, so this text is
                // only ever the usage object itself).
                if (ttft >= 0 && !line.Contains("\"usage\":{", StringComparison.Ordinal)) continue;
                using var chunk = JsonDocument.Parse(line.AsMemory(6));
                if (ttft < 0 && chunk.RootElement.GetProperty("choices") is { ValueKind: JsonValueKind.Array } choices && choices.GetArrayLength() > 0)
                    ttft = clock.Elapsed.TotalSeconds;
                if (chunk.RootElement.TryGetProperty("usage", out var usage) && usage.ValueKind == JsonValueKind.Object)
                {
                    generated = usage.GetProperty("completion_tokens").GetInt32();
                    promptTokens = usage.GetProperty("prompt_tokens").GetInt32();
                }
            }
            return (ttft, generated, promptTokens, seconds >= 0 ? seconds : clock.Elapsed.TotalSeconds);
        }
    }

    /// <summary>
    /// A soak test: every client sends streaming requests back to back until the time is up, alternating chat and
    /// text completions and abandoning one in five after its first token. It counts answers by status, treats a
    /// request that outlives the timeout as hung, and samples the server's resident memory from /metrics. A 5xx
    /// other than 503 with Retry-After, or a hung request, makes the exit status 1.
    /// </summary>
    private sealed class Soak(HttpClient http, string prompt, int maxTokens, TimeSpan requestTimeout)
    {
        private readonly Dictionary<string, int> _outcomes = new(StringComparer.Ordinal);
        private long _chunks;
        private int _next;

        public int Run(int clients, TimeSpan duration)
        {
            var clock = Stopwatch.StartNew();
            var samples = new List<(double Seconds, long Resident, long Heap)>();
            using var stop = new CancellationTokenSource(duration);
            var sampler = Task.Run(async () =>
            {
                while (!stop.IsCancellationRequested)
                {
                    if (await MemoryAsync() is { } memory) lock (samples) samples.Add((clock.Elapsed.TotalSeconds, memory.Resident, memory.Heap));
                    try { await Task.Delay(TimeSpan.FromSeconds(Math.Clamp(duration.TotalSeconds / 20, 1, 30)), stop.Token); }
                    catch (OperationCanceledException) { }
                }
            });
            Task.WaitAll([.. Enumerable.Range(0, clients).Select(_ => Task.Run(async () =>
            {
                while (!stop.IsCancellationRequested) Count(await OneAsync(Interlocked.Increment(ref _next)));
            })), sampler]);
            if (MemoryAsync().GetAwaiter().GetResult() is { } last) samples.Add((clock.Elapsed.TotalSeconds, last.Resident, last.Heap));

            Console.WriteLine($"{clients} clients for {clock.Elapsed.TotalSeconds:F0} s: {Interlocked.Read(ref _chunks)} chunks streamed");
            foreach (var (outcome, count) in _outcomes.OrderBy(o => o.Key, StringComparer.Ordinal)) Console.WriteLine($"  {outcome,-28} {count,8}");
            Console.WriteLine($"{"seconds",8} {"resident MiB",13} {"GC heap MiB",12}");
            foreach (var (seconds, resident, heap) in samples) Console.WriteLine($"{seconds,8:F0} {resident / 1048576.0,13:F1} {heap / 1048576.0,12:F1}");
            bool failed = _outcomes.Keys.Any(o => o.StartsWith("5", StringComparison.Ordinal) && o != "503 with Retry-After" || o == "hung");
            Console.WriteLine(failed ? "soak: FAILED (a 5xx other than 503 with Retry-After, or a hung request)" : "soak: passed");
            return failed ? 1 : 0;
        }

        private void Count(string outcome)
        {
            lock (_outcomes) _outcomes[outcome] = _outcomes.GetValueOrDefault(outcome) + 1;
        }

        private async Task<(long Resident, long Heap)?> MemoryAsync()
        {
            try
            {
                string text = await http.GetStringAsync("/metrics");
                long Read(string name) => text.Split('\n').Where(line => line.StartsWith(name + " ", StringComparison.Ordinal))
                    .Select(line => long.Parse(line[(name.Length + 1)..], System.Globalization.CultureInfo.InvariantCulture)).FirstOrDefault();
                return (Read("process_resident_memory_bytes"), Read("dotnet_gc_heap_bytes"));
            }
            catch (HttpRequestException)
            {
                return null;
            }
        }

        private async Task<string> OneAsync(int number)
        {
            bool chat = number % 2 == 0, abandon = number % 5 == 0;
            var fields = new Dictionary<string, object>
            {
                ["max_tokens"] = maxTokens, ["ignore_eos"] = true, ["stream"] = true,
            };
            if (chat) fields["messages"] = new[] { new Dictionary<string, string> { ["role"] = "user", ["content"] = $"{number}. {prompt}" } };
            else fields["prompt"] = $"{number}. {prompt}";
            using var timeout = new CancellationTokenSource(requestTimeout);
            try
            {
                using var request = new HttpRequestMessage(HttpMethod.Post, chat ? "/v1/chat/completions" : "/v1/completions")
                {
                    Content = new StringContent(JsonSerializer.Serialize(fields), Encoding.UTF8, "application/json"),
                };
                using var response = await http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, timeout.Token);
                int status = (int)response.StatusCode;
                if (status == 503)
                {
                    var retry = response.Headers.RetryAfter?.Delta;
                    await Task.Delay(retry ?? TimeSpan.FromSeconds(1), timeout.Token);
                    return retry != null ? "503 with Retry-After" : "503 without Retry-After";
                }
                if (status != 200) return $"{status}";
                using var reader = new StreamReader(await response.Content.ReadAsStreamAsync(timeout.Token));
                while (await reader.ReadLineAsync(timeout.Token) is { } line)
                {
                    if (line == "data: [DONE]") return "200 streamed";
                    if (line.StartsWith("data: {\"error\"", StringComparison.Ordinal)) return "200 with an error event";
                    if (!line.StartsWith("data: ", StringComparison.Ordinal)) continue;
                    Interlocked.Increment(ref _chunks);
                    if (abandon) return "200 abandoned mid-stream";
                }
                return "200 cut short";
            }
            catch (OperationCanceledException) when (timeout.IsCancellationRequested)
            {
                return "hung";
            }
            catch (HttpRequestException e)
            {
                return $"connection error: {e.HttpRequestError}";
            }
        }
    }
}
