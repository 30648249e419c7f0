using System.Net;
using System.Net.Sockets;
using System.Runtime.InteropServices;
using System.Text.Json;
using Microsoft.AspNetCore.Builder;
using Velo.Cli.Commands;
using Velo.Generation;
using Velo.Inference;
using Velo.Models;
using Velo.Pipeline;
using Velo.Runtime;
using Velo.Server;
using Velo.Tests.Server;
using Velo.Threading;

namespace Velo.Tests.Pipeline;

/// <summary>
/// A model split across pipeline stages on loopback (<c>velo serve --pipeline</c> and <c>velo stage</c>, in process):
/// the same logits bit for bit as one process, the same greedy text through the server, and clear refusals.
/// </summary>
public sealed class PipelineTests(SynthModelFixture synth) : IClassFixture<SynthModelFixture>
{
    private static readonly PipelineOptions Fast = new() { ConnectTimeout = TimeSpan.FromSeconds(5), CallTimeout = TimeSpan.FromSeconds(20) };

    [Fact]
    public void A_range_of_blocks_binds_only_its_tensors_and_caches_only_its_layers()
    {
        using var whole = ModelRegistry.Load(TestPaths.Stories260K);
        using var middle = ModelRegistry.LoadLayers(TestPaths.Stories260K, "2-3");
        Assert.Equal(new LayerRange(2, 4, 5), middle.Layers);
        Assert.False(middle.Layers.IsFirst || middle.Layers.IsLast);
        Assert.Equal(2, middle.Info.Layers.Count);
        Assert.True(middle.WeightBytes < whole.WeightBytes * 2 / 5 + 1, $"{middle.WeightBytes} of {whole.WeightBytes} bytes");
        using var state = middle.CreateState(contextLength: 16);
        Assert.Equal(2, state.Cache.Layers);
    }

    [Theory]
    [InlineData("3-9")]
    [InlineData("4-2")]
    [InlineData("2")]
    [InlineData("a-b")]
    public void Layers_outside_the_model_are_refused(string layers)
    {
        var e = Assert.Throws<ArgumentException>(() => ModelRegistry.LoadLayers(TestPaths.Stories260K, layers));
        Assert.Contains("--layers", e.Message);
    }

    [Fact]
    public async Task Two_stages_give_the_single_process_logits_bit_for_bit()
    {
        await using var stage = new TestStage(TestPaths.Stories260K, "2-4");
        AssertSameLogits(TestPaths.Stories260K, [stage.Address]);
    }

    [Fact]
    public async Task Three_stages_give_the_single_process_logits_bit_for_bit()
    {
        await using var first = new TestStage(synth.Path, "1-2");
        await using var last = new TestStage(synth.Path, "3-3");
        AssertSameLogits(synth.Path, [first.Address, last.Address]);
    }

    private static void AssertSameLogits(string modelPath, string[] stages)
    {
        List<float[]> single, split;
        using (var model = ModelRegistry.Load(modelPath)) single = RunBatches(model);
        using (var pipeline = PipelineModel.Connect(modelPath, stages, Fast)) split = RunBatches(pipeline);
        Assert.Equal(single.Count, split.Count);
        for (int i = 0; i < single.Count; i++)
            Assert.True(MemoryMarshal.AsBytes(single[i].AsSpan()).SequenceEqual(MemoryMarshal.AsBytes(split[i].AsSpan())), $"logits row {i} differs");
    }

