using System.Diagnostics;
using System.Net;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;
using Microsoft.AspNetCore.Routing;
using Velo.Server;

namespace Velo.Tests.Server;

/// <summary>Hostile requests (broken text, huge bodies, wrong content types, missing keys) get a clear 4xx, fast.</summary>
public sealed class ServerHardeningTests(SharedTestServer server) : IClassFixture<SharedTestServer>
{
    private const string Chat = "/v1/chat/completions";
    private const string Completions = "/v1/completions";

    private static void AssertError(int status, JsonElement body, int expectedStatus, string? param = null, string? code = null)
    {
        Assert.Equal(expectedStatus, status);
        var error = body.GetProperty("error");
        Assert.False(string.IsNullOrEmpty(error.GetProperty("message").GetString()));
        Assert.Equal("invalid_request_error", error.GetProperty("type").GetString());
        Assert.Equal(param, error.GetProperty("param").GetString());
        Assert.Equal(code, error.GetProperty("code").GetString());
    }

    private static async Task<(int Status, JsonElement Body)> SendAsync(HttpClient http, string path, HttpContent content)
    {
        using var response = await http.PostAsync(path, content);
        return ((int)response.StatusCode, JsonDocument.Parse(await response.Content.ReadAsStringAsync()).RootElement.Clone());
    }

    private static ByteArrayContent JsonBytes(byte[] body)
    {
        var content = new ByteArrayContent(body);
        content.Headers.ContentType = new MediaTypeHeaderValue("application/json");
        return content;
    }

    /// <summary>Every route the server maps, with its HTTP method and a path that reaches it.</summary>
    private static List<(string Method, string Path)> Routes(TestServer server) =>
        ((IEndpointRouteBuilder)server.App).DataSources.SelectMany(source => source.Endpoints).OfType<RouteEndpoint>()
            .SelectMany(endpoint => endpoint.Metadata.GetMetadata<HttpMethodMetadata>()!.HttpMethods
                .Select(method => (method, "/" + endpoint.RoutePattern.RawText!.TrimStart('/').Replace("{id}", TestServer.ModelId))))
            .ToList();

    [Theory]
    [InlineData(Chat, "{\"messages\": [{\"role\": \"user\", \"content\": \"hi \\ud800\"}]}", "messages[0].content")]
    [InlineData(Chat, "{\"messages\": [{\"role\": \"user\", \"content\": [{\"type\": \"text\", \"text\": \"\\udc00 hi\"}]}]}", "messages[0].content[0].text")]
    [InlineData(Chat, "{\"messages\": [{\"role\": \"user\", \"content\": [{\"type\": \"\\ud800\", \"text\": \"hi\"}]}]}", "messages[0].content[0].type")]
    [InlineData(Chat, "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}, {\"role\": \"\\ud800\", \"content\": \"hi\"}]}", "messages[1].role")]
    [InlineData(Chat, "{\"model\": \"\\ud800\", \"messages\": [{\"role\": \"user\", \"content\": \"hi\"}]}", "model")]
    [InlineData(Chat, "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}], \"stop\": \"\\ud800\"}", "stop")]
    [InlineData(Chat, "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}], \"stop\": [\"a\", \"\\udfff\"]}", "stop[1]")]
    [InlineData(Chat, "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}], \"logit_bias\": {\"\\ud800\": 1}}", "logit_bias")]
    [InlineData(Completions, "{\"prompt\": \"Once \\ud800\"}", "prompt")]
    [InlineData(Completions, "{\"prompt\": \"Once\", \"model\": \"\\udbff\"}", "model")]
    [InlineData("/tokenize", "{\"content\": \"\\ud800\"}", "content")]
    [InlineData("/detokenize", "{\"tokens\": [1], \"x\": {\"y\": [[\"\\ud800\\ud800\"]]}}", "x.y[0][0]")]
    [InlineData(Completions, "{\"prompt\": \"Once\", \"\\ud800\": 1}", null)]
    public async Task Lone_surrogate_escapes_are_400s_naming_the_field(string path, string json, string? param)
    {
        var (status, body) = await server.PostAsync(path, json);
        AssertError(status, body, 400, param);
    }

