using System.Net;
using System.Text.Json;
using Velo.Server;

namespace Velo.Tests.Server;

/// <summary>Client errors get OpenAI's error body with a 4xx status, and the server keeps serving.</summary>
public sealed class ServerErrorTests(SharedTestServer server) : IClassFixture<SharedTestServer>
{
    private static void AssertError(int status, JsonElement body, int expectedStatus, string? param = null, string? code = null)
    {
        Assert.Equal(expectedStatus, status);
        var error = body.GetProperty("error");
        Assert.False(string.IsNullOrEmpty(error.GetProperty("message").GetString()));
        Assert.Equal(expectedStatus >= 500 ? "server_error" : "invalid_request_error", error.GetProperty("type").GetString());
        Assert.Equal(param, error.GetProperty("param").GetString());
        Assert.Equal(code, error.GetProperty("code").GetString());
    }

    [Theory]
    [InlineData("{\"messages\": [", null)]
    [InlineData("[1, 2, 3]", null)]
    [InlineData("", null)]
    [InlineData("{\"messages\": \"hello\"}", "messages")]
    [InlineData("{\"messages\": []}", "messages")]
    [InlineData("{}", "messages")]
    [InlineData("{\"messages\": [{\"role\": \"wizard\", \"content\": \"hi\"}]}", "messages[0].role")]
    [InlineData("{\"messages\": [{\"role\": \"user\", \"content\": 42}]}", "messages[0].content")]
    [InlineData("{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}], \"temperature\": \"hot\"}", "temperature")]
    [InlineData("{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}], \"temperature\": 3}", "temperature")]
    [InlineData("{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}], \"temperature\": 1e999}", "temperature")]
    [InlineData("{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}], \"logit_bias\": {\"5\": 1e999}}", "logit_bias")]
    [InlineData("{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}], \"stream\": \"yes\"}", "stream")]
    [InlineData("{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}], \"max_tokens\": 0}", "max_tokens")]
    [InlineData("{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}], \"max_tokens\": 100000}", "max_tokens")]
    [InlineData("{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}], \"max_tokens\": 1.5}", "max_tokens")]
    [InlineData("{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}], \"max_completion_tokens\": -1}", "max_completion_tokens")]
    [InlineData("{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}], \"stop\": [\"a\", 1]}", "stop")]
    [InlineData("{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}], \"stop\": [\"a\", \"b\", \"c\", \"d\", \"e\"]}", "stop")]
    [InlineData("{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}], \"n\": 2}", "n")]
    [InlineData("{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}], \"seed\": \"x\"}", "seed")]
    [InlineData("{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}], \"top_logprobs\": 3}", "top_logprobs")]
    [InlineData("{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}], \"logprobs\": true, \"top_logprobs\": 21}", "top_logprobs")]
    [InlineData("{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}], \"logit_bias\": {\"99999\": 1}}", "logit_bias")]
    [InlineData("{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}], \"stream_options\": {\"include_usage\": 1}}", "stream_options.include_usage")]
    public async Task Malformed_chat_requests_are_400s_naming_the_field(string json, string? param)
    {
        var (status, body) = await server.PostAsync("/v1/chat/completions", json);
        AssertError(status, body, 400, param);
    }

    [Theory]
    [InlineData("{\"max_tokens\": 5}", "prompt")]
    [InlineData("{\"prompt\": [1, 2]}", "prompt")]
    [InlineData("{\"prompt\": \"Once\", \"echo\": true}", "echo")]
    [InlineData("{\"prompt\": \"Once\", \"logprobs\": 6}", "logprobs")]
    [InlineData("{\"prompt\": \"Once\", \"top_p\": -0.1}", "top_p")]
    [InlineData("{\"prompt\": \"Once\", \"presence_penalty\": 2.5}", "presence_penalty")]
    public async Task Malformed_completion_requests_are_400s_naming_the_field(string json, string param)
    {
        var (status, body) = await server.PostAsync("/v1/completions", json);
        AssertError(status, body, 400, param);
    }

    [Theory]
    [InlineData("{\"role\": \"user\", \"content\": \"hi\", \"name\": \"ann\"}", "messages[0].name")]
    [InlineData("{\"role\": \"user\", \"content\": \"hi\", \"colour\": \"blue\"}", "messages[0].colour")]
    public async Task Unknown_message_fields_are_400s_naming_them(string message, string param)
    {
        var (status, body) = await server.PostAsync("/v1/chat/completions", $"{{\"messages\": [{message}]}}");
        AssertError(status, body, 400, param);
    }

