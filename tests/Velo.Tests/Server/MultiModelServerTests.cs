using System.Net;
using System.Text.Json;
using Velo.Formats;
using Velo.Generation;
using Velo.Inference;
using Velo.Models;
using Velo.Server;

namespace Velo.Tests.Server;

/// <summary>
/// Several models in one server: stories260K as the default, a synthesized decoder ("small") and a synthesized bert
/// encoder ("embed") by name; lazy loading, keep-alive unloading, the memory cap, and entries built over other entries.
/// </summary>
public sealed class MultiModelServerTests : IClassFixture<MultiModelServerTests.Files>
{
    /// <summary>The models' files, written once for the class.</summary>
    public sealed class Files : IDisposable
    {
        public Files()
        {
            using var stories = GgufFile.Open(TestPaths.Stories260K);
            Small = Path.Combine(Path.GetTempPath(), $"velo-multi-small-{Guid.NewGuid():N}.gguf");
            ModelSynthesizer.Write(Small, new SynthSpec
            {
                Architecture = "llama", Dim = 64, Layers = 1, Heads = 2, FfnDim = 128, VocabSize = 512, ContextLength = 256, WeightStd = 0.05f,
            }, SynthTokenizer.FromGguf(stories.Metadata), threads: 1);
            Encoder = RerankServerTests.Write(RerankServerTests.Spec(null));
        }

        public string Small { get; }
        public string Encoder { get; }

        public void Dispose()
        {
            File.Delete(Small);
            File.Delete(Encoder);
        }
    }

    private readonly Files _files;

    public MultiModelServerTests(Files files) => _files = files;

    private VeloServerOptions Options(TimeSpan? keepAlive = null, long? memoryCap = null) => new()
    {
        ModelPath = TestPaths.Stories260K,
        ModelId = "stories",
        Models = [new NamedModelFile("small", _files.Small), new NamedModelFile("embed", _files.Encoder)],
        KeepAlive = keepAlive ?? TimeSpan.FromMinutes(5),
        MemoryCapBytes = memoryCap,
        Parallel = 2,
        ContextLength = 128,
        Threads = 1,
    };

    private static async Task<(Microsoft.AspNetCore.Builder.WebApplication App, HttpClient Http)> StartAsync(VeloEngine engine)
    {
        var app = VeloServer.Build(engine, "127.0.0.1", 0);
        await app.StartAsync();
        for (int i = 0; i < 500 && !engine.IsReady && engine.LoadFailure == null; i++) await Task.Delay(20);
        Assert.Null(engine.LoadFailure);
        return (app, new HttpClient { BaseAddress = VeloServer.Address(app), Timeout = TimeSpan.FromMinutes(1) });
    }

    private static async Task<JsonElement> SendAsync(HttpClient http, string route, string? body, HttpStatusCode expected = HttpStatusCode.OK)
    {
        using var response = body == null ? await http.GetAsync(route) : await http.PostAsync(route, TestServer.JsonContent(body));
        string text = await response.Content.ReadAsStringAsync();
        Assert.True(expected == response.StatusCode, $"{route}: {(int)response.StatusCode} {text}");
        return text.Length > 0 && text[0] == '{' ? JsonDocument.Parse(text).RootElement.Clone() : default;
    }

    private static string[] Names(JsonElement list, string array, string field) =>
        [.. list.GetProperty(array).EnumerateArray().Select(model => model.GetProperty(field).GetString()!)];

