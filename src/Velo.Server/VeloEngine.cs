using Microsoft.Extensions.Hosting;
using Velo.Inference;
using Velo.Threading;

namespace Velo.Server;

/// <summary>
/// What the endpoints serve: one model behind one <see cref="BatchScheduler"/>. Built from options it loads the
/// model in the background (the server answers /health with 503 meanwhile); built from a scheduler it is ready at once.
/// </summary>
public sealed class VeloEngine : IDisposable
{
    private readonly VeloServerOptions? _options;
    private volatile Ready? _ready;
    private WorkerPool? _pool;
    private LanguageModel? _model;

    public VeloEngine(VeloServerOptions options)
    {
        _options = options;
        ModelId = options.ModelId ?? Path.GetFileNameWithoutExtension(options.ModelPath);
        ApiKey = options.ApiKey;
    }

    /// <summary>Serves an existing scheduler, which the caller keeps and disposes.</summary>
    public VeloEngine(BatchScheduler scheduler, string? modelId = null, string? apiKey = null)
    {
        ModelId = modelId ?? Path.GetFileNameWithoutExtension(scheduler.Model.Path);
        ApiKey = apiKey;
        _ready = new Ready(scheduler, new ChatPromptFormatter(scheduler.Model));
    }

    public string ModelId { get; }
    public string? ApiKey { get; }
    public ServerMetrics Metrics { get; } = new();
    public bool IsReady => _ready != null;

    /// <summary>Why loading failed, if it did; /health reports it.</summary>
    public Exception? LoadFailure { get; private set; }

    public DateTimeOffset Created { get; } = DateTimeOffset.UtcNow;

    public BatchScheduler Scheduler => (_ready ?? throw NotReadyError()).Scheduler;
    public ChatPromptFormatter Chat => (_ready ?? throw NotReadyError()).Chat;

    /// <summary>The 503 every endpoint answers while the model loads or after it failed to.</summary>
    public ApiException NotReadyError() => new(503, LoadFailure != null ? $"the model failed to load: {LoadFailure.Message}" : "the model is still loading", code: "model_loading");

    /// <summary>Loads the model given in the options; no-op when already ready.</summary>
    public void Load()
    {
        if (_ready != null || _options == null) return;
        try
        {
            _model = LanguageModel.Load(_options.ModelPath);
            _pool = new WorkerPool(_options.Threads);
            var scheduler = new BatchScheduler(_model, new BatchSchedulerOptions
            {
                Parallel = _options.Parallel,
                ContextLength = _options.ContextLength,
                QueueCapacity = _options.QueueCapacity,
                CacheTypes = _options.CacheTypes,
            }, _pool);
            _ready = new Ready(scheduler, new ChatPromptFormatter(_model));
        }
        catch (Exception e)
        {
            LoadFailure = e;
            throw;
        }
    }

    public void Dispose()
    {
        if (_options != null) _ready?.Scheduler.Dispose();
        _pool?.Dispose();
        _model?.Dispose();
    }

    private sealed record Ready(BatchScheduler Scheduler, ChatPromptFormatter Chat);
}

/// <summary>Loads the engine's model once the host has started, so the server listens (and answers /health) while it loads.</summary>
internal sealed class VeloEngineLoader(VeloEngine engine) : BackgroundService
{
    protected override Task ExecuteAsync(CancellationToken stoppingToken) => Task.Run(() =>
    {
        try
        {
            engine.Load();
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            // Recorded in engine.LoadFailure: /health and every endpoint report it instead of the host dying.
        }
    }, stoppingToken);
}
