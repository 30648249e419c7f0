using System.Runtime.InteropServices;
using Google.Protobuf;
using Grpc.Core;
using Grpc.Net.Client;
using Velo.Formats;
using Velo.Models;
using Velo.Models.HuggingFace;
using Velo.Pipeline.Protocol;
using Velo.Runtime;
using Velo.Threading;

namespace Velo.Pipeline;

/// <summary>How a server reaches its pipeline stages.</summary>
public sealed record PipelineOptions
{
    /// <summary>How long connecting to a stage and its first answers may take: generous, since a stage compiles its
    /// gRPC stack on the first call (the CLI runs without tiered compilation), seconds on a busy machine.</summary>
    public TimeSpan ConnectTimeout { get; init; } = TimeSpan.FromSeconds(30);

    /// <summary>How long one batch may take at one stage before the pass fails (a stage that hangs or stopped).</summary>
    public TimeSpan CallTimeout { get; init; } = TimeSpan.FromSeconds(60);
}

/// <summary>A stage failed, could not be reached, or does not fit the pipeline; the message names it and says why.</summary>
public sealed class PipelineStageException(string message, Exception? inner = null) : IOException(message, inner);

/// <summary>
/// A decoder split across processes, as the server sees it: it runs the first blocks itself (a local
/// <see cref="ILayerRangeModel"/>) and sends each batch, whole, with its hidden states through the stages in turn
/// (<c>velo stage</c>, over gRPC); the last stage answers with the logits of the rows that want them. The KV memory
/// of the local blocks is <see cref="IModelState.Cache"/>, the one the batch planner works on: each batch carries
/// every sequence's length in it, so the tails the planner removes (rolled-back drafts, reused and reset sequences)
/// leave the stages' memory too.
/// </summary>
public sealed class PipelineModel : IModel
{
    private readonly ILayerRangeModel _local;
    private readonly Stage[] _stages;
    private readonly PipelineOptions _options;

    private PipelineModel(ILayerRangeModel local, Stage[] stages, PipelineOptions options)
    {
        _local = local;
        _stages = stages;
        _options = options;
    }

    /// <summary>
    /// Connects to the stages at <paramref name="addresses"/> (<c>host:port</c>, or an http:// URL) and loads the
    /// blocks before the first stage's from <paramref name="modelPath"/>. Refused, with a message naming the stage: one
    /// that does not answer, one serving another model file, and ranges that do not continue each other from this
    /// server's blocks to the model's last block.
    /// </summary>
    public static PipelineModel Connect(string modelPath, IReadOnlyList<string> addresses, PipelineOptions? options = null)
    {
        options ??= new PipelineOptions();
        if (addresses.Count == 0) throw new ArgumentException("a pipeline needs at least one stage (--pipeline host:port[,host:port...])");
        var stages = new List<Stage>();
        try
        {
            foreach (string address in addresses) stages.Add(Stage.Connect(address, options));
            LayerRange local;
            using (var file = GgufFile.Open(HuggingFaceModelCache.Resolve(modelPath)))
            {
                var info = ModelRegistry.ReadInfo(file);
                byte[] identity = ModelIdentity.Of(file);
                foreach (var stage in stages) CheckSameModel(stage, modelPath, file, info, identity);
                local = LocalRange(stages, info.Layers.Count);
            }
            return new PipelineModel(ModelRegistry.LoadLayers(modelPath, local), [.. stages], options);
        }
        catch
        {
            foreach (var stage in stages) stage.Dispose();
            throw;
        }
    }

    private static void CheckSameModel(Stage stage, string path, GgufFile file, ModelInfo info, byte[] identity)
    {
        var d = stage.Description;
        if (d.ModelIdentity.Span.SequenceEqual(identity)) return;
        string name = file.Metadata.GetString("general.name") ?? Path.GetFileNameWithoutExtension(path);
        throw new PipelineStageException($"pipeline stage {stage.Address} serves another model file: {d.Architecture} '{d.ModelName}' " +
            $"({d.TotalLayers} blocks, width {d.EmbeddingLength}, vocabulary {d.VocabSize}), this server {info.Architecture} '{name}' " +
            $"({info.Layers.Count} blocks, width {info.EmbeddingLength}, vocabulary {info.VocabSize}) from {path}. Every stage must run the same file.");
    }