    [Theory]
    [InlineData("\"functions\": []", "functions")]
    [InlineData("\"best_of\": 2", "best_of")]
    [InlineData("\"modalities\": [\"text\", \"audio\"]", "modalities")]
    [InlineData("\"store\": true", "store")]
    [InlineData("\"reasoning_effort\": \"low\"", "reasoning_effort")]
    [InlineData("\"mirostat\": 2", "mirostat")]
    public async Task Fields_that_cannot_be_honoured_are_400s_naming_them(string field, string param)
    {
        var (status, body) = await server.PostAsync("/v1/chat/completions", $"{{\"messages\": [{{\"role\": \"user\", \"content\": \"hi\"}}], {field}}}");
        AssertError(status, body, 400, param);
        (status, body) = await server.PostAsync("/v1/completions", $"{{\"prompt\": \"hi\", {field}}}");
        AssertError(status, body, 400, param);
    }

    [Theory]
    [InlineData("\"tools\": []")]
    [InlineData("\"tool_choice\": \"none\"")]
    [InlineData("\"response_format\": {\"type\": \"text\"}")]
    [InlineData("\"modalities\": [\"text\"], \"store\": false, \"user\": \"u-1\", \"service_tier\": null")]
    public async Task Their_off_values_are_accepted(string field)
    {
        var (status, _) = await server.PostAsync("/v1/chat/completions", $"{{\"messages\": [{{\"role\": \"user\", \"content\": \"hi\"}}], \"max_tokens\": 1, {field}}}");
        Assert.Equal(200, status);
    }

    [Fact]
    public async Task A_prompt_longer_than_the_context_is_a_400_for_completions_too()
    {
        string prompt = string.Join(' ', Enumerable.Repeat("The little dog ran to the park.", 200));
        var (status, body) = await server.PostAsync("/v1/completions", JsonSerializer.Serialize(new { prompt }));
        AssertError(status, body, 400, "prompt", "context_length_exceeded");
    }

    [Fact]
    public async Task An_unknown_model_is_a_404_on_both_completion_routes()
    {
        var (status, body) = await server.PostAsync("/v1/completions", "{\"model\": \"gpt-4\", \"prompt\": \"Once\"}");
        AssertError(status, body, 404, "model", "model_not_found");
        (status, body) = await server.PostAsync("/v1/chat/completions", "{\"model\": \"gpt-4\", \"messages\": [{\"role\": \"user\", \"content\": \"hi\"}]}");
        AssertError(status, body, 404, "model", "model_not_found");
    }

    [Fact]
    public async Task Tokenize_and_detokenize_round_trip_and_reject_bad_ids()
    {
        var (status, body) = await server.PostAsync("/tokenize", "{\"content\": \"Once upon a time\", \"add_special\": true}");
        Assert.Equal(200, status);
        Assert.Equal([1, 403, 407, 261, 378], body.GetProperty("tokens").EnumerateArray().Select(t => t.GetInt32()));
        (status, body) = await server.PostAsync("/detokenize", "{\"tokens\": [403, 407, 261, 378]}");
        Assert.Equal(200, status);
        Assert.Equal("Once upon a time", body.GetProperty("content").GetString());
        (status, body) = await server.PostAsync("/detokenize", "{\"tokens\": [403, 512]}");
        AssertError(status, body, 400, "tokens");
        (status, body) = await server.PostAsync("/tokenize", "{\"content\": 5}");
        AssertError(status, body, 400, "content");
    }

    [Fact]
    public async Task Streamed_completion_equals_the_whole_one_and_reports_usage()
    {
        const string request = "{\"prompt\": \"Once upon a time\", \"max_tokens\": 30, \"temperature\": 0";
        var (status, whole) = await server.PostAsync("/v1/completions", request + "}");
        Assert.Equal(200, status);
        var choice = whole.GetProperty("choices")[0];
        Assert.Equal(", there was a little girl named Lily. She loved to play outsid", choice.GetProperty("text").GetString()![..62]);

        using var message = new HttpRequestMessage(HttpMethod.Post, "/v1/completions")
        {
            Content = TestServer.JsonContent(request + ", \"stream\": true, \"stream_options\": {\"include_usage\": true}}"),
        };
        using var response = await server.Http.SendAsync(message, HttpCompletionOption.ResponseHeadersRead);
        Assert.Equal("text/event-stream", response.Content.Headers.ContentType!.MediaType);
        var text = new System.Text.StringBuilder();
        string? finish = null;
        JsonElement? usage = null;
        await foreach (var chunk in TestServer.EventsAsync(response))
        {
            foreach (var c in chunk.GetProperty("choices").EnumerateArray())
            {
                text.Append(c.GetProperty("text").GetString());
                if (c.GetProperty("finish_reason").ValueKind == JsonValueKind.String) finish = c.GetProperty("finish_reason").GetString();
            }
            if (chunk.TryGetProperty("usage", out var u) && u.ValueKind == JsonValueKind.Object) usage = u;
        }
        Assert.Equal(choice.GetProperty("text").GetString(), text.ToString());
        Assert.Equal(choice.GetProperty("finish_reason").GetString(), finish);
        Assert.Equal(whole.GetProperty("usage").GetProperty("completion_tokens").GetInt32(), usage!.Value.GetProperty("completion_tokens").GetInt32());
        Assert.Equal(5, usage.Value.GetProperty("prompt_tokens").GetInt32());
    }