    [Theory]
    [InlineData(Chat, "{\"messages\": [{\"role\": \"user\", \"content\": \"hi \xFF\xFE\"}]}")]
    [InlineData(Chat, "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}], \"stop\": [\"\xC0\xAF\"]}")]
    [InlineData(Completions, "{\"prompt\": \"Once\", \"\xED\xA0\x80\": 1}")]
    [InlineData("/tokenize", "{\"content\": \"\x80\"}")]
    public async Task Invalid_utf8_in_the_body_is_a_400(string path, string latin1Json)
    {
        // Each char of the test string is one raw byte of the body.
        var (status, body) = await SendAsync(server.Http, path, JsonBytes(Encoding.Latin1.GetBytes(latin1Json)));
        AssertError(status, body, 400);
        Assert.Contains("UTF-8", body.GetProperty("error").GetProperty("message").GetString());
    }

    [Fact]
    public async Task With_an_api_key_every_route_but_health_answers_401_without_it()
    {
        using var guarded = new TestServer(parallel: 1, apiKey: "sesame");
        var routes = Routes(guarded);
        Assert.Contains(("POST", "/tokenize"), routes);
        Assert.Contains(("POST", "/detokenize"), routes);
        Assert.Contains(("GET", "/metrics"), routes);
        foreach (var (method, path) in routes)
        {
            using var request = new HttpRequestMessage(new HttpMethod(method), path);
            if (method == "POST") request.Content = TestServer.JsonContent("{\"content\": \"hi\", \"tokens\": [1]}");
            using var response = await guarded.Http.SendAsync(request);
            // The chat page's static files hold no data: the page asks for the key when the API answers 401.
            bool isPublic = path is "/health" or "/" || path.StartsWith("/chat/", StringComparison.Ordinal);
            Assert.True(isPublic == (response.StatusCode != HttpStatusCode.Unauthorized), $"{method} {path}: {response.StatusCode}");
        }
        var (status, body) = await guarded.PostAsync("/tokenize", "{\"content\": \"hi\"}", apiKey: "sesame");
        Assert.Equal(200, status);
        Assert.Equal(2, body.GetProperty("tokens").GetArrayLength());
    }

    [Fact]
    public async Task Metrics_answer_without_the_key_only_when_made_public()
    {
        using var guarded = new TestServer(parallel: 1, apiKey: "sesame", publicMetrics: true);
        using var metrics = await guarded.Http.GetAsync("/metrics");
        Assert.Equal(HttpStatusCode.OK, metrics.StatusCode);
        var (status, _) = await guarded.PostAsync("/detokenize", "{\"tokens\": [1]}");
        Assert.Equal(401, status);
    }