    /// <summary>The blocks before the first stage's, once the stages' blocks are known to continue each other to the last.</summary>
    private static LayerRange LocalRange(IReadOnlyList<Stage> stages, int total)
    {
        string Plan() => $"blocks 0-{stages[0].Description.FirstLayer - 1} here, then " +
            string.Join(", ", stages.Select(s => $"{s.Description.FirstLayer}-{s.Description.LastLayer} at {s.Address}"));
        int next = stages[0].Description.FirstLayer;
        if (next < 1)
            throw new PipelineStageException($"pipeline stage {stages[0].Address} runs blocks {next}-{stages[0].Description.LastLayer}, but block 0 " +
                "runs in this server: the first stage must start at block 1 or later");
        foreach (var stage in stages)
        {
            var d = stage.Description;
            if (d.TotalLayers != total || d.FirstLayer != next || d.LastLayer < d.FirstLayer || d.LastLayer >= total)
                throw new PipelineStageException($"pipeline stage {stage.Address} runs blocks {d.FirstLayer}-{d.LastLayer} where block {next} comes next: " +
                    $"the stages must cover the model's blocks 0-{total - 1} exactly, in order ({Plan()})");
            next = d.LastLayer + 1;
        }
        if (next != total)
            throw new PipelineStageException($"the pipeline's stages end at block {next - 1}, but the model has blocks 0-{total - 1}: " +
                $"the last stage must run the last block ({Plan()})");
        return new LayerRange(0, stages[0].Description.FirstLayer, total);
    }

    /// <summary>The blocks this server runs itself.</summary>
    public LayerRange LocalLayers => _local.Layers;

    /// <summary>Each stage's address and blocks, in order.</summary>
    public IReadOnlyList<(string Address, LayerRange Layers)> Stages =>
        [.. _stages.Select(s => (s.Address, new LayerRange(s.Description.FirstLayer, s.Description.LastLayer + 1, s.Description.TotalLayers)))];

    /// <summary>The local blocks' hyperparameters: <see cref="ModelInfo.Layers"/> lists only their KV memory.</summary>
    public ModelInfo Info => _local.Info;

    public GgufFile File => _local.File;

    public long WeightBytes => _local.WeightBytes;

    public IModelState CreateState(int contextLength = 0, int maxBatch = 512, int sequences = 1, int maxLogitRows = 0, WorkerPool? pool = null,
        KvCacheTypes cacheTypes = default)
    {
        contextLength = contextLength > 0 ? contextLength : Info.ContextLength;
        maxLogitRows = maxLogitRows > 0 ? maxLogitRows : sequences;
        var local = _local.CreateState(contextLength, maxBatch, sequences, maxLogitRows, pool, cacheTypes);
        var state = new PipelineState(this, local, _stages.Length, maxLogitRows * Info.VocabSize);
        try
        {
            state.SessionRequest = new OpenRequest
            {
                ContextLength = contextLength,
                Sequences = sequences,
                MaxBatch = maxBatch,
                MaxLogitRows = maxLogitRows,
                KeyCacheType = cacheTypes.Keys.ToString().ToLowerInvariant(),
                ValueCacheType = cacheTypes.Values.ToString().ToLowerInvariant(),
            };
            for (int i = 0; i < _stages.Length; i++) OpenSession(state, i);
            return state;
        }
        catch
        {
            state.Dispose();
            throw;
        }
    }

    private void OpenSession(PipelineState state, int stage) =>
        state.Sessions[stage] = _stages[stage].Call("open a session", _options.ConnectTimeout,
            (client, deadline) => client.Open(state.SessionRequest, deadline: deadline)).Session;

    public long ScratchBytes(int maxBatch, int maxLogitRows) =>
        checked(_local.ScratchBytes(maxBatch, maxLogitRows) + (long)maxLogitRows * Info.VocabSize * sizeof(float));

