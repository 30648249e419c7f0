using Velo.Generation;
using Velo.Inference;
using Velo.Server;
using Velo.Threading;

namespace Velo.Pipeline;

/// <summary>
/// What <c>velo serve --pipeline</c> serves: the model split between this server's first blocks and the stages
/// (<see cref="PipelineModel"/>), behind the same scheduler and endpoints as an unsplit one. Connecting happens
/// before the server listens, so a stage that does not answer or does not fit stops it at startup.
/// </summary>
public sealed class PipelineServer : IDisposable
{
    private readonly LanguageModel _model;
    private readonly LanguageModel? _draft;
    private readonly WorkerPool _pool;
    private readonly BatchScheduler _scheduler;
    private readonly PipelineModel _pipeline;

    private PipelineServer(LanguageModel model, LanguageModel? draft, PipelineModel pipeline, WorkerPool pool, BatchScheduler scheduler, VeloEngine engine)
    {
        _model = model;
        _draft = draft;
        _pipeline = pipeline;
        _pool = pool;
        _scheduler = scheduler;
        Engine = engine;
    }

    /// <summary>The engine to serve; it does not own the scheduler, which this disposes.</summary>
    public VeloEngine Engine { get; }

    public static PipelineServer Load(VeloServerOptions options, IReadOnlyList<string> stages, PipelineOptions pipelineOptions)
    {
        PipelineModel? pipeline = null;
        var model = LanguageModel.Load(options.ModelPath, path => pipeline = PipelineModel.Connect(path, stages, pipelineOptions));
        var pool = new WorkerPool(options.Threads);
        LanguageModel? draft = null;
        try
        {
            // The draft model, when there is one, runs here whole: it is the small one.
            draft = options.DraftModelPath is { } draftPath ? LanguageModel.Load(draftPath) : null;
            var scheduler = new BatchScheduler(model, options.SchedulerOptions(withDraft: draft != null), pool, draft: draft);
            var engine = new VeloEngine(scheduler, options.ModelId, options.ApiKey)
            {
                ModelPath = options.ModelPath,
                PublicMetrics = options.PublicMetrics,
                MaxRequestBytes = options.MaxRequestBytes,
                HealthCheck = pipeline!.CheckStagesAsync,
            };
            return new PipelineServer(model, draft, pipeline!, pool, scheduler, engine);
        }
        catch
        {
            draft?.Dispose();
            pool.Dispose();
            model.Dispose();
            throw;
        }
    }

    /// <summary>Which blocks run where.</summary>
    public string Describe() => $"blocks {_pipeline.LocalLayers} here, " +
        string.Join(", ", _pipeline.Stages.Select(s => $"{s.Layers}{(s.Layers.IsLast ? " and the output head" : "")} at {s.Address}"));

    public void Dispose()
    {
        Engine.Dispose();
        _scheduler.Dispose();
        _pool.Dispose();
        _draft?.Dispose();
        _model.Dispose();
    }
}