    [Theory]
    [InlineData("/tokenize")]
    [InlineData("/detokenize")]
    [InlineData(Chat)]
    [InlineData(Completions)]
    public async Task A_28_MB_body_is_a_413_before_it_is_read(string path)
    {
        var huge = new byte[28 << 20];
        huge.AsSpan().Fill((byte)' ');
        var clock = Stopwatch.StartNew();
        var (status, body) = await SendAsync(server.Http, path, JsonBytes(huge));
        AssertError(status, body, 413);
        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(10), $"took {clock.Elapsed}");
    }

    [Theory]
    [InlineData("/tokenize", "/tokenize")]
    [InlineData(Chat, Chat)]
    public async Task A_huge_chunked_body_is_a_413_once_it_passes_the_limit(string path, string route)
    {
        // No Content-Length, so the limit has to stop the read itself. The server answers 413 and drops the connection
        // while the client is still sending, so the client may see the 413 or a broken pipe; the server's count tells.
        const long size = 28 << 20;
        var spaces = new EndlessSpaces(size);
        var content = new StreamContent(spaces);
        content.Headers.ContentType = new MediaTypeHeaderValue("application/json");
        long refused = server.Engine.Metrics.Requests(route, 413);
        try
        {
            var (status, body) = await SendAsync(server.Http, path, content);
            AssertError(status, body, 413);
        }
        catch (HttpRequestException e) when (e.InnerException is IOException)
        {
        }
        Assert.Equal(refused + 1, server.Engine.Metrics.Requests(route, 413));
        Assert.True(spaces.Sent < size / 2, $"the server read {spaces.Sent} bytes");
    }

    [Fact]
    public async Task An_escaped_surrogate_pair_is_text()
    {
        var (status, body) = await server.PostAsync("/tokenize", "{\"content\": \"\\ud83d\\ude00\", \"with_pieces\": true}");
        Assert.Equal(200, status);
        Assert.True(body.GetProperty("tokens").GetArrayLength() > 0);
    }

    [Fact]
    public async Task The_generation_body_limit_follows_the_option()
    {
        using var limited = new TestServer(parallel: 1, maxRequestBytes: 1000);
        string message = new('a', 2000);
        var (status, body) = await limited.PostAsync(Chat, $"{{\"messages\": [{{\"role\": \"user\", \"content\": \"{message}\"}}]}}");
        AssertError(status, body, 413);
        (status, _) = await limited.PostAsync(Chat, "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}], \"max_tokens\": 2}");
        Assert.Equal(200, status);
    }

    [Fact]
    public async Task Tokenize_content_and_detokenize_token_counts_are_bounded()
    {
        var (status, body) = await server.PostAsync("/tokenize", $"{{\"content\": \"{new string('a', VeloEndpoints.MaxTokenizeChars + 1)}\"}}");
        AssertError(status, body, 400, "content");
        (status, _) = await server.PostAsync("/tokenize", $"{{\"content\": \"{new string('a', VeloEndpoints.MaxTokenizeChars)}\"}}");
        Assert.Equal(200, status);
        string tokens = string.Join(',', Enumerable.Repeat("403", VeloEndpoints.MaxDetokenizeTokens + 1));
        (status, body) = await server.PostAsync("/detokenize", $"{{\"tokens\": [{tokens}]}}");
        AssertError(status, body, 400, "tokens");
    }

    [Theory]
    [InlineData(Chat, "messages")]
    [InlineData(Completions, "prompt")]
    public async Task A_prompt_too_long_by_its_bytes_is_a_400_before_it_is_tokenized(string path, string param)
    {
        int bytesPerToken = server.Model.Tokenizer.MaxInputBytesPerToken;
        Assert.True(bytesPerToken >= 4);
        string prompt = new('a', bytesPerToken * server.Scheduler.ContextLength);
        string json = path == Chat
            ? JsonSerializer.Serialize(new { messages = new[] { new { role = "system", content = prompt[..10] }, new { role = "user", content = prompt[10..] } } })
            : JsonSerializer.Serialize(new { prompt });
        var (status, body) = await server.PostAsync(path, json);
        AssertError(status, body, 400, param, "context_length_exceeded");
        // "at least": the count comes from the bytes, not from tokenizing.
        Assert.Contains($"at least {server.Scheduler.ContextLength} tokens", body.GetProperty("error").GetProperty("message").GetString());
    }

    [Theory]
    [InlineData("text/plain")]
    [InlineData("text/plain; charset=utf-8")]
    [InlineData("application/x-www-form-urlencoded")]
    [InlineData("multipart/form-data; boundary=x")]
    [InlineData(null)]
    public async Task Post_routes_without_a_json_content_type_are_415s(string? contentType)
    {
        // Ollama's routes answer the same 415 in Ollama's error body (OllamaApiTests).
        var posts = Routes(server).Where(route => route.Method == "POST" && !route.Path.StartsWith("/api/", StringComparison.Ordinal)).ToList();
        Assert.Equal(9, posts.Count); // chat, completions, embeddings, rerank (three names), classify, tokenize, detokenize
        foreach (var (_, path) in posts)
        {
            var content = new ByteArrayContent("{\"prompt\": \"Once\", \"content\": \"hi\", \"tokens\": [1], \"max_tokens\": 1}"u8.ToArray());
            if (contentType != null) content.Headers.ContentType = MediaTypeHeaderValue.Parse(contentType);
            var (status, body) = await SendAsync(server.Http, path, content);
            AssertError(status, body, 415, code: "unsupported_media_type");
        }
    }

    [Theory]
    [InlineData("application/json")]
    [InlineData("application/json; charset=utf-8")]
    [InlineData("Application/JSON")]
    [InlineData("application/vnd.velo+json")]
    public async Task Json_content_types_are_served(string contentType)
    {
        var content = new ByteArrayContent("{\"content\": \"Once upon a time\"}"u8.ToArray());
        content.Headers.ContentType = MediaTypeHeaderValue.Parse(contentType);
        var (status, _) = await SendAsync(server.Http, "/tokenize", content);
        Assert.Equal(200, status);
    }

    /// <summary>A stream of spaces of a given length that reports no length, so HttpClient sends it chunked.</summary>
    private sealed class EndlessSpaces(long length) : Stream
    {
        public long Sent { get; private set; }

        public override int Read(byte[] buffer, int offset, int count)
        {
            int n = (int)Math.Min(count, length - Sent);
            buffer.AsSpan(offset, n).Fill((byte)' ');
            Sent += n;
            return n;
        }

        public override bool CanRead => true;
        public override bool CanSeek => false;
        public override bool CanWrite => false;
        public override long Length => throw new NotSupportedException();
        public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }
        public override void Flush() { }
        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
        public override void SetLength(long value) => throw new NotSupportedException();
        public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();
    }
}
