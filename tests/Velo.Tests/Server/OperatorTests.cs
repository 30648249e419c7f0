using System.Net;
using System.Net.Http.Headers;
using System.Text.Json;
using Microsoft.AspNetCore.Builder;
using Velo.Generation;
using Velo.Inference;
using Velo.Server;
using Velo.Threading;

namespace Velo.Tests.Server;

/// <summary>What an operator needs around the API: a request log, CORS, JSON errors for every route, /props, a clean shutdown.</summary>
public sealed class OperatorTests
{
    private const string ChatBody = "{\"messages\": [{\"role\": \"user\", \"content\": \"Hello\"}], \"max_tokens\": 5, \"temperature\": 0}";

    [Fact]
    public async Task Each_request_is_one_log_line_with_its_tokens_and_never_the_key()
    {
        var log = new StringWriter();
        using var server = new HostedServer(new VeloHostOptions { LogFormat = RequestLogFormat.Json, LogWriter = log }, apiKey: "sekret-key-42");
        var (status, _) = await server.PostAsync("/v1/chat/completions", ChatBody, apiKey: "sekret-key-42");
        Assert.Equal(200, status);
        (status, _) = await server.PostAsync("/api/generate", "{\"model\": \"stories260K\", \"prompt\": \"Once\", \"raw\": true, \"stream\": false, \"options\": {\"num_predict\": 3}}", apiKey: "sekret-key-42");
        Assert.Equal(200, status);
        using var unauthorized = await server.Http.GetAsync("/v1/models?api_key=sekret-key-42");
        Assert.Equal(HttpStatusCode.Unauthorized, unauthorized.StatusCode);

        string[] lines = log.ToString().Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal(3, lines.Length);
        Assert.DoesNotContain("sekret", log.ToString());
        var chat = JsonDocument.Parse(lines[0]).RootElement;
        Assert.Equal("POST", chat.GetProperty("method").GetString());
        Assert.Equal("/v1/chat/completions", chat.GetProperty("route").GetString());
        Assert.Equal(TestServer.ModelId, chat.GetProperty("model").GetString());
        Assert.Equal(200, chat.GetProperty("status").GetInt32());
        Assert.True(chat.GetProperty("prompt_tokens").GetInt32() > 0);
        Assert.Equal(5, chat.GetProperty("completion_tokens").GetInt32());
        Assert.True(chat.GetProperty("ttft_ms").GetDouble() <= chat.GetProperty("duration_ms").GetDouble());
        var ollama = JsonDocument.Parse(lines[1]).RootElement;
        Assert.Equal("/api/generate", ollama.GetProperty("route").GetString());
        Assert.Equal(3, ollama.GetProperty("completion_tokens").GetInt32());
        var refused = JsonDocument.Parse(lines[2]).RootElement;
        Assert.Equal(401, refused.GetProperty("status").GetInt32());
        Assert.Equal("/v1/models", refused.GetProperty("route").GetString());
    }

    [Fact]
    public void The_text_log_line_names_the_same_facts()
    {
        var http = new Microsoft.AspNetCore.Http.DefaultHttpContext();
        http.Request.Method = "POST";
        http.Request.Path = "/v1/completions\n fake line";
        http.Response.StatusCode = 200;
        var entry = new RequestLogEntry { Model = "m", PromptTokens = 7, CompletionTokens = 9, TimeToFirstToken = TimeSpan.FromMilliseconds(12.34) };
        string line = RequestLog.Format(RequestLogFormat.Text, new DateTimeOffset(2026, 12, 7, 4, 0, 0, TimeSpan.Zero), http, entry, TimeSpan.FromMilliseconds(56.78));
        Assert.Equal("2026-12-07T04:00:00.000Z POST /v1/completions??fake?line model=m status=200 prompt_tokens=7 completion_tokens=9 ttft_ms=12.3 duration_ms=56.8", line);
    }

    [Fact]
    public async Task Unknown_routes_and_wrong_methods_get_JSON_errors_and_props_describe_the_server()
    {
        using var server = new HostedServer(new VeloHostOptions(), parallel: 2, contextLength: 256);
        using (var missing = await server.Http.GetAsync("/v1/nothing-here"))
        {
            Assert.Equal(HttpStatusCode.NotFound, missing.StatusCode);
            var error = JsonDocument.Parse(await missing.Content.ReadAsStringAsync()).RootElement.GetProperty("error");
            Assert.Equal("route_not_found", error.GetProperty("code").GetString());
            Assert.Contains("/v1/nothing-here", error.GetProperty("message").GetString());
        }
        using (var wrong = await server.Http.GetAsync("/v1/chat/completions"))
        {
            Assert.Equal(HttpStatusCode.MethodNotAllowed, wrong.StatusCode);
            var error = JsonDocument.Parse(await wrong.Content.ReadAsStringAsync()).RootElement.GetProperty("error");
            Assert.Equal("method_not_allowed", error.GetProperty("code").GetString());
            Assert.Contains("POST", error.GetProperty("message").GetString());
        }
        using (var ollama = await server.Http.DeleteAsync("/api/delete"))
        {
            Assert.Equal(HttpStatusCode.NotFound, ollama.StatusCode);
            Assert.Equal(JsonValueKind.String, JsonDocument.Parse(await ollama.Content.ReadAsStringAsync()).RootElement.GetProperty("error").ValueKind);
        }
        var props = JsonDocument.Parse(await server.Http.GetStringAsync("/props")).RootElement;
        Assert.Equal(TestServer.ModelId, props.GetProperty("model").GetString());
        Assert.Equal(256, props.GetProperty("n_ctx").GetInt32());
        Assert.Equal(2, props.GetProperty("total_slots").GetInt32());
        Assert.False(string.IsNullOrEmpty(props.GetProperty("build_info").GetString()));
    }