    /// <summary>
    /// Continuous batching's passes: two prompts in one batch; decode steps where sequence 0 verifies two drafts (three
    /// logits rows) beside sequence 1, then rolls back the rejected one; a reused sequence keeping part of its prefix
    /// beside a new one; keeping only sequence 0. Returns every logits row in order.
    /// </summary>
    private static List<float[]> RunBatches(IModel model)
    {
        int vocab = model.Info.VocabSize;
        using var pool = new WorkerPool(2);
        using var state = model.CreateState(contextLength: 64, maxBatch: 16, sequences: 3, maxLogitRows: 8, pool: pool);
        var batch = new ForwardBatch(16);
        var rows = new List<float[]>();
        int Token(int i) => (i * 37 + 11) % vocab;
        void Pass()
        {
            model.Forward(state, batch);
            for (int r = 0; r < batch.LogitCount; r++) rows.Add(state.Output(r).ToArray());
            batch.Clear();
        }

        for (int p = 0; p < 7; p++) batch.Add(Token(p), p, sequence: 0, wantLogits: p == 6);
        for (int p = 0; p < 5; p++) batch.Add(Token(100 + p), p, sequence: 1, wantLogits: p == 4);
        Pass();
        int length0 = 7, length1 = 5;
        for (int step = 0; step < 4; step++)
        {
            for (int d = 0; d < 3; d++) batch.Add(Token(200 + 10 * step + d), length0 + d, sequence: 0, wantLogits: true);
            batch.Add(Token(300 + step), length1, sequence: 1, wantLogits: true);
            Pass();
            length0 += 2; // the second draft was rejected
            state.Cache.RemoveRange(0, length0);
            length1++;
        }
        state.Cache.RemoveRange(1, 3);
        for (int p = 3; p < 6; p++) batch.Add(Token(400 + p), p, sequence: 1, wantLogits: p == 5);
        for (int p = 0; p < 4; p++) batch.Add(Token(500 + p), p, sequence: 2, wantLogits: p == 3);
        batch.Add(Token(600), length0++, sequence: 0, wantLogits: true);
        Pass();
        state.Cache.Keep(0);
        batch.Add(Token(700), length0, sequence: 0, wantLogits: true);
        for (int p = 0; p < 2; p++) batch.Add(Token(800 + p), p, sequence: 1, wantLogits: p == 1);
        Pass();
        Assert.Equal(23, rows.Count);
        return rows;
    }

    [Fact]
    public async Task Serve_pipeline_generates_what_the_unsplit_server_generates()
    {
        await using var stage = new TestStage(TestPaths.Stories260K, "3-4");
        using var unsplit = new TestServer(parallel: 2, contextLength: 256);
        await using var split = await PipelineTestServer.StartAsync([stage.Address]);
        string[] prompts = ["Once upon a time", "The little dog"];
        var expected = await Task.WhenAll(prompts.Select(p => CompleteAsync(unsplit.Http, p)));
        var actual = await Task.WhenAll(prompts.Select(p => CompleteAsync(split.Http, p)));
        Assert.Equal(expected, actual);
        Assert.All(actual, text => Assert.True(text.Length > 20, text));
    }

    private static async Task<string> CompleteAsync(HttpClient http, string prompt)
    {
        var body = JsonSerializer.Serialize(new { model = TestServer.ModelId, prompt, max_tokens = 40, temperature = 0 });
        using var response = await http.PostAsync("/v1/completions", TestServer.JsonContent(body));
        string text = await response.Content.ReadAsStringAsync();
        Assert.True(response.IsSuccessStatusCode, text);
        return JsonDocument.Parse(text).RootElement.GetProperty("choices")[0].GetProperty("text").GetString()!;
    }

    [Fact]
    public async Task A_stage_that_dies_fails_its_requests_with_a_clear_error_and_a_new_stage_takes_over()
    {
        var stage = new TestStage(TestPaths.Stories260K, "2-4");
        int port = int.Parse(stage.Address.Split(':')[1]);
        // A long context, so the stream below is still generating when the stage stops.
        await using var split = await PipelineTestServer.StartAsync([stage.Address], contextLength: 16384);
        Assert.NotEmpty(await CompleteAsync(split.Http, "Once upon a time"));

        // A stream under way when the stage stops ends with an error event; the next request fails at once.
        var body = JsonSerializer.Serialize(new { model = TestServer.ModelId, prompt = "Once", max_tokens = 16000, ignore_eos = true, stream = true });
        using var response = await split.Http.SendAsync(new HttpRequestMessage(HttpMethod.Post, "/v1/completions") { Content = TestServer.JsonContent(body) },
            HttpCompletionOption.ResponseHeadersRead);
        using var reader = new StreamReader(await response.Content.ReadAsStreamAsync());
        Assert.StartsWith("data: ", await reader.ReadLineAsync());
        await stage.DisposeAsync();
        string rest = await reader.ReadToEndAsync().WaitAsync(TimeSpan.FromSeconds(60));
        Assert.Contains("\"error\"", rest);
        Assert.Contains($"pipeline stage {stage.Address}", rest);

        var (status, error) = await PostAsync(split.Http, JsonSerializer.Serialize(new { model = TestServer.ModelId, prompt = "Once", max_tokens = 8 }));
        Assert.Equal(500, status);
        Assert.Contains($"pipeline stage {stage.Address} is unreachable", error.GetProperty("error").GetProperty("message").GetString());
        using (var health = await split.Http.GetAsync("/health"))
        {
            Assert.Equal(HttpStatusCode.ServiceUnavailable, health.StatusCode);
            Assert.Contains($"pipeline stage {stage.Address} is unreachable", await health.Content.ReadAsStringAsync());
        }

        // A stage started again on the same port gets a new session, in step with the server's reset memory, once the
        // channel reconnects (it retries at most a second apart).
        await using var again = new TestStage(TestPaths.Stories260K, "2-4", port: port);
        var request = JsonSerializer.Serialize(new { model = TestServer.ModelId, prompt = "Once upon a time", max_tokens = 8 });
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(20);
        while ((await PostAsync(split.Http, request)).Status != 200)
        {
            Assert.True(DateTime.UtcNow < deadline, "the server did not recover once the stage was back");
            await Task.Delay(200);
        }
        using var healthy = await split.Http.GetAsync("/health");
        Assert.Equal(HttpStatusCode.OK, healthy.StatusCode);
    }