    [Fact]
    public async Task Two_decoders_and_an_encoder_answer_by_name_and_bad_names_or_kinds_get_clear_errors()
    {
        using var engine = new VeloEngine(Options());
        var (app, http) = await StartAsync(engine);
        await using var _ = app;
        using var __ = http;

        Assert.Equal(["stories", "small", "embed"], Names(await SendAsync(http, "/v1/models", null), "data", "id"));
        Assert.Equal(["stories"], Names(await SendAsync(http, "/api/ps", null), "models", "name"));

        const string chat = "\"messages\": [{\"role\": \"user\", \"content\": \"Once upon a time\"}], \"max_tokens\": 4, \"temperature\": 0";
        Assert.Equal("small", (await SendAsync(http, "/v1/chat/completions", $"{{\"model\": \"small\", {chat}}}")).GetProperty("model").GetString());
        Assert.Equal("stories", (await SendAsync(http, "/v1/chat/completions", $"{{{chat}}}")).GetProperty("model").GetString());
        var embedded = await SendAsync(http, "/v1/embeddings", "{\"model\": \"embed\", \"input\": [\"a cat\", \"a dog\"]}");
        Assert.Equal("embed", embedded.GetProperty("model").GetString());
        Assert.Equal(32, embedded.GetProperty("data")[1].GetProperty("embedding").GetArrayLength());
        var ollamaChat = await SendAsync(http, "/api/chat",
            "{\"model\": \"small:latest\", \"stream\": false, \"messages\": [{\"role\": \"user\", \"content\": \"hi\"}], \"options\": {\"num_predict\": 3}}");
        Assert.Equal("small", ollamaChat.GetProperty("model").GetString());
        Assert.Equal(32, (await SendAsync(http, "/api/embed", "{\"model\": \"embed\", \"input\": \"a cat\"}")).GetProperty("embeddings")[0].GetArrayLength());
        Assert.Equal(["stories", "small", "embed"], Names(await SendAsync(http, "/api/ps", null), "models", "name"));
        Assert.Equal(["stories", "small", "embed"], Names(await SendAsync(http, "/api/tags", null), "models", "name"));
        var show = await SendAsync(http, "/api/show", "{\"model\": \"embed\"}");
        Assert.Equal("embedding", show.GetProperty("capabilities")[0].GetString());

        var unknown = await SendAsync(http, "/v1/chat/completions", $"{{\"model\": \"nope\", {chat}}}", HttpStatusCode.NotFound);
        Assert.Equal("model_not_found", unknown.GetProperty("error").GetProperty("code").GetString());
        Assert.Contains("'nope'", unknown.GetProperty("error").GetProperty("message").GetString());
        Assert.Contains("'nope'", (await SendAsync(http, "/api/generate", "{\"model\": \"nope\", \"prompt\": \"hi\"}", HttpStatusCode.NotFound))
            .GetProperty("error").GetString());

        var wrong = await SendAsync(http, "/v1/chat/completions", $"{{\"model\": \"embed\", {chat}}}", HttpStatusCode.BadRequest);
        Assert.Equal("model_not_supported", wrong.GetProperty("error").GetProperty("code").GetString());
        Assert.Contains("is an encoder", wrong.GetProperty("error").GetProperty("message").GetString());
        Assert.Contains("is a decoder", (await SendAsync(http, "/v1/embeddings", "{\"model\": \"small\", \"input\": \"a cat\"}", HttpStatusCode.BadRequest))
            .GetProperty("error").GetProperty("message").GetString());
        Assert.Contains("is a decoder", (await SendAsync(http, "/api/embed", "{\"model\": \"stories\", \"input\": \"a cat\"}", HttpStatusCode.BadRequest))
            .GetProperty("error").GetString());

        // keep_alive belongs to Ollama's routes: the OpenAI routes name it instead of ignoring it.
        Assert.Equal("keep_alive", (await SendAsync(http, "/v1/embeddings", "{\"model\": \"embed\", \"input\": \"a\", \"keep_alive\": \"1m\"}",
            HttpStatusCode.BadRequest)).GetProperty("error").GetProperty("param").GetString());
        Assert.Equal("keep_alive", (await SendAsync(http, "/v1/chat/completions", $"{{\"model\": \"small\", \"keep_alive\": -1, {chat}}}",
            HttpStatusCode.BadRequest)).GetProperty("error").GetProperty("param").GetString());

        // The others keep serving after the refusals; /metrics counts every loaded model.
        Assert.Equal("small", (await SendAsync(http, "/v1/completions", "{\"model\": \"small\", \"prompt\": \"Once\", \"max_tokens\": 2}")).GetProperty("model").GetString());
        using var metrics = await http.GetAsync("/metrics");
        Assert.Contains("velo_models_loaded 3", await metrics.Content.ReadAsStringAsync());
        await app.StopAsync();
    }

