using System.ClientModel;
using System.Net;
using OpenAI;
using OpenAI.Embeddings;
using Velo.Generation;
using Velo.Inference;
using Velo.Models;
using Velo.Server;
using Velo.Tests.Models;
using Velo.Text;
using Velo.Threading;

namespace Velo.Tests.Server;

/// <summary>
/// <c>/v1/embeddings</c> on a server holding a decoder and MiniLM: the OpenAI .NET client's EmbeddingClient (which
/// asks for base64) gets the in-process vectors; token-array inputs, float output and dimensions; a decoder-only
/// server answers 400.
/// </summary>
public sealed class EmbeddingsServerTests(MiniLMFixture fixture) : IClassFixture<MiniLMFixture>
{
    /// <summary>What <c>velo serve -m encoder.gguf</c> runs: the engine loads the file, sees an encoder and serves
    /// embeddings, /tokenize and /health; the generation routes answer 400 saying the model is an encoder.</summary>
    [Fact]
    public async Task A_server_loaded_from_an_encoder_file_serves_embeddings_and_refuses_completions()
    {
        using var engine = new VeloEngine(new VeloServerOptions { ModelPath = fixture.F32Path, ModelId = "minilm", Threads = 2 });
        await using var app = VeloServer.Build(engine, "127.0.0.1", 0);
        await app.StartAsync();
        using var http = new HttpClient { BaseAddress = VeloServer.Address(app) };
        for (int i = 0; i < 500 && !engine.IsReady && engine.LoadFailure == null; i++) await Task.Delay(20);
        Assert.Null(engine.LoadFailure);
        Assert.Equal(HttpStatusCode.OK, (await http.GetAsync("/health")).StatusCode);

        var response = await http.PostAsync("/v1/embeddings", TestServer.JsonContent("""{"input": "Hello world", "encoding_format": "float"}"""));
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        using (var json = System.Text.Json.JsonDocument.Parse(await response.Content.ReadAsStringAsync()))
        {
            float[] served = json.RootElement.GetProperty("data")[0].GetProperty("embedding").EnumerateArray().Select(e => e.GetSingle()).ToArray();
            Assert.Equal((await engine.Embeddings!.GenerateAsync(["Hello world"]))[0].Vector.ToArray(), served);
        }

        var tokenized = await http.PostAsync("/tokenize", TestServer.JsonContent("""{"content": "Hello world"}"""));
        Assert.Equal(HttpStatusCode.OK, tokenized.StatusCode);
        foreach (string route in (string[])["/v1/chat/completions", "/v1/completions"])
        {
            var refused = await http.PostAsync(route, TestServer.JsonContent("""{"prompt": "hi", "messages": [{"role": "user", "content": "hi"}]}"""));
            Assert.Equal(HttpStatusCode.BadRequest, refused.StatusCode);
            Assert.Contains("is an encoder", await refused.Content.ReadAsStringAsync());
        }
        Assert.Equal(HttpStatusCode.OK, (await http.GetAsync("/metrics")).StatusCode);
        await app.StopAsync();
    }

    [Fact]
    public async Task OpenAiEmbeddingClientGetsTheInProcessVectors()
    {
        using var pool = new WorkerPool(2);
        using var decoder = LanguageModel.Load(TestPaths.Stories260K);
        using var scheduler = new BatchScheduler(decoder, new BatchSchedulerOptions { Parallel = 1, ContextLength = 128 }, pool);
        using var encoder = ModelRegistry.Load(fixture.F32Path);
        using var embedder = new TextEmbedder(encoder, Tokenizer.FromGguf(encoder.File.Metadata), pool);
        using var generator = new VeloEmbeddingGenerator(embedder, "minilm");
        using var engine = new VeloEngine(scheduler, "stories") { Embeddings = generator };
        await using var app = VeloServer.Build(engine, "127.0.0.1", 0);
        await app.StartAsync();
        var address = VeloServer.Address(app);

        var client = new EmbeddingClient("minilm", new ApiKeyCredential("none"), new OpenAIClientOptions { Endpoint = new Uri(address, "v1") });
        string[] texts = ["Hello world", "東京は日本の首都です。", ""];
        var expected = await generator.GenerateAsync(texts);
        var served = (await client.GenerateEmbeddingsAsync(texts)).Value;
        for (int i = 0; i < texts.Length; i++) Assert.Equal(expected[i].Vector.ToArray(), served[i].ToFloats().ToArray());
        Assert.Equal(texts.Sum(t => embedder.Tokenize(t).Length), served.Usage.InputTokenCount);

        var cut = (await client.GenerateEmbeddingAsync("Hello world", new EmbeddingGenerationOptions { Dimensions = 64 })).Value.ToFloats().ToArray();
        Assert.Equal(VeloEmbeddingGenerator.WithDimensions(expected[0].Vector.ToArray(), 64), cut);

        using var http = new HttpClient { BaseAddress = address };
        int[] ids = embedder.Tokenize("Hello world");
        var response = await http.PostAsync("/v1/embeddings", TestServer.JsonContent($$"""{"input": [[{{string.Join(",", ids)}}]], "encoding_format": "float"}"""));
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        using var json = System.Text.Json.JsonDocument.Parse(await response.Content.ReadAsStringAsync());
        float[] fromTokens = json.RootElement.GetProperty("data")[0].GetProperty("embedding").EnumerateArray().Select(e => e.GetSingle()).ToArray();
        Assert.Equal(expected[0].Vector.ToArray(), fromTokens);

        foreach (string bad in (string[])["""{"input": []}""", """{"input": [[999999]]}""", """{"input": 5}""", """{"input": "x", "dimensions": 999}""", """{}"""])
        {
            var refused = await http.PostAsync("/v1/embeddings", TestServer.JsonContent(bad));
            Assert.True(refused.StatusCode == HttpStatusCode.BadRequest, $"{bad}: {refused.StatusCode}");
        }
        await app.StopAsync();
    }
}

public sealed class DecoderEmbeddingsTests(SharedTestServer server) : IClassFixture<SharedTestServer>
{
    [Fact]
    public async Task ADecoderOnlyServerRefusesEmbeddingsWith400()
    {
        var response = await server.Http.PostAsync("/v1/embeddings", TestServer.JsonContent("""{"input": "hello"}"""));
        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        Assert.Contains("is a decoder", await response.Content.ReadAsStringAsync());
    }
}
