using System.ClientModel;
using System.ClientModel.Primitives;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;
using Microsoft.AspNetCore.Builder;
using OpenAI;
using OpenAI.Chat;
using Velo.Generation;
using Velo.Inference;
using Velo.Server;
using Velo.Threading;

namespace Velo.Tests.Server;

/// <summary>A Velo server with stories260K on a free loopback port, driven by the official OpenAI client or raw HTTP.</summary>
public class TestServer : IDisposable
{
    public const string ModelId = "stories260K";

    private readonly WorkerPool _pool = new(2);

    public TestServer(int parallel, int contextLength = 512, int queueCapacity = 64, string? apiKey = null, bool startScheduler = true,
        bool publicMetrics = false, long maxRequestBytes = 0)
    {
        Model = LanguageModel.Load(TestPaths.Stories260K);
        Scheduler = new BatchScheduler(Model, new BatchSchedulerOptions { Parallel = parallel, ContextLength = contextLength, QueueCapacity = queueCapacity },
            _pool, startScheduler);
        Engine = new VeloEngine(Scheduler, ModelId, apiKey) { PublicMetrics = publicMetrics, MaxRequestBytes = maxRequestBytes };
        App = VeloServer.Build(Engine, "127.0.0.1", 0);
        App.StartAsync().GetAwaiter().GetResult();
        Address = VeloServer.Address(App);
        Http = new HttpClient { BaseAddress = Address, Timeout = TimeSpan.FromMinutes(2) };
    }

    public LanguageModel Model { get; }
    public BatchScheduler Scheduler { get; }
    public VeloEngine Engine { get; }
    public WebApplication App { get; }
    public Uri Address { get; }
    public HttpClient Http { get; }

    public ChatClient ChatClient(string model = ModelId, string apiKey = "no key needed") =>
        new(model, new ApiKeyCredential(apiKey), new OpenAIClientOptions { Endpoint = new Uri(Address, "v1") });

    /// <summary>
    /// A chat client that closes its connection when a stream is abandoned. By default .NET's HttpClient drains up to
    /// 1 MB of an abandoned response for up to 2 s to reuse the connection, so the server sees a reader, not a disconnect.
    /// </summary>
    public ChatClient DisconnectingChatClient(HttpClient http) =>
        new(ModelId, new ApiKeyCredential("no key needed"),
            new OpenAIClientOptions { Endpoint = new Uri(Address, "v1"), Transport = new HttpClientPipelineTransport(http) });

    public static HttpClient HttpClientWithoutDrain() => new(new SocketsHttpHandler { MaxResponseDrainSize = 0 });

    public OpenAIClient Client(string apiKey = "no key needed") =>
        new(new ApiKeyCredential(apiKey), new OpenAIClientOptions { Endpoint = new Uri(Address, "v1") });

    /// <summary>A JSON body with the content type the server requires.</summary>
    public static StringContent JsonContent(string json) => new(json, Encoding.UTF8, "application/json");

    public async Task<(int Status, JsonElement Body)> PostAsync(string path, string json, string? apiKey = null)
    {
        using var request = new HttpRequestMessage(HttpMethod.Post, path) { Content = JsonContent(json) };
        if (apiKey != null) request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", apiKey);
        using var response = await Http.SendAsync(request);
        string text = await response.Content.ReadAsStringAsync();
        return ((int)response.StatusCode, JsonDocument.Parse(text).RootElement.Clone());
    }

    /// <summary>Reads a streaming response's <c>data:</c> events up to <c>[DONE]</c>.</summary>
    public static async IAsyncEnumerable<JsonElement> EventsAsync(HttpResponseMessage response)
    {
        using var reader = new StreamReader(await response.Content.ReadAsStreamAsync());
        while (await reader.ReadLineAsync() is { } line)
        {
            if (!line.StartsWith("data: ", StringComparison.Ordinal)) continue;
            string data = line["data: ".Length..];
            if (data == "[DONE]") yield break;
            yield return JsonDocument.Parse(data).RootElement.Clone();
        }
        throw new InvalidDataException("the stream ended without data: [DONE]");
    }

    public void Dispose()
    {
        Http.Dispose();
        App.StopAsync().GetAwaiter().GetResult();
        ((IDisposable)App).Dispose();
        Scheduler.Dispose();
        Engine.Dispose();
        _pool.Dispose();
        Model.Dispose();
    }
}

/// <summary>The server a test class shares (xunit fixtures need a single constructor): 8 sequence slots, 512 tokens each.</summary>
public sealed class SharedTestServer() : TestServer(parallel: 8);