    public void Forward(IModelState state, ForwardBatch batch)
    {
        var s = state as PipelineState is { } own && ReferenceEquals(own.Owner, this)
            ? own : throw new ArgumentException("the state was not created by this pipeline", nameof(state));
        int n = batch.Count, dim = Info.EmbeddingLength, vocab = Info.VocabSize;
        // A stage that failed lost its session or its memory's step with ours; the scheduler resets every sequence
        // after a failed pass, so a fresh session is in step again.
        for (int i = 0; i < _stages.Length; i++)
            if (s.Sessions[i] == 0) OpenSession(s, i);

        var request = s.Request;
        request.SequenceLengths.Clear();
        for (int q = 0; q < s.Cache.Sequences; q++) request.SequenceLengths.Add(s.Cache.Length(q));
        request.Tokens.Clear();
        request.Positions.Clear();
        request.Sequences.Clear();
        request.WantLogits.Clear();
        for (int i = 0; i < n; i++)
        {
            request.Tokens.Add(batch.Tokens[i]);
            request.Positions.Add(batch.Positions[i]);
            request.Sequences.Add(batch.Sequences[i]);
            request.WantLogits.Add(batch.WantLogits[i]);
        }

        _local.Forward(s.Local, batch);
        var hidden = ByteString.CopyFrom(MemoryMarshal.AsBytes<float>(_local.Hidden(s.Local, n)));
        for (int i = 0; i < _stages.Length; i++)
        {
            request.Session = s.Sessions[i];
            request.Hidden = hidden;
            ForwardReply reply;
            try
            {
                reply = _stages[i].Call("run a batch", _options.CallTimeout, (client, deadline) => client.Forward(request, deadline: deadline));
            }
            catch
            {
                s.Sessions[i] = 0;
                throw;
            }
            if (i < _stages.Length - 1)
            {
                hidden = reply.Hidden.Length == (long)n * dim * sizeof(float)
                    ? reply.Hidden
                    : throw new PipelineStageException($"pipeline stage {_stages[i].Address} answered {reply.Hidden.Length} bytes of hidden states, not {n} rows of {dim} floats");
            }
            else
            {
                var logits = MemoryMarshal.Cast<byte, float>(reply.Logits.Span);
                if (logits.Length != batch.LogitCount * vocab || reply.Logits.Length % sizeof(float) != 0)
                    throw new PipelineStageException($"pipeline stage {_stages[i].Address} answered {reply.Logits.Length} bytes of logits, not {batch.LogitCount} rows of {vocab} floats");
                logits.CopyTo(s.Logits);
            }
        }
    }

    /// <summary>How long a health check waits for each stage.</summary>
    public static readonly TimeSpan HealthTimeout = TimeSpan.FromSeconds(2);

    /// <summary>Asks every stage to describe itself: null when all answer, else which one does not and why (for /health).</summary>
    public async Task<string?> CheckStagesAsync(CancellationToken cancellation)
    {
        foreach (var stage in _stages)
            if (await stage.ProblemAsync(HealthTimeout, cancellation) is { } problem)
                return problem;
        return null;
    }

    public void Dispose()
    {
        foreach (var stage in _stages) stage.Dispose();
        _local.Dispose();
    }

    /// <summary>One stage: its channel and what it said it serves.</summary>
    private sealed class Stage : IDisposable
    {
        private readonly GrpcChannel _channel;
        private readonly PipelineStage.PipelineStageClient _client;

        private Stage(string address, GrpcChannel channel)
        {
            Address = address;
            _channel = channel;
            _client = new PipelineStage.PipelineStageClient(channel);
        }

        public string Address { get; }
        public StageDescription Description { get; private set; } = new();