    [Fact]
    public async Task Named_models_load_on_first_use_and_unload_after_their_keep_alive()
    {
        using var engine = new VeloEngine(Options(keepAlive: TimeSpan.FromMilliseconds(200)));
        var (app, http) = await StartAsync(engine);
        await using var _ = app;
        using var __ = http;
        Assert.Null(Status(engine, "small").Loaded);

        await SendAsync(http, "/v1/completions", "{\"model\": \"small\", \"prompt\": \"Once\", \"max_tokens\": 2}");
        await WaitUntilAsync(() => Status(engine, "small").Loaded == null, "small unloads once idle for its keep-alive");

        // Ollama's keep_alive: -1 keeps it loaded past the server's keep-alive; 0 unloads it as soon as the request ends.
        await SendAsync(http, "/api/generate", "{\"model\": \"small\", \"prompt\": \"\", \"keep_alive\": -1}");
        await Task.Delay(500);
        Assert.Equal(DateTimeOffset.MaxValue, Status(engine, "small").ExpiresAt);
        var unload = await SendAsync(http, "/api/generate", "{\"model\": \"small\", \"prompt\": \"\", \"keep_alive\": \"0s\"}");
        Assert.Equal("unload", unload.GetProperty("done_reason").GetString());
        await WaitUntilAsync(() => Status(engine, "small").Loaded == null, "keep_alive 0 unloads after the request");
        await SendAsync(http, "/api/generate", "{\"model\": \"small\", \"prompt\": \"\", \"keep_alive\": \"soon\"}", HttpStatusCode.BadRequest);

        // A model with a request running is never unloaded, whatever its keep-alive.
        using (var lease = await engine.Models.AcquireAsync("small", ModelKind.Decoder, TimeSpan.Zero))
        {
            await Task.Delay(300);
            Assert.NotNull(Status(engine, "small").Loaded);
            Assert.Equal(1, Status(engine, "small").ActiveRequests);
        }
        await WaitUntilAsync(() => Status(engine, "small").Loaded == null, "the model unloads once its last lease ends");
        await app.StopAsync();
    }

    [Fact]
    public async Task A_memory_cap_unloads_idle_models_first_and_refuses_a_model_that_cannot_fit_while_others_keep_serving()
    {
        long stories = DecoderBytes(TestPaths.Stories260K), small = DecoderBytes(_files.Small);
        // Room for stories and one more small model's worth, not for the encoder's plan beside them.
        using var engine = new VeloEngine(Options(memoryCap: stories + small + small / 2) with
        {
            Models = [new NamedModelFile("small", _files.Small), new NamedModelFile("small2", _files.Small), new NamedModelFile("embed", _files.Encoder)],
        });
        var (app, http) = await StartAsync(engine);
        await using var _ = app;
        using var __ = http;

        // small2 needs room: the least recently used idle model unloads, small (stories was used after it).
        await SendAsync(http, "/v1/completions", "{\"model\": \"small\", \"prompt\": \"Once\", \"max_tokens\": 2}");
        await SendAsync(http, "/v1/completions", "{\"prompt\": \"Once\", \"max_tokens\": 2}");
        await SendAsync(http, "/v1/completions", "{\"model\": \"small2\", \"prompt\": \"Once\", \"max_tokens\": 2}");
        Assert.Null(Status(engine, "small").Loaded);
        Assert.NotNull(Status(engine, "stories").Loaded);
        Assert.NotNull(Status(engine, "small2").Loaded);

        // With small2 busy (a lease held) and stories busy too, nothing idle can make room: 503 naming the sizes.
        using (await engine.Models.AcquireAsync("stories"))
        using (await engine.Models.AcquireAsync("small2"))
        {
            var busy = await SendAsync(http, "/v1/completions", "{\"model\": \"small\", \"prompt\": \"Once\", \"max_tokens\": 2}", HttpStatusCode.ServiceUnavailable);
            Assert.Equal("insufficient_memory", busy.GetProperty("error").GetProperty("code").GetString());
            Assert.Contains("'small'", busy.GetProperty("error").GetProperty("message").GetString());
            Assert.Contains("MiB", busy.GetProperty("error").GetProperty("message").GetString());
            Assert.Equal("stories", (await SendAsync(http, "/v1/completions", "{\"prompt\": \"Once\", \"max_tokens\": 2}")).GetProperty("model").GetString());
        }

        var tooLarge = await SendAsync(http, "/v1/embeddings", "{\"model\": \"embed\", \"input\": \"a cat\"}", (HttpStatusCode)507);
        Assert.Contains("'embed' needs", tooLarge.GetProperty("error").GetProperty("message").GetString());
        Assert.Contains("memory cap", tooLarge.GetProperty("error").GetProperty("message").GetString());
        Assert.Equal("small2", (await SendAsync(http, "/v1/completions", "{\"model\": \"small2\", \"prompt\": \"Once\", \"max_tokens\": 2}")).GetProperty("model").GetString());
        await app.StopAsync();
    }

