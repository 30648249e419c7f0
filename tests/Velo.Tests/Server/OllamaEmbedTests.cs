using OllamaSharp;
using OllamaSharp.Models;
using OllamaSharp.Models.Exceptions;
using Velo.Server;
using Velo.Tests.Models;

namespace Velo.Tests.Server;

/// <summary><c>/api/embed</c> on a server loaded from an encoder's file, through OllamaSharp.</summary>
public sealed class OllamaEmbedTests(MiniLMFixture fixture) : IClassFixture<MiniLMFixture>
{
    [Fact]
    public async Task Embed_returns_the_in_process_vectors_and_refuses_an_input_it_would_cut()
    {
        using var engine = new VeloEngine(new VeloServerOptions { ModelPath = fixture.F32Path, ModelId = "minilm", Threads = 2 });
        await using var app = VeloServer.Build(engine, "127.0.0.1", 0);
        await app.StartAsync();
        for (int i = 0; i < 500 && !engine.IsReady && engine.LoadFailure == null; i++) await Task.Delay(20);
        Assert.Null(engine.LoadFailure);
        using var ollama = new OllamaApiClient(new HttpClient { BaseAddress = VeloServer.Address(app) }, "minilm");

        var response = await ollama.EmbedAsync(new EmbedRequest { Input = ["Hello world", "Goodbye"] });
        var expected = await engine.Embeddings!.GenerateAsync(["Hello world", "Goodbye"]);
        Assert.Equal(2, response.Embeddings.Count);
        Assert.Equal(expected[0].Vector.ToArray(), response.Embeddings[0]);
        Assert.Equal(expected[1].Vector.ToArray(), response.Embeddings[1]);
        Assert.True(response.PromptEvalCount > 4);
        Assert.Contains("embedding", (await ollama.ShowModelAsync(new ShowModelRequest { Model = "minilm" })).Capabilities!);

        string longText = string.Join(' ', Enumerable.Repeat("word", 1000));
        var error = await Assert.ThrowsAsync<OllamaException>(() => ollama.EmbedAsync(new EmbedRequest { Input = [longText], Truncate = false }));
        Assert.Contains("truncate", error.Message);
        Assert.Single((await ollama.EmbedAsync(new EmbedRequest { Input = [longText] })).Embeddings);
        await app.StopAsync();
    }
}
