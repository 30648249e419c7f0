using System.Text;
using System.Text.Json;
using OllamaSharp;
using OllamaSharp.Models;
using OllamaSharp.Models.Chat;
using OllamaSharp.Models.Exceptions;

namespace Velo.Tests.Server;

/// <summary>Ollama's API on velo serve, driven by the OllamaSharp client as an Ollama user's program would drive it.</summary>
public sealed class OllamaApiTests(SharedTestServer server) : IClassFixture<SharedTestServer>
{
    private OllamaApiClient Client() => new(new HttpClient { BaseAddress = server.Address, Timeout = TimeSpan.FromMinutes(1) }, TestServer.ModelId);

    [Fact]
    public async Task Streaming_chat_arrives_in_pieces_and_ends_with_the_counts()
    {
        using var ollama = Client();
        var request = new ChatRequest
        {
            Messages = [new Message(ChatRole.System, "You tell stories."), new Message(ChatRole.User, "Once upon a time")],
            Options = new RequestOptions { NumPredict = 12, Temperature = 0, Seed = 1 },
        };
        var chunks = new List<ChatResponseStream>();
        await foreach (var chunk in ollama.ChatAsync(request)) chunks.Add(chunk!);
        Assert.True(chunks.Count >= 3, $"{chunks.Count} lines");
        Assert.All(chunks[..^1], chunk => Assert.False(chunk.Done));
        var done = Assert.IsType<ChatDoneResponseStream>(chunks[^1]);
        Assert.Equal(12, done.EvalCount);
        Assert.True(done.PromptEvalCount > 0);
        Assert.Equal("length", done.DoneReason);
        Assert.True(done.TotalDuration >= done.EvalDuration);
        string text = string.Concat(chunks.Select(c => c.Message.Content));
        Assert.False(string.IsNullOrWhiteSpace(text));
        Assert.Equal(ChatRole.Assistant, chunks[0].Message.Role);

        // Greedy: the same answer without streaming.
        request.Stream = false;
        var whole = new List<ChatResponseStream>();
        await foreach (var chunk in ollama.ChatAsync(request)) whole.Add(chunk!);
        Assert.True(Assert.Single(whole).Done);
        Assert.Equal(text, whole[0].Message.Content);
    }

    [Fact]
    public async Task Generate_streams_a_raw_completion_and_stops_at_a_stop_string()
    {
        using var ollama = Client();
        var pieces = new List<GenerateResponseStream>();
        await foreach (var piece in ollama.GenerateAsync(new GenerateRequest
                       {
                           Prompt = "Once upon a time", Raw = true, Options = new RequestOptions { NumPredict = 40, Temperature = 0 },
                       }))
            pieces.Add(piece!);
        var done = Assert.IsType<GenerateDoneResponseStream>(pieces[^1]);
        string text = string.Concat(pieces.Select(p => p.Response));
        Assert.Equal(40, done.EvalCount);
        Assert.Contains(".", text);

        string stop = text[..(text.IndexOf('.') + 1)];
        pieces.Clear();
        await foreach (var piece in ollama.GenerateAsync(new GenerateRequest
                       {
                           Prompt = "Once upon a time", Raw = true, Options = new RequestOptions { NumPredict = 40, Temperature = 0, Stop = ["."] },
                       }))
            pieces.Add(piece!);
        Assert.Equal(stop.TrimEnd('.'), string.Concat(pieces.Select(p => p.Response)));
        Assert.Equal("stop", Assert.IsType<GenerateDoneResponseStream>(pieces[^1]).DoneReason);
    }

    [Fact]
    public async Task Tags_show_ps_and_version_describe_the_served_model()
    {
        using var ollama = Client();
        var model = Assert.Single(await ollama.ListLocalModelsAsync());
        Assert.Equal(TestServer.ModelId, model.Name);
        Assert.Equal("llama", model.Details.Family);
        var running = Assert.Single(await ollama.ListRunningModelsAsync());
        Assert.Equal(512, running.ContextLength);
        var show = await ollama.ShowModelAsync(new ShowModelRequest { Model = TestServer.ModelId + ":latest" });
        Assert.Contains("completion", show.Capabilities!);
        Assert.Equal("llama", show.Info.Architecture);
        Assert.Matches(@"^\d+\.\d+", await ollama.GetVersionAsync());
    }

    [Fact]
    public async Task Format_json_and_a_schema_constrain_the_output()
    {
        using var ollama = Client();
        var text = new StringBuilder();
        string? doneReason = null;
        await foreach (var part in ollama.ChatAsync(new ChatRequest { Messages = [new Message(ChatRole.User, "hi")], Format = "json", Options = new RequestOptions { NumPredict = 300, Temperature = 0 } }))
        {
            text.Append(part?.Message.Content);
            if (part is ChatDoneResponseStream done) doneReason = done.DoneReason;
        }
        // A tiny model may write one string until the limit; what it wrote is still the start of a JSON object.
        Assert.StartsWith("{", text.ToString().TrimStart());
        if (doneReason == "stop")
            using (var document = JsonDocument.Parse(text.ToString())) Assert.Equal(JsonValueKind.Object, document.RootElement.ValueKind);
        else Assert.Equal("length", doneReason);

        var (status, body) = await server.PostAsync("/api/generate", """{"model": "stories260K", "prompt": "hi", "stream": false, "options": {"num_predict": 300, "temperature": 0}, "format": {"type": "object", "properties": {"mood": {"enum": ["happy", "sad"]}}, "required": ["mood"]}}""");
        Assert.Equal(200, status);
        using var answer = JsonDocument.Parse(body.GetProperty("response").GetString()!);
        Assert.Contains(answer.RootElement.GetProperty("mood").GetString(), (string[])["happy", "sad"]);
    }