    [Fact]
    public async Task Cors_answers_the_allowed_origin_only()
    {
        using var server = new HostedServer(new VeloHostOptions { CorsOrigins = ["http://localhost:3000"] });
        foreach (var (origin, allowed) in new[] { ("http://localhost:3000", true), ("http://evil.example", false) })
        {
            using var preflight = new HttpRequestMessage(HttpMethod.Options, "/v1/chat/completions");
            preflight.Headers.Add("Origin", origin);
            preflight.Headers.Add("Access-Control-Request-Method", "POST");
            preflight.Headers.Add("Access-Control-Request-Headers", "content-type,authorization");
            using var response = await server.Http.SendAsync(preflight);
            Assert.Equal(allowed, response.Headers.TryGetValues("Access-Control-Allow-Origin", out var values) && values.Single() == origin);
        }
        using var get = new HttpRequestMessage(HttpMethod.Get, "/v1/models");
        get.Headers.Add("Origin", "http://localhost:3000");
        using var answer = await server.Http.SendAsync(get);
        Assert.Equal("http://localhost:3000", answer.Headers.GetValues("Access-Control-Allow-Origin").Single());
    }

    /// <summary>Stopping the host past its grace ends a running stream with an error event, and the response ends properly.</summary>
    [Fact]
    public async Task Shutdown_ends_running_streams_properly()
    {
        // Streams long enough (16000 tokens) that neither can finish on its own before the host stops, however fast the machine.
        using var server = new HostedServer(new VeloHostOptions { ShutdownGrace = TimeSpan.Zero }, parallel: 2, contextLength: 16384);
        using var request = new HttpRequestMessage(HttpMethod.Post, "/v1/completions")
        {
            Content = TestServer.JsonContent("{\"prompt\": \"Once\", \"max_tokens\": 16000, \"ignore_eos\": true, \"stream\": true}"),
        };
        using var response = await server.Http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead);
        using var ollamaRequest = new HttpRequestMessage(HttpMethod.Post, "/api/generate")
        {
            Content = TestServer.JsonContent("{\"model\": \"stories260K\", \"prompt\": \"Once\", \"raw\": true, \"options\": {\"num_predict\": 16000}}"),
        };
        using var ollamaResponse = await server.Http.SendAsync(ollamaRequest, HttpCompletionOption.ResponseHeadersRead);
        using var reader = new StreamReader(await response.Content.ReadAsStreamAsync());
        using var ollamaReader = new StreamReader(await ollamaResponse.Content.ReadAsStreamAsync());
        await reader.ReadLineAsync();
        await ollamaReader.ReadLineAsync();
        var stopping = server.App.StopAsync();
        string rest = await reader.ReadToEndAsync(); // ends without an exception: the response was completed
        string ollamaRest = await ollamaReader.ReadToEndAsync();
        await stopping;
        Assert.Contains("shutting down", rest);
        Assert.Contains("\"error\":\"the server is shutting down\"", ollamaRest);
    }

    /// <summary>Like <see cref="TestServer"/>, on a host built with the given host options.</summary>
    private sealed class HostedServer : IDisposable
    {
        private readonly WorkerPool _pool = new(2);
        private readonly LanguageModel _model = LanguageModel.Load(TestPaths.Stories260K);
        private readonly BatchScheduler _scheduler;
        private readonly VeloEngine _engine;

        public HostedServer(VeloHostOptions options, string? apiKey = null, int parallel = 1, int contextLength = 512)
        {
            _scheduler = new BatchScheduler(_model, new BatchSchedulerOptions { Parallel = parallel, ContextLength = contextLength }, _pool);
            _engine = new VeloEngine(_scheduler, TestServer.ModelId, apiKey);
            App = VeloServer.Build(_engine, "127.0.0.1", 0, options: options);
            App.StartAsync().GetAwaiter().GetResult();
            Http = new HttpClient { BaseAddress = VeloServer.Address(App), Timeout = TimeSpan.FromMinutes(2) };
        }

        public WebApplication App { get; }
        public HttpClient Http { get; }

        public async Task<(int Status, JsonElement Body)> PostAsync(string path, string json, string? apiKey = null)
        {
            using var request = new HttpRequestMessage(HttpMethod.Post, path) { Content = TestServer.JsonContent(json) };
            if (apiKey != null) request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", apiKey);
            using var response = await Http.SendAsync(request);
            return ((int)response.StatusCode, JsonDocument.Parse(await response.Content.ReadAsStringAsync()).RootElement.Clone());
        }

        public void Dispose()
        {
            Http.Dispose();
            App.StopAsync().GetAwaiter().GetResult();
            ((IDisposable)App).Dispose();
            _scheduler.Dispose();
            _engine.Dispose();
            _pool.Dispose();
            _model.Dispose();
        }
    }
}
