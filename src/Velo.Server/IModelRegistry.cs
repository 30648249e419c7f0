using Velo.Generation;
using Velo.Inference;

namespace Velo.Server;

/// <summary>What a model serves: a decoder completions and chat, an encoder embeddings, reranking and classification.</summary>
public enum ModelKind
{
    Decoder,
    Encoder,
}

/// <summary>
/// The models one server serves, by name. A route resolves the request's <c>model</c> to a <see cref="ModelLease"/>: the
/// model stays loaded while any lease on it is held, and may be unloaded once it has been idle for its keep-alive or
/// when another model needs its memory.
/// </summary>
/// <remarks>
/// An entry need not be a file: a <see cref="ModelSource"/> may build its model over other entries (leasing them from
/// the registry it is given), as a cascade that answers with a small model and escalates to a large one does.
/// </remarks>
public interface IModelRegistry
{
    /// <summary>The model a request that names none goes to (<c>velo serve -m</c>).</summary>
    string DefaultModel { get; }

    /// <summary>Every configured model, loaded or not, the default first.</summary>
    IReadOnlyList<ModelStatus> Models { get; }

    /// <summary>
    /// Leases the model named <paramref name="name"/> (null: the default), loading it first if it is not loaded;
    /// concurrent first requests load it once. Throws <see cref="ApiException"/>: 404 for a name not configured, 400
    /// for a model that is not of <paramref name="kind"/>, 503 or 507 when the memory cap leaves no room for it.
    /// </summary>
    /// <param name="kind">What the route needs; null for routes any model answers.</param>
    /// <param name="keepAlive">How long the model stays loaded once idle after this request (Ollama's keep_alive); null
    /// for the server's default, <see cref="Timeout.InfiniteTimeSpan"/> for ever, zero to unload it as soon as it is idle.</param>
    Task<ModelLease> AcquireAsync(string? name, ModelKind? kind = null, TimeSpan? keepAlive = null, CancellationToken cancellation = default);
}

/// <summary>A configured model as the listings show it (<c>/v1/models</c>, <c>/api/tags</c>, <c>/api/ps</c>).</summary>
/// <param name="Kind">What it serves; null while unknown (a source that only loading tells).</param>
/// <param name="Loaded">The loaded model; null when not loaded.</param>
/// <param name="ExpiresAt">When it unloads if it stays idle; <see cref="DateTimeOffset.MaxValue"/> for never; null when not loaded.</param>
/// <param name="ReservedBytes">Its memory plan, counted against the memory cap while loaded.</param>
public sealed record ModelStatus(string Name, string? Path, ModelKind? Kind, ServedModel? Loaded, DateTimeOffset? ExpiresAt, long ReservedBytes,
    int ActiveRequests);

/// <summary>A loaded model as the routes use it: a decoder's generation service, an encoder's embeddings, or both.</summary>
public sealed class ServedModel : IDisposable
{
    private readonly IDisposable?[] _owned;
    private int _disposed;

    /// <param name="owned">What unloading it disposes, in order (the scheduler before the model it runs); nulls are skipped.</param>
    public ServedModel(string id, IGenerationService? generator, VeloEmbeddingGenerator? embeddings, params IDisposable?[] owned)
    {
        if (generator == null && embeddings == null) throw new ArgumentException("a served model needs a generator, embeddings or both");
        Id = id;
        Generator = generator;
        Embeddings = embeddings;
        _owned = owned;
    }

    public string Id { get; }
    public IGenerationService? Generator { get; }
    public VeloEmbeddingGenerator? Embeddings { get; }

    public bool Serves(ModelKind kind) => kind == ModelKind.Decoder ? Generator != null : Embeddings != null;

    /// <summary>The kind it serves; a decoder when it serves both.</summary>
    public ModelKind Kind => Generator != null ? ModelKind.Decoder : ModelKind.Encoder;

    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
        foreach (var owned in _owned) owned?.Dispose();
    }
}

/// <summary>A hold on a loaded model: it is not unloaded before every lease on it is disposed.</summary>
public sealed class ModelLease : IDisposable
{
    private Action? _release;

    internal ModelLease(ServedModel model, Action release)
    {
        Model = model;
        _release = release;
    }

    public ServedModel Model { get; }

    /// <summary>The decoder's generation service (the registry checked the kind the route asked for).</summary>
    public IGenerationService Generator => Model.Generator ?? throw new InvalidOperationException($"'{Model.Id}' is not a decoder");

    /// <summary>The encoder's embeddings (the registry checked the kind the route asked for).</summary>
    public VeloEmbeddingGenerator Embeddings => Model.Embeddings ?? throw new InvalidOperationException($"'{Model.Id}' is not an encoder");

    public void Dispose() => Interlocked.Exchange(ref _release, null)?.Invoke();
}

/// <summary>
/// One named entry of a registry: how to load its model. <see cref="FileModelSource"/> loads a GGUF file; a source built
/// over other entries leases them from <see cref="ModelLoadContext.Registry"/> and disposes those leases when its
/// <see cref="ServedModel"/> is disposed (pass them as its owned objects).
/// </summary>
public abstract class ModelSource(string name)
{
    public string Name { get; } = !string.IsNullOrWhiteSpace(name) ? name : throw new ArgumentException("a model needs a name", nameof(name));

    /// <summary>The model's file, when it has one: <c>/v1/models</c> reports its size and SHA-256.</summary>
    public virtual string? Path => null;

    /// <summary>What it serves, where known without loading it; null when only loading tells.</summary>
    public virtual ModelKind? Kind => null;

    /// <summary>False for a model the registry must never unload, such as one built in code that its caller owns.</summary>
    public virtual bool CanUnload => true;

    /// <summary>Loads the model. Call <see cref="ModelLoadContext.Reserve"/> with its memory plan before allocating.</summary>
    public abstract Task<ServedModel> LoadAsync(ModelLoadContext context, CancellationToken cancellation);
}

/// <summary>What a <see cref="ModelSource"/> loads with: the registry (for entries built over others) and the memory cap.</summary>
public sealed class ModelLoadContext
{
    private readonly Action<long> _reserve;

    internal ModelLoadContext(IModelRegistry registry, Action<long> reserve)
    {
        Registry = registry;
        _reserve = reserve;
    }

    public IModelRegistry Registry { get; }

    /// <summary>
    /// Counts <paramref name="bytes"/> against the memory cap for this model while it stays loaded, first unloading idle
    /// models (least recently used first) to make room; throws <see cref="ApiException"/> (507: more than the whole
    /// cap; 503: the room is held by models serving requests) when there is none.
    /// </summary>
    public void Reserve(long bytes) => _reserve(bytes);
}

/// <summary>A model built in code and owned by its caller: always loaded, never unloaded.</summary>
public sealed class LoadedModelSource(ServedModel model, string? path = null) : ModelSource(model.Id)
{
    /// <summary>The model, loaded from the start.</summary>
    public ServedModel Model => model;

    public override string? Path => path;
    public override ModelKind? Kind => model.Generator != null && model.Embeddings != null ? null : model.Kind;
    public override bool CanUnload => false;
    public override Task<ServedModel> LoadAsync(ModelLoadContext context, CancellationToken cancellation) => Task.FromResult(model);
}