    [Fact]
    public async Task Fields_velo_cannot_honour_are_Ollama_errors_naming_them()
    {
        using var ollama = Client();
        var error = await Assert.ThrowsAsync<OllamaException>(async () =>
        {
            await foreach (var _ in ollama.GenerateAsync(new GenerateRequest { Prompt = "hi", Options = new RequestOptions { NumGpu = 1 } })) { }
        });
        Assert.Contains("num_gpu", error.Message);
        // Another model is a 404, as in Ollama.
        using var other = new OllamaApiClient(new HttpClient { BaseAddress = server.Address }, "llama3");
        var missing = await Assert.ThrowsAsync<HttpRequestException>(async () =>
        {
            await foreach (var _ in other.GenerateAsync(new GenerateRequest { Prompt = "hi" })) { }
        });
        Assert.Equal(System.Net.HttpStatusCode.NotFound, missing.StatusCode);
    }

    [Theory]
    [InlineData("/api/chat", "{\"model\": \"stories260K\", \"messages\": [{\"role\": \"user\", \"content\": \"hi\"}], \"options\": {\"temperature\": \"hot\"}}", "temperature")]
    [InlineData("/api/chat", "{\"model\": \"stories260K\", \"messages\": [{\"role\": \"user\", \"content\": \"hi\"}], \"options\": {\"typical_p\": 0.5}}", "typical_p")]
    [InlineData("/api/chat", "{\"model\": \"stories260K\", \"messages\": [{\"role\": \"wizard\", \"content\": \"hi\"}]}", "role")]
    [InlineData("/api/chat", "{\"model\": \"stories260K\", \"messages\": [{\"role\": \"user\", \"content\": \"hi\", \"images\": [\"aGk=\"]}]}", "images")]
    [InlineData("/api/chat", "{\"model\": \"stories260K\", \"messages\": [], \"colour\": \"blue\"}", "colour")]
    [InlineData("/api/chat", "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}]}", "model")]
    [InlineData("/api/chat", "{\"model\": \"stories260K\", \"messages\": [{\"role\": \"user\", \"content\": \"hi\"}], \"options\": {\"num_ctx\": 100000}}", "num_ctx")]
    [InlineData("/api/generate", "{\"model\": \"stories260K\", \"prompt\": \"hi\", \"options\": {\"num_predict\": 0}}", "num_predict")]
    [InlineData("/api/generate", "{\"model\": \"stories260K\", \"prompt\": \"hi\", \"format\": {\"type\": \"string\", \"pattern\": \"a+\"}}", "pattern")]
    [InlineData("/api/generate", "{\"model\": \"stories260K\", \"prompt\": \"hi\", \"format\": \"yaml\"}", "format")]
    [InlineData("/api/generate", "{\"model\": \"stories260K\", \"prompt\": \"hi\", \"keep_alive\": 0}", "keep_alive")]
    [InlineData("/api/embed", "{\"model\": \"stories260K\", \"input\": \"hi\"}", "decoder")]
    public async Task Bad_requests_get_Ollamas_error_body(string route, string json, string named)
    {
        var (status, body) = await server.PostAsync(route, json);
        Assert.Equal(400, status);
        string message = body.GetProperty("error").GetString()!;
        Assert.Contains(named, message);
        Assert.Equal(JsonValueKind.String, body.GetProperty("error").ValueKind);
    }

    [Theory]
    [InlineData("/api/chat")]
    [InlineData("/api/generate")]
    [InlineData("/api/show")]
    [InlineData("/api/embed")]
    public async Task Posts_that_are_not_JSON_are_415s(string route)
    {
        using var response = await server.Http.PostAsync(route, new StringContent("{\"model\": \"stories260K\"}", System.Text.Encoding.UTF8, "text/plain"));
        Assert.Equal(System.Net.HttpStatusCode.UnsupportedMediaType, response.StatusCode);
        Assert.Contains("Content-Type: application/json", JsonDocument.Parse(await response.Content.ReadAsStringAsync()).RootElement.GetProperty("error").GetString());
    }

    [Fact]
    public async Task Num_ctx_smaller_than_the_servers_caps_the_answer()
    {
        var (status, body) = await server.PostAsync("/api/generate",
            "{\"model\": \"stories260K\", \"prompt\": \"Once upon a time\", \"raw\": true, \"stream\": false, \"options\": {\"num_ctx\": 12, \"temperature\": 0}}");
        Assert.Equal(200, status);
        Assert.Equal(12, body.GetProperty("prompt_eval_count").GetInt32() + body.GetProperty("eval_count").GetInt32());
        Assert.Equal("length", body.GetProperty("done_reason").GetString());
    }
}