        public static Stage Connect(string address, PipelineOptions options)
        {
            var uri = Parse(address);
            var channel = GrpcChannel.ForAddress(uri, new GrpcChannelOptions
            {
                // Hidden states of a whole batch, or its logits: as large as the stage's own limit allows.
                MaxReceiveMessageSize = null,
                MaxSendMessageSize = null,
                HttpHandler = new SocketsHttpHandler { ConnectTimeout = options.ConnectTimeout },
                // A stage that stopped is retried at most a second apart, so one started again serves the next requests.
                InitialReconnectBackoff = TimeSpan.FromMilliseconds(100),
                MaxReconnectBackoff = TimeSpan.FromSeconds(1),
            });
            var stage = new Stage(address, channel);
            try
            {
                stage.Description = stage.Call("describe itself", options.ConnectTimeout, (client, deadline) => client.Describe(new DescribeRequest(), deadline: deadline));
                return stage;
            }
            catch
            {
                stage.Dispose();
                throw;
            }
        }

        private static Uri Parse(string address)
        {
            string text = address.Contains("://", StringComparison.Ordinal) ? address : "http://" + address;
            return Uri.TryCreate(text, UriKind.Absolute, out var uri) && uri.Scheme is "http" or "https" && !uri.IsDefaultPort && uri.AbsolutePath == "/"
                ? uri
                : throw new ArgumentException($"--pipeline takes stages as host:port (such as 10.0.0.6:9000), got '{address}'");
        }

        /// <summary>Calls the stage within <paramref name="timeout"/>; a failure becomes a <see cref="PipelineStageException"/> saying what went wrong.</summary>
        public T Call<T>(string what, TimeSpan timeout, Func<PipelineStage.PipelineStageClient, DateTime, T> call)
        {
            try
            {
                return call(_client, DateTime.UtcNow + timeout);
            }
            catch (RpcException e)
            {
                throw new PipelineStageException($"{Failure(e, timeout)} (asked to {what})", e);
            }
        }

        /// <summary>Null when the stage describes itself within <paramref name="timeout"/>, else why it did not.</summary>
        public async Task<string?> ProblemAsync(TimeSpan timeout, CancellationToken cancellation)
        {
            try
            {
                await _client.DescribeAsync(new DescribeRequest(), deadline: DateTime.UtcNow + timeout, cancellationToken: cancellation);
                return null;
            }
            catch (RpcException e) when (!cancellation.IsCancellationRequested)
            {
                return Failure(e, timeout);
            }
        }

        private string Failure(RpcException e, TimeSpan timeout) => $"pipeline stage {Address} " + e.StatusCode switch
        {
            // The detail of a refused connection is gRPC's "Error connecting to subchannel"; its cause says more.
            StatusCode.Unavailable => $"is unreachable ({e.Status.DebugException?.InnerException?.Message ?? e.Status.DebugException?.Message ?? e.Status.Detail})",
            StatusCode.DeadlineExceeded => $"did not answer within {timeout.TotalSeconds:0.#} s",
            _ => $"failed: {e.Status.Detail}",
        };

        public void Dispose() => _channel.Dispose();
    }

    /// <summary>The local blocks' state, each stage's session and the logits the last stage answered.</summary>
    private sealed class PipelineState(PipelineModel owner, IModelState local, int stages, int logitFloats) : IModelState
    {
        public PipelineModel Owner { get; } = owner;
        public IModelState Local { get; } = local;
        public ulong[] Sessions { get; } = new ulong[stages];
        public OpenRequest SessionRequest { get; set; } = new();
        public ForwardRequest Request { get; } = new();
        public float[] Logits { get; } = new float[logitFloats];

        public int MaxBatch => Local.MaxBatch;
        public int MaxLogitRows => Local.MaxLogitRows;
        public KvCache Cache => Local.Cache;
        public long ScratchBytes => Local.ScratchBytes + (long)Logits.Length * sizeof(float);

        public ReadOnlySpan<float> Output(int row)
        {
            if ((uint)row >= (uint)MaxLogitRows) throw new ArgumentOutOfRangeException(nameof(row));
            int vocab = Owner.Info.VocabSize;
            return Logits.AsSpan(row * vocab, vocab);
        }

        public void Dispose() => Local.Dispose();
    }
}
