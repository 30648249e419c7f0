using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;
using Microsoft.AspNetCore.Builder;
using Velo.Gateway;
using Velo.Generation;
using Velo.Inference;
using Velo.Models;
using Velo.Server;
using Velo.Tests.Server;
using Velo.Threading;

namespace Velo.Tests.Gateway;

/// <summary>
/// A <c>velo serve</c> node on a loopback port that a test can kill (connections aborted, as a crashed process drops
/// them) and bring back on the same port, with the same model and scheduler.
/// </summary>
public sealed class GatewayTestNode : IDisposable
{
    private readonly WorkerPool _pool = new(1);

    public GatewayTestNode(string modelPath, string modelId, int parallel = 4)
    {
        Model = LanguageModel.Load(modelPath);
        Scheduler = new BatchScheduler(Model, new BatchSchedulerOptions { Parallel = parallel, ContextLength = 512 }, _pool);
        Engine = new VeloEngine(Scheduler, modelId) { ModelPath = modelPath };
        App = VeloServer.Build(Engine, "127.0.0.1", 0);
        App.StartAsync().GetAwaiter().GetResult();
        Address = VeloServer.Address(App);
    }

    public LanguageModel Model { get; }
    public BatchScheduler Scheduler { get; }
    public VeloEngine Engine { get; }
    public WebApplication App { get; private set; }
    public Uri Address { get; }
    public bool Running { get; private set; } = true;

    /// <summary>Requests of the chat route the node answered with 200.</summary>
    public long ChatRequests => Engine.Metrics.Requests("/v1/chat/completions", 200);

    /// <summary>Stops at once: open connections are aborted, the port refuses new ones.</summary>
    public async Task KillAsync()
    {
        Running = false;
        await App.StopAsync(new CancellationToken(canceled: true));
        await App.DisposeAsync();
    }

    /// <summary>Listens again on the same port.</summary>
    public async Task RestartAsync()
    {
        App = VeloServer.Build(Engine, "127.0.0.1", Address.Port);
        await App.StartAsync();
        Running = true;
    }

    public void Dispose()
    {
        if (Running) KillAsync().GetAwaiter().GetResult();
        Scheduler.Dispose();
        Engine.Dispose();
        _pool.Dispose();
        Model.Dispose();
    }
}

/// <summary>A gateway on a loopback port in front of some nodes, with helpers to talk to it.</summary>
public sealed class TestGateway : IDisposable
{
    public TestGateway(GatewayOptions options)
    {
        Options = options with { Host = "127.0.0.1", Port = 0 };
        App = VeloGateway.Build(Options);
        App.StartAsync().GetAwaiter().GetResult();
        Address = VeloGateway.Address(App);
        Http = new HttpClient(new SocketsHttpHandler { MaxResponseDrainSize = 0 }) { BaseAddress = Address, Timeout = TimeSpan.FromMinutes(2) };
    }

    /// <summary>Fast checks, so tests see nodes come and go within a fraction of a second.</summary>
    public static GatewayOptions Fast(params Uri[] nodes) => new()
    {
        Nodes = nodes.Select(n => n.ToString()).ToArray(),
        HealthInterval = TimeSpan.FromMilliseconds(200),
        HeartbeatInterval = TimeSpan.FromMilliseconds(200),
    };

    public GatewayOptions Options { get; }
    public WebApplication App { get; }
    public Uri Address { get; }
    public HttpClient Http { get; }
    public NodeRegistry Registry => (NodeRegistry)App.Services.GetService(typeof(NodeRegistry))!;

    public GatewayNode Node(Uri address) => Registry.Nodes.Single(n => n.Address == address);

    /// <summary>Waits until the gateway routes <paramref name="model"/> to <paramref name="count"/> nodes.</summary>
    public Task UntilServingAsync(string model, int count) => OpenAiClientTests.Eventually(() => Registry.Serving(model).Count == count);

    public static StringContent Json(string json) => new(json, Encoding.UTF8, "application/json");