    private static async Task<(int Status, JsonElement Body)> PostAsync(HttpClient http, string json)
    {
        using var response = await http.PostAsync("/v1/completions", TestServer.JsonContent(json)).WaitAsync(TimeSpan.FromSeconds(60));
        return ((int)response.StatusCode, JsonDocument.Parse(await response.Content.ReadAsStringAsync()).RootElement.Clone());
    }

    [Fact]
    public void An_unreachable_stage_is_refused_at_startup()
    {
        int port = FreePort();
        var e = Assert.Throws<PipelineStageException>(() => PipelineModel.Connect(TestPaths.Stories260K, [$"127.0.0.1:{port}"], Fast));
        Assert.Contains($"pipeline stage 127.0.0.1:{port} is unreachable", e.Message);
    }

    [Fact]
    public void A_stage_that_never_answers_is_refused_within_the_timeout()
    {
        using var silent = new TcpListener(IPAddress.Loopback, 0);
        silent.Start();
        string address = $"127.0.0.1:{((IPEndPoint)silent.LocalEndpoint).Port}";
        var clock = System.Diagnostics.Stopwatch.StartNew();
        var e = Assert.Throws<PipelineStageException>(() =>
            PipelineModel.Connect(TestPaths.Stories260K, [address], new PipelineOptions { ConnectTimeout = TimeSpan.FromSeconds(1) }));
        Assert.Contains($"pipeline stage {address} did not answer within 1 s", e.Message);
        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(30), clock.Elapsed.ToString());
    }

    [Fact]
    public async Task A_stage_serving_another_model_is_refused()
    {
        await using var stage = new TestStage(synth.Path, "1-3");
        var e = Assert.Throws<PipelineStageException>(() => PipelineModel.Connect(TestPaths.Stories260K, [stage.Address], Fast));
        Assert.Contains($"pipeline stage {stage.Address} serves another model file", e.Message);
        Assert.Contains("'pipeline-synth' (4 blocks", e.Message);
    }

    [Theory]
    [InlineData("stages end at block 3", "2-3")]
    [InlineData("where block 3 comes next", "2-2", "4-4")]
    [InlineData("where block 4 comes next", "1-3", "3-4")]
    [InlineData("block 0 runs in this server", "0-4")]
    public async Task Stages_that_do_not_cover_the_model_exactly_are_refused(string expected, params string[] ranges)
    {
        var stages = ranges.Select(r => new TestStage(TestPaths.Stories260K, r)).ToList();
        try
        {
            var e = Assert.Throws<PipelineStageException>(() => PipelineModel.Connect(TestPaths.Stories260K, [.. stages.Select(s => s.Address)], Fast));
            Assert.Contains(expected, e.Message);
        }
        finally
        {
            foreach (var stage in stages) await stage.DisposeAsync();
        }
    }

    [Fact]
    public async Task A_stage_refuses_batches_that_do_not_fit_its_session_or_memory()
    {
        await using var stage = new TestStage(TestPaths.Stories260K, "2-4");
        using var channel = Grpc.Net.Client.GrpcChannel.ForAddress($"http://{stage.Address}");
        var client = new Velo.Pipeline.Protocol.PipelineStage.PipelineStageClient(channel);
        var session = client.Open(new Velo.Pipeline.Protocol.OpenRequest
        {
            ContextLength = 32, Sequences = 2, MaxBatch = 4, MaxLogitRows = 2, KeyCacheType = "f32", ValueCacheType = "f32",
        }).Session;
        Velo.Pipeline.Protocol.ForwardRequest Batch(ulong id, int lengthOfSequence0, int tokens, int hiddenRows)
        {
            var request = new Velo.Pipeline.Protocol.ForwardRequest { Session = id, SequenceLengths = { lengthOfSequence0, 0 } };
            for (int i = 0; i < tokens; i++)
            {
                request.Tokens.Add(1);
                request.Positions.Add(lengthOfSequence0 + i);
                request.Sequences.Add(0);
                request.WantLogits.Add(i == tokens - 1);
            }
            request.Hidden = Google.Protobuf.ByteString.CopyFrom(new byte[hiddenRows * 64 * sizeof(float)]);
            return request;
        }
        Grpc.Core.RpcException Refused(Velo.Pipeline.Protocol.ForwardRequest request) =>
            Assert.Throws<Grpc.Core.RpcException>(() => client.Forward(request));

        Assert.Equal(512 * sizeof(float), client.Forward(Batch(session, 0, 2, 2)).Logits.Length);
        Assert.Contains("the session is not open here", Refused(Batch(session + 1, 2, 1, 1)).Status.Detail);
        Assert.Contains("sequence 0 holds 2 positions here but 5 in the server's memory", Refused(Batch(session, 5, 1, 1)).Status.Detail);
        Assert.Contains("not 1 rows of 64 floats", Refused(Batch(session, 2, 1, 3)).Status.Detail);
        Assert.Contains("1 to 4 tokens", Refused(Batch(session, 2, 5, 5)).Status.Detail);
        // A shorter length is a rollback: the stage drops its tail and runs the batch from there.
        Assert.Equal(512 * sizeof(float), client.Forward(Batch(session, 1, 1, 1)).Logits.Length);
        var open = Assert.Throws<Grpc.Core.RpcException>(() => client.Open(new Velo.Pipeline.Protocol.OpenRequest
        {
            ContextLength = 32, Sequences = 1, MaxBatch = StageHost.MaxBatchLimit + 1, MaxLogitRows = 1, KeyCacheType = "f32", ValueCacheType = "f32",
        }));
        Assert.Contains("is not possible", open.Status.Detail);
    }

    private static int FreePort()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        return ((IPEndPoint)listener.LocalEndpoint).Port;
    }
}

