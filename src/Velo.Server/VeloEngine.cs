using Microsoft.Extensions.Hosting;
using Velo.Generation;
using Velo.Inference;
using Velo.Models;
using Velo.Models.HuggingFace;
using Velo.Text;
using Velo.Threading;

namespace Velo.Server;

/// <summary>
/// What the endpoints serve: the models of an <see cref="IModelRegistry"/>, each request's <c>model</c> naming one (none:
/// the default). Built from options it serves the options' model files, loading the default in the background (the server
/// answers /health with 503 meanwhile) and the others on their first request; built from a generator it serves that one
/// model, ready at once.
/// </summary>
public sealed class VeloEngine : IDisposable
{
    private readonly ServedModels? _ownModels;
    private IModelRegistry? _models;
    private readonly IGenerationService? _fixedGenerator;
    private volatile VeloEmbeddingGenerator? _fixedEmbeddings;
    private volatile bool _loaded;
    private int _largestContext;

    public VeloEngine(VeloServerOptions options)
    {
        ModelId = options.ModelId ?? DefaultName(options.ModelPath);
        ModelPath = options.ModelPath;
        ApiKey = options.ApiKey;
        PublicMetrics = options.PublicMetrics;
        MaxRequestBytes = options.MaxRequestBytes;
        _ownModels = new ServedModels(
            [
                new FileModelSource(ModelId, options.ModelPath, options, options.DraftModelPath),
                .. options.Models.Select(model => new FileModelSource(model.Name, model.Path, options)),
                .. options.Routes,
            ],
            new ServedModelsOptions { KeepAlive = options.KeepAlive, MemoryCapBytes = options.MemoryCapBytes });
        _models = _ownModels;
    }

    /// <summary>Serves an existing generator (a <see cref="BatchScheduler"/>), which the caller keeps and disposes.</summary>
    public VeloEngine(IGenerationService generator, string? modelId = null, string? apiKey = null)
    {
        ModelId = modelId ?? generator.ModelId;
        ApiKey = apiKey;
        _fixedGenerator = generator;
        _loaded = true;
    }

    /// <summary>Serves the models of a registry the caller keeps and disposes (such as a <see cref="ServedModels"/>
    /// with entries of its own).</summary>
    public VeloEngine(IModelRegistry models, string? apiKey = null)
    {
        _models = models;
        ModelId = models.DefaultModel;
        ApiKey = apiKey;
        _loaded = true;
    }

    /// <summary>A Hugging Face folder is named whole ("Qwen2.5-0.5B-Instruct"); a file by its name without the extension.</summary>
    public static string DefaultName(string path) => Directory.Exists(path)
        ? Path.GetFileName(Path.TrimEndingDirectorySeparator(path))
        : Path.GetFileNameWithoutExtension(path);

    /// <summary>The models requests name; built on first use for an engine serving one generator.</summary>
    public IModelRegistry Models => _models ?? LazyInitializer.EnsureInitialized(ref _models, FixedModels);

    /// <summary>The generator under its id, and embeddings served beside it under theirs (under the same id, one model serving both).</summary>
    private ServedModels FixedModels()
    {
        var embeddings = _fixedEmbeddings;
        if (embeddings == null || embeddings.ModelId == ModelId)
            return new ServedModels([new LoadedModelSource(new ServedModel(ModelId, _fixedGenerator, embeddings), ModelPath)]);
        return new ServedModels(
        [
            new LoadedModelSource(new ServedModel(ModelId, _fixedGenerator, null), ModelPath),
            new LoadedModelSource(new ServedModel(embeddings.ModelId, null, embeddings)),
        ]);
    }

    /// <summary>Serves an encoder's embeddings: <c>/v1/embeddings</c>. For an engine built from options, the default
    /// model's while it is loaded; one built from a generator may serve them beside it under the same name.</summary>
    public VeloEmbeddingGenerator? Embeddings
    {
        get => _fixedGenerator != null ? _fixedEmbeddings : DefaultStatus()?.Loaded?.Embeddings;
        init => _fixedEmbeddings = value;
    }

    /// <summary>The default model's id (<c>-m</c>, or <c>--alias</c>).</summary>
    public string ModelId { get; }
    public string? ApiKey { get; }

    /// <summary>The default model's file, when the engine knows it: <c>/v1/models</c> reports its size and SHA-256, so a
    /// gateway can tell two different models served under one name apart.</summary>
    public string? ModelPath { get; init; }

    private readonly System.Collections.Concurrent.ConcurrentDictionary<string, Lazy<string>> _fileHashes = new();

    /// <summary>The lowercase hex SHA-256 of the default model's file, computed once on first use.</summary>
    public string? ModelFileSha256 => ModelPath == null ? null : FileSha256(ModelPath);

    /// <summary>The lowercase hex SHA-256 of a model file, computed once per file.</summary>
    public string FileSha256(string path) => _fileHashes.GetOrAdd(path, file => new Lazy<string>(() => ModelFileHash(file))).Value;

    private static string ModelFileHash(string path)
    {
        using var file = File.OpenRead(HuggingFaceModelCache.Resolve(path));
        return Convert.ToHexStringLower(System.Security.Cryptography.SHA256.HashData(file));
    }

    /// <summary>See <see cref="VeloServerOptions.PublicMetrics"/>.</summary>
    public bool PublicMetrics { get; init; }