    [Fact]
    public async Task Metrics_count_requests_tokens_and_latencies()
    {
        await server.PostAsync("/v1/completions", "{\"prompt\": \"Once upon a time\", \"max_tokens\": 7, \"temperature\": 0}");
        await server.PostAsync("/v1/completions", "{\"prompt\": 5}");
        string metrics = await server.Http.GetStringAsync("/metrics");

        Assert.True(server.Engine.Metrics.Requests("/v1/completions", 200) >= 1);
        Assert.Matches(@"velo_requests_total\{endpoint=""/v1/completions"",status=""200""\} [1-9]", metrics);
        Assert.Matches(@"velo_requests_total\{endpoint=""/v1/completions"",status=""400""\} [1-9]", metrics);
        Assert.Matches(@"velo_prompt_tokens_total [1-9]", metrics);
        Assert.Matches(@"velo_generated_tokens_total [1-9]", metrics);
        Assert.Matches(@"velo_time_to_first_token_seconds_count [1-9]", metrics);
        Assert.Matches(@"velo_time_per_output_token_seconds_count [1-9]", metrics);
        Assert.Contains("velo_queue_length 0", metrics);
        Assert.Contains("velo_active_sequences ", metrics);
        Assert.Contains("velo_sequence_slots 8", metrics);
    }

    [Fact]
    public async Task Health_is_ok_once_the_model_is_loaded()
    {
        using var response = await server.Http.GetAsync("/health");
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
    }
}

/// <summary>Servers in other states: loading, busy, or guarded by an API key.</summary>
public sealed class ServerStateTests
{
    [Fact]
    public async Task Health_and_every_endpoint_answer_503_while_no_model_is_loaded()
    {
        using var engine = new VeloEngine(new VeloServerOptions { ModelPath = Path.Combine(Path.GetTempPath(), "no-such-model.gguf") });
        await using var app = VeloServer.Build(engine, "127.0.0.1", 0);
        await app.StartAsync();
        using var http = new HttpClient { BaseAddress = VeloServer.Address(app) };
        using var health = await http.GetAsync("/health");
        Assert.Equal(HttpStatusCode.ServiceUnavailable, health.StatusCode);
        using var chat = await http.PostAsync("/v1/chat/completions", TestServer.JsonContent("{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}]}"));
        Assert.Equal(HttpStatusCode.ServiceUnavailable, chat.StatusCode);
        Assert.Contains("model_loading", await chat.Content.ReadAsStringAsync());
        await app.StopAsync();
    }

    [Fact]
    public async Task A_full_queue_answers_503_with_retry_after_and_the_queued_requests_still_complete()
    {
        // The scheduler is not started, so admitted requests wait: one per slot plus the queue's capacity.
        using var server = new TestServer(parallel: 1, queueCapacity: 1, startScheduler: false);
        const string request = "{\"prompt\": \"Once upon a time\", \"max_tokens\": 5, \"temperature\": 0}";
        var first = server.PostAsync("/v1/completions", request);
        var second = server.PostAsync("/v1/completions", request);
        await OpenAiClientTests.Eventually(() => server.Scheduler.QueueLength == 2);

        using var refused = await server.Http.PostAsync("/v1/completions", TestServer.JsonContent(request));
        Assert.Equal(HttpStatusCode.ServiceUnavailable, refused.StatusCode);
        Assert.Equal(TimeSpan.FromSeconds(1), refused.Headers.RetryAfter?.Delta);
        Assert.Contains("server_busy", await refused.Content.ReadAsStringAsync());

        server.Scheduler.Start();
        Assert.Equal(200, (await first).Status);
        Assert.Equal(200, (await second).Status);
    }