/// <summary><c>velo serve --pipeline</c> on a free loopback port: stories260K's first blocks here, the rest at the stages.</summary>
internal sealed class PipelineTestServer : IAsyncDisposable
{
    private PipelineTestServer(PipelineServer server, WebApplication app)
    {
        Server = server;
        App = app;
        Http = new HttpClient { BaseAddress = VeloServer.Address(app), Timeout = TimeSpan.FromMinutes(2) };
    }

    public PipelineServer Server { get; }
    public WebApplication App { get; }
    public HttpClient Http { get; }

    public static async Task<PipelineTestServer> StartAsync(string[] stages, int contextLength = 256)
    {
        var options = new VeloServerOptions
        {
            ModelPath = TestPaths.Stories260K, ModelId = TestServer.ModelId, Parallel = 2, ContextLength = contextLength, Threads = 2,
        };
        var server = PipelineServer.Load(options, stages, new PipelineOptions { ConnectTimeout = TimeSpan.FromSeconds(5), CallTimeout = TimeSpan.FromSeconds(20) });
        var app = VeloServer.Build(server.Engine, "127.0.0.1", 0);
        await app.StartAsync();
        return new PipelineTestServer(server, app);
    }

    public async ValueTask DisposeAsync()
    {
        Http.Dispose();
        await App.StopAsync();
        await App.DisposeAsync();
        Server.Dispose();
    }
}