    /// <summary>See <see cref="VeloServerOptions.MaxRequestBytes"/>; 0 derives the limit from the context length.</summary>
    public long MaxRequestBytes
    {
        get;
        init => field = value is >= 0 and <= MaxBodyBytes
            ? value : throw new ArgumentOutOfRangeException(nameof(MaxRequestBytes), value, $"the body limit must be between 0 and {MaxBodyBytes} bytes");
    }

    /// <summary>The most any body limit may be: a body is buffered in one array.</summary>
    public const long MaxBodyBytes = 1L << 30;

    /// <summary>The largest body the completion routes read: read before the body names its model, so derived from the
    /// largest context of the decoders loaded so far.</summary>
    public long CompletionBodyLimit => MaxRequestBytes > 0 ? MaxRequestBytes
        : DefaultMaxRequestBytes(Math.Max(Volatile.Read(ref _largestContext), LoadedGenerator?.ContextLength ?? 0));

    /// <summary>
    /// Room for a whole context in any encoding: 64 bytes per token covers a token of several characters each escaped
    /// as <c>\uXXXX</c>, plus the JSON around the messages. At least 1 MiB, and at most 64 MiB so that a huge context
    /// cannot let one body (and the JSON document parsed from it) take gigabytes.
    /// </summary>
    public static long DefaultMaxRequestBytes(int contextLength) => Math.Clamp(contextLength * 64L, 1L << 20, 64L << 20);
    public ServerMetrics Metrics { get; } = new();

    /// <summary>
    /// What /health checks beyond the model being loaded: null when all is well, else why not, which /health answers
    /// with a 503 (a pipeline's stage that does not answer, for one).
    /// </summary>
    public Func<CancellationToken, Task<string?>>? HealthCheck { get; init; }

    /// <summary>Whether the default model has loaded (it may since have been unloaded while idle).</summary>
    public bool IsReady => _loaded;

    /// <summary>Why loading the default model at start failed, if it did; /health reports it.</summary>
    public Exception? LoadFailure { get; private set; }

    public DateTimeOffset Created { get; } = DateTimeOffset.UtcNow;

    private readonly CancellationTokenSource _stopping = new();

    /// <summary>Cancelled when the server stops: the generations still running end, and their responses end properly.</summary>
    public CancellationToken Stopping => _stopping.Token;

    public bool IsStopping => _stopping.IsCancellationRequested;

    /// <summary>Ends every generation still running (the host calls it once its grace period for them has passed).</summary>
    public void Stop() => _stopping.Cancel();

    /// <summary>The default model's generator while it is loaded; null otherwise or when it is an encoder.</summary>
    public IGenerationService? LoadedGenerator => _fixedGenerator ?? DefaultStatus()?.Loaded?.Generator;

    /// <summary>The default model's generator (for code that serves one decoder).</summary>
    public IGenerationService Generator => LoadedGenerator ?? throw NotReadyError();

    private ModelStatus? DefaultStatus() => _models switch
    {
        ServedModels served => served.Find(ModelId),
        { } models => models.Models.FirstOrDefault(model => model.Name == models.DefaultModel),
        null => null,
    };

    /// <summary>
    /// Leases the model a request names (null: the default) for the request's duration; see <see cref="IModelRegistry.AcquireAsync"/>.
    /// The default answers 503 until its first load at start has finished.
    /// </summary>
    public async Task<ModelLease> AcquireAsync(string? name, ModelKind? kind, TimeSpan? keepAlive, CancellationToken cancellation)
    {
        if (!IsReady && (name == null || name == ModelId || name == ModelId + ":latest")) throw NotReadyError();
        var lease = await Models.AcquireAsync(name, kind, keepAlive, cancellation);
        if (lease.Model.Generator is { ContextLength: var context })
        {
            int largest;
            while (context > (largest = Volatile.Read(ref _largestContext)) && Interlocked.CompareExchange(ref _largestContext, context, largest) != largest)
            {
            }
        }
        return lease;
    }

    /// <summary>The 503 every endpoint answers while the model loads or after it failed to.</summary>
    public ApiException NotReadyError() => new(503, LoadFailure != null ? $"the model failed to load: {LoadFailure.Message}" : "the model is still loading", code: "model_loading");

    /// <summary>Loads the default model; no-op when already loaded or built from a generator.</summary>
    public void Load()
    {
        if (_loaded || _ownModels == null) return;
        try
        {
            _ownModels.AcquireAsync(null).GetAwaiter().GetResult().Dispose();
            _loaded = true;
        }
        catch (Exception e)
        {
            LoadFailure = e;
            throw;
        }
    }

    public void Dispose()
    {
        _stopping.Cancel();
        if (_ownModels != null) _ownModels.Dispose();
        else if (_fixedGenerator != null && _models is ServedModels wrapper) wrapper.Dispose();
    }
}

/// <summary>Loads the engine's model once the host has started, so the server listens (and answers /health) while it loads.</summary>
internal sealed class VeloEngineLoader(VeloEngine engine) : BackgroundService
{
    protected override Task ExecuteAsync(CancellationToken stoppingToken) => Task.Run(() =>
    {
        try
        {
            engine.Load();
            // Hashed now rather than on the first /v1/models, which a gateway's health check asks with a timeout.
            _ = engine.ModelFileSha256;
            foreach (var model in engine.Models.Models)
                if (model.Path != null && File.Exists(model.Path)) _ = engine.FileSha256(model.Path);
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            // Recorded in engine.LoadFailure: /health and every endpoint report it instead of the host dying.
        }
    }, stoppingToken);
}
