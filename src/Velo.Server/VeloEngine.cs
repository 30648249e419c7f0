using Microsoft.Extensions.Hosting;
using Velo.Generation;
using Velo.Inference;
using Velo.Models;
using Velo.Models.HuggingFace;
using Velo.Text;
using Velo.Threading;

namespace Velo.Server;

/// <summary>
/// What the endpoints serve: one model behind one <see cref="IGenerationService"/>. Built from options it loads the
/// model into a <see cref="BatchScheduler"/> in the background (the server answers /health with 503 meanwhile); built
/// from a generator it is ready at once.
/// </summary>
public sealed class VeloEngine : IDisposable
{
    private readonly VeloServerOptions? _options;
    private volatile IGenerationService? _generator;
    private BatchScheduler? _ownScheduler;
    private WorkerPool? _pool;
    private LanguageModel? _model;
    private LanguageModel? _draft;
    private IModel? _encoder;
    private TextEmbedder? _embedder;
    private volatile VeloEmbeddingGenerator? _embeddings;

    public VeloEngine(VeloServerOptions options)
    {
        _options = options;
        // A Hugging Face folder is named whole ("Qwen2.5-0.5B-Instruct"); a file without its extension.
        ModelId = options.ModelId ?? (Directory.Exists(options.ModelPath)
            ? Path.GetFileName(Path.TrimEndingDirectorySeparator(options.ModelPath))
            : Path.GetFileNameWithoutExtension(options.ModelPath));
        ModelPath = options.ModelPath;
        ApiKey = options.ApiKey;
        PublicMetrics = options.PublicMetrics;
        MaxRequestBytes = options.MaxRequestBytes;
    }

    /// <summary>Serves an existing generator (a <see cref="BatchScheduler"/>), which the caller keeps and disposes.</summary>
    public VeloEngine(IGenerationService generator, string? modelId = null, string? apiKey = null)
    {
        ModelId = modelId ?? generator.ModelId;
        ApiKey = apiKey;
        _generator = generator;
    }

    /// <summary>Serves an encoder's embeddings: <c>/v1/embeddings</c>. A server loaded from an encoder's file serves
    /// only these; one built in code may serve them beside a decoder.</summary>
    public VeloEmbeddingGenerator? Embeddings
    {
        get => _embeddings;
        init => _embeddings = value;
    }

    public string ModelId { get; }
    public string? ApiKey { get; }

    /// <summary>The model's file, when the engine knows it: <c>/v1/models</c> reports its size and SHA-256, so a gateway
    /// can tell two different models served under one name apart.</summary>
    public string? ModelPath
    {
        get;
        init
        {
            field = value;
            _fileHash = value == null ? null : new Lazy<string>(() => ModelFileHash(value));
        }
    }

    private Lazy<string>? _fileHash;

    /// <summary>The lowercase hex SHA-256 of the model file, computed once on first use.</summary>
    public string? ModelFileSha256 => _fileHash?.Value;

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

    /// <summary>The largest body the completion routes read.</summary>
    public long CompletionBodyLimit => MaxRequestBytes > 0 ? MaxRequestBytes : DefaultMaxRequestBytes(Generator.ContextLength);

    /// <summary>
    /// Room for a whole context in any encoding: 64 bytes per token covers a token of several characters each escaped
    /// as <c>\uXXXX</c>, plus the JSON around the messages. At least 1 MiB, and at most 64 MiB so that a huge context
    /// cannot let one body (and the JSON document parsed from it) take gigabytes.
    /// </summary>
    public static long DefaultMaxRequestBytes(int contextLength) => Math.Clamp(contextLength * 64L, 1L << 20, 64L << 20);
    public ServerMetrics Metrics { get; } = new();
    public bool IsReady => _generator != null || _embeddings != null;

    /// <summary>
    /// What /health checks beyond the model being loaded: null when all is well, else why not, which /health answers
    /// with a 503 (a pipeline's stage that does not answer, for one).
    /// </summary>
    public Func<CancellationToken, Task<string?>>? HealthCheck { get; init; }

    /// <summary>Why loading failed, if it did; /health reports it.</summary>
    public Exception? LoadFailure { get; private set; }

    public DateTimeOffset Created { get; } = DateTimeOffset.UtcNow;

    private readonly CancellationTokenSource _stopping = new();

    /// <summary>Cancelled when the server stops: the generations still running end, and their responses end properly.</summary>
    public CancellationToken Stopping => _stopping.Token;

    public bool IsStopping => _stopping.IsCancellationRequested;

    /// <summary>Ends every generation still running (the host calls it once its grace period for them has passed).</summary>
    public void Stop() => _stopping.Cancel();

    /// <summary>What requests generate through: the model's tokenizer, chat formatter and limits come from it too.</summary>
    public IGenerationService Generator => _generator ?? throw (_embeddings != null ? NotADecoderError() : NotReadyError());

    /// <summary>The generator once one is loaded; null while loading or when the server holds only an encoder.</summary>
    public IGenerationService? LoadedGenerator => _generator;

    /// <summary>The tokenizer of whichever model the server holds, for /tokenize and /detokenize.</summary>
    public ITokenizer Tokenizer => _generator?.Tokenizer ?? _embeddings?.Tokenizer ?? throw NotReadyError();

    /// <summary>The 400 the generation routes answer when the server holds only an encoder.</summary>
    private ApiException NotADecoderError() => ApiException.BadRequest(
        $"the model '{ModelId}' is an encoder: it serves /v1/embeddings only, not completions", "model", "model_not_supported");

    /// <summary>The 503 every endpoint answers while the model loads or after it failed to.</summary>
    public ApiException NotReadyError() => new(503, LoadFailure != null ? $"the model failed to load: {LoadFailure.Message}" : "the model is still loading", code: "model_loading");

    /// <summary>Loads the model given in the options; no-op when already ready.</summary>
    public void Load()
    {
        if (_generator != null || _options == null) return;
        try
        {
            var model = ModelRegistry.Load(_options.ModelPath);
            if (model.Info.Output == ModelOutput.Embeddings)
            {
                _encoder = model;
                _pool = new WorkerPool(_options.Threads);
                _embedder = new TextEmbedder(model, Text.Tokenizer.FromGguf(model.File.Metadata), _pool);
                _embeddings = new VeloEmbeddingGenerator(_embedder, ModelId);
                return;
            }
            model.Dispose();
            _model = LanguageModel.Load(_options.ModelPath);
            _draft = _options.DraftModelPath is { } draftPath ? LanguageModel.Load(draftPath) : null;
            _pool = new WorkerPool(_options.Threads);
            _ownScheduler = new BatchScheduler(_model, new BatchSchedulerOptions
            {
                Parallel = _options.Parallel,
                ContextLength = _options.ContextLength,
                QueueCapacity = _options.QueueCapacity,
                MaxBatchTokens = _options.BatchSize,
                CacheTypes = _options.CacheTypes,
                Speculation = _options.Speculation,
            }, _pool, draft: _draft);
            _generator = _ownScheduler;
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
        _ownScheduler?.Dispose();
        _embedder?.Dispose();
        _pool?.Dispose();
        _model?.Dispose();
        _draft?.Dispose();
        _encoder?.Dispose();
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
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            // Recorded in engine.LoadFailure: /health and every endpoint report it instead of the host dying.
        }
    }, stoppingToken);
}