    public static string Chat(string model, IEnumerable<(string Role, string Content)> messages, int maxTokens, bool stream = false) =>
        JsonSerializer.Serialize(new Dictionary<string, object>
        {
            ["model"] = model,
            ["messages"] = messages.Select(m => new Dictionary<string, string> { ["role"] = m.Role, ["content"] = m.Content }).ToArray(),
            ["max_tokens"] = maxTokens,
            ["temperature"] = 0,
            ["stream"] = stream,
        });

    public async Task<(int Status, JsonElement Body)> PostAsync(string path, string json, string? apiKey = null)
    {
        using var request = new HttpRequestMessage(HttpMethod.Post, path) { Content = Json(json) };
        if (apiKey != null) request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", apiKey);
        using var response = await Http.SendAsync(request);
        return ((int)response.StatusCode, JsonDocument.Parse(await response.Content.ReadAsStringAsync()).RootElement.Clone());
    }

    public void Dispose()
    {
        Http.Dispose();
        App.StopAsync().GetAwaiter().GetResult();
        ((IDisposable)App).Dispose();
    }
}

/// <summary>
/// Three nodes behind the gateway: two serve stories260K, one a tiny random-weight Llama (<c>velo synth</c>'s kind)
/// named <see cref="SynthId"/>, which joins by heartbeat (<c>velo serve --join</c>) rather than by configuration.
/// </summary>
public sealed class GatewayCluster : IDisposable
{
    public const string SynthId = "tiny-synth";

    public GatewayCluster()
    {
        SynthPath = Path.Combine(Path.GetTempPath(), $"velo-gateway-synth-{Environment.ProcessId}.gguf");
        ModelSynthesizer.Write(SynthPath, new SynthSpec { Name = SynthId, Dim = 64, Layers = 2, Heads = 4, FfnDim = 128, VocabSize = 320, ContextLength = 512 }, threads: 1);
        StoriesA = new GatewayTestNode(TestPaths.Stories260K, TestServer.ModelId);
        StoriesB = new GatewayTestNode(TestPaths.Stories260K, TestServer.ModelId);
        Synth = new GatewayTestNode(SynthPath, SynthId);
        Gateway = new TestGateway(TestGateway.Fast(StoriesA.Address, StoriesB.Address));
        SynthMembership = new GatewayMembership(Gateway.Address, Synth.Address, apiKey: null, report: _ => { });
        SynthMembership.StartAsync(CancellationToken.None).GetAwaiter().GetResult();
        Gateway.UntilServingAsync(TestServer.ModelId, 2).GetAwaiter().GetResult();
        Gateway.UntilServingAsync(SynthId, 1).GetAwaiter().GetResult();
    }

    public string SynthPath { get; }
    public GatewayTestNode StoriesA { get; }
    public GatewayTestNode StoriesB { get; }
    public GatewayTestNode Synth { get; }
    public TestGateway Gateway { get; }
    public GatewayMembership SynthMembership { get; }

    public void Dispose()
    {
        SynthMembership.StopAsync(CancellationToken.None).GetAwaiter().GetResult();
        SynthMembership.Dispose();
        Gateway.Dispose();
        StoriesA.Dispose();
        StoriesB.Dispose();
        Synth.Dispose();
        File.Delete(SynthPath);
    }
}

/// <summary>A stories260K server with a gateway in front: clients connect to the gateway.</summary>
public sealed class GatewayFrontedServer : TestServer, IDisposable
{
    private readonly TestGateway _gateway;

    public GatewayFrontedServer() : base(parallel: 8)
    {
        var node = Address;
        _gateway = new TestGateway(TestGateway.Fast(node));
        _gateway.UntilServingAsync(ModelId, 1).GetAwaiter().GetResult();
        Http.Dispose();
        Address = _gateway.Address;
        Http = new HttpClient { BaseAddress = Address, Timeout = TimeSpan.FromMinutes(2) };
    }

    public new void Dispose()
    {
        _gateway.Dispose();
        base.Dispose();
    }
}