    [Fact]
    public async Task With_an_api_key_every_v1_route_needs_the_bearer_token()
    {
        using var server = new TestServer(parallel: 1, apiKey: "sesame");
        const string request = "{\"prompt\": \"Once\", \"max_tokens\": 2}";
        var (status, body) = await server.PostAsync("/v1/completions", request);
        Assert.Equal(401, status);
        Assert.Equal("invalid_api_key", body.GetProperty("error").GetProperty("code").GetString());
        (status, _) = await server.PostAsync("/v1/completions", request, apiKey: "wrong");
        Assert.Equal(401, status);
        (status, _) = await server.PostAsync("/v1/completions", request, apiKey: "sesame");
        Assert.Equal(200, status);

        var error = await Assert.ThrowsAsync<System.ClientModel.ClientResultException>(() => server.Client("wrong").GetOpenAIModelClient().GetModelsAsync());
        Assert.Equal(401, error.Status);
        Assert.Single((await server.Client("sesame").GetOpenAIModelClient().GetModelsAsync()).Value);
        using var health = await server.Http.GetAsync("/health");
        Assert.Equal(HttpStatusCode.OK, health.StatusCode);
    }
}

/// <summary>Mangled request bodies: every one gets a 200 or a 4xx with an error body, never a 500 or a hang.</summary>
public sealed class ServerFuzzTests(SharedTestServer server) : IClassFixture<SharedTestServer>
{
    private const string Valid =
        "{\"model\": \"stories260K\", \"messages\": [{\"role\": \"system\", \"content\": \"Be kind.\"}, {\"role\": \"user\", \"content\": \"Hi\"}], " +
        "\"max_tokens\": 4, \"temperature\": 0.5, \"top_p\": 0.9, \"stop\": [\"x\"], \"seed\": 3, \"logprobs\": true, \"top_logprobs\": 2, " +
        "\"stream\": false, \"presence_penalty\": 0.1, \"logit_bias\": {\"5\": 1}}";

    private static readonly string[] Replacements = ["", "null", "-1", "1e309", "\"\"", "[]", "{}", "true", "\"\\u0000\"", "99999999999999999999", "[[[[", "}"];

    [Fact]
    public async Task Mangled_chat_requests_never_get_a_server_error()
    {
        var random = new Random(1234);
        var statuses = new Dictionary<int, int>();
        for (int i = 0; i < 300; i++)
        {
            string body = Mangle(Valid, random);
            using var request = new HttpRequestMessage(HttpMethod.Post, i % 2 == 0 ? "/v1/chat/completions" : "/v1/completions")
            {
                Content = TestServer.JsonContent(i % 2 == 0 ? body : body.Replace("\"messages\"", "\"prompt\"")),
            };
            using var response = await server.Http.SendAsync(request);
            int status = (int)response.StatusCode;
            statuses[status] = statuses.GetValueOrDefault(status) + 1;
            Assert.True(status is 200 or (>= 400 and < 500), $"{status} for {body}");
            if (status != 200)
                Assert.True(System.Text.Json.JsonDocument.Parse(await response.Content.ReadAsStringAsync()).RootElement.TryGetProperty("error", out _), body);
        }
        // Both outcomes occurred, so the mangling neither broke every request nor left them all valid.
        Assert.True(statuses.GetValueOrDefault(200) > 0 && statuses.Count > 1, string.Join(", ", statuses));
        Assert.Equal(System.Net.HttpStatusCode.OK, (await server.Http.GetAsync("/health")).StatusCode);
    }

    /// <summary>Replaces a random JSON value or cuts the text at a random point.</summary>
    private static string Mangle(string json, Random random)
    {
        if (random.Next(5) == 0) return json[..random.Next(json.Length)];
        var separators = Enumerable.Range(0, json.Length).Where(i => json[i] == ':').ToArray();
        int start = separators[random.Next(separators.Length)] + 1;
        int end = start + 1;
        int depth = 0;
        bool inString = false;
        for (; end < json.Length; end++)
        {
            char c = json[end];
            if (inString) { if (c == '"' && json[end - 1] != '\\') inString = false; continue; }
            if (c == '"') inString = true;
            else if (c is '[' or '{') depth++;
            else if (c is ']' or '}') { if (depth == 0) break; depth--; }
            else if (c == ',' && depth == 0) break;
        }
        return json[..start] + " " + Replacements[random.Next(Replacements.Length)] + json[end..];
    }
}