    [Fact]
    public async Task Concurrent_first_requests_load_a_model_once()
    {
        var options = Options();
        var counting = new CountingSource(new FileModelSource("small", _files.Small, options));
        using var models = new ServedModels([new FileModelSource("stories", TestPaths.Stories260K, options), counting]);
        var leases = await Task.WhenAll(Enumerable.Range(0, 8).Select(_ => Task.Run(() => models.AcquireAsync("small", ModelKind.Decoder))));
        Assert.Equal(1, counting.Loads);
        Assert.All(leases, lease => Assert.Same(leases[0].Model, lease.Model));
        Assert.Equal(8, models.Find("small")!.ActiveRequests);
        foreach (var lease in leases) lease.Dispose();
        Assert.Equal(0, models.Find("small")!.ActiveRequests);
    }

    /// <summary>The seam a cascade uses: an entry whose model is built over another entry, which it keeps leased while loaded.</summary>
    [Fact]
    public async Task An_entry_built_over_another_keeps_it_loaded_until_it_unloads()
    {
        var options = Options();
        using var models = new ServedModels(
            [new FileModelSource("stories", TestPaths.Stories260K, options), new RouteSource("auto", "stories")],
            new ServedModelsOptions { KeepAlive = TimeSpan.FromMilliseconds(100) });
        using var engine = new VeloEngine(models);
        using (var lease = await engine.AcquireAsync("auto", ModelKind.Decoder, null, CancellationToken.None))
        {
            Assert.Equal("auto", lease.Model.Id);
            Assert.Same(models.Find("stories")!.Loaded!.Generator, lease.Generator);
            Assert.Equal(1, models.Find("stories")!.ActiveRequests);
        }
        await WaitUntilAsync(() => models.Find("auto")!.Loaded == null && models.Find("stories")!.Loaded == null,
            "the route unloads after its keep-alive, then the entry under it");
    }

    private static ModelStatus Status(VeloEngine engine, string name) => engine.Models.Models.Single(model => model.Name == name);

    private static long DecoderBytes(string path)
    {
        using var model = LanguageModel.Load(path);
        return BatchScheduler.MemoryPlanFor(model, new BatchSchedulerOptions { Parallel = 2, ContextLength = 128 }).TotalBytes;
    }

    private static async Task WaitUntilAsync(Func<bool> condition, string what)
    {
        for (int i = 0; i < 500 && !condition(); i++) await Task.Delay(20);
        Assert.True(condition(), what);
    }

    private sealed class CountingSource(ModelSource inner) : ModelSource(inner.Name)
    {
        private int _loads;
        public int Loads => _loads;

        public override async Task<ServedModel> LoadAsync(ModelLoadContext context, CancellationToken cancellation)
        {
            Interlocked.Increment(ref _loads);
            await Task.Delay(100, cancellation);
            return await inner.LoadAsync(context, cancellation);
        }
    }

    private sealed class RouteSource(string name, string over) : ModelSource(name)
    {
        public override ModelKind? Kind => ModelKind.Decoder;

        public override async Task<ServedModel> LoadAsync(ModelLoadContext context, CancellationToken cancellation)
        {
            var part = await context.Registry.AcquireAsync(over, ModelKind.Decoder, null, cancellation);
            return new ServedModel(Name, part.Generator, null, part);
        }
    }
}
