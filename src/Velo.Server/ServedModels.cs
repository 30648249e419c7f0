using System.Globalization;

namespace Velo.Server;

/// <summary>How a <see cref="ServedModels"/> keeps its models.</summary>
public sealed record ServedModelsOptions
{
    /// <summary>How long a model stays loaded once idle (Ollama's keep-alive); <see cref="Timeout.InfiniteTimeSpan"/> for ever.</summary>
    public TimeSpan KeepAlive { get; init; } = TimeSpan.FromMinutes(5);

    /// <summary>The most memory all loaded models may plan to use together; null for no cap.</summary>
    public long? MemoryCapBytes { get; init; }
}

/// <summary>
/// The server's <see cref="IModelRegistry"/>: each entry loads on its first lease (once, however many requests ask at
/// the same time), unloads after its keep-alive once no lease is held, and counts its memory plan against the cap, to
/// make room for which idle models unload, least recently used first. A model with a lease is never unloaded.
/// </summary>
public sealed class ServedModels : IModelRegistry, IDisposable
{
    /// <summary>The longest keep-alive a timer can wait; a longer one means for ever.</summary>
    private static readonly TimeSpan LongestTimer = TimeSpan.FromMilliseconds(uint.MaxValue - 1);

    private readonly Dictionary<string, Entry> _entries = new(StringComparer.Ordinal);
    private readonly List<Entry> _order = [];
    private readonly ServedModelsOptions _options;

    /// <summary>Guards the memory accounting; taken before any entry's gate.</summary>
    private readonly object _memory = new();

    private long _reservedBytes;
    private long _useClock;
    private volatile bool _disposed;

    /// <param name="sources">The models, the default first; names must be distinct.</param>
    public ServedModels(IEnumerable<ModelSource> sources, ServedModelsOptions? options = null)
    {
        _options = options ?? new ServedModelsOptions();
        if (_options.MemoryCapBytes is <= 0) throw new ArgumentOutOfRangeException(nameof(options), _options.MemoryCapBytes, "the memory cap must be positive");
        foreach (var source in sources)
        {
            var entry = new Entry(this, source);
            if (!_entries.TryAdd(source.Name, entry)) throw new ArgumentException($"two models are named '{source.Name}'; give each --model its own NAME=");
            _order.Add(entry);
        }
        if (_order.Count == 0) throw new ArgumentException("a server needs at least one model", nameof(sources));
    }

    public string DefaultModel => _order[0].Source.Name;

    public IReadOnlyList<ModelStatus> Models => [.. _order.Select(entry => entry.Status())];

    /// <summary>The status of one model, or null when no model has that name.</summary>
    public ModelStatus? Find(string name) => Resolve(name)?.Status();

    public async Task<ModelLease> AcquireAsync(string? name, ModelKind? kind = null, TimeSpan? keepAlive = null, CancellationToken cancellation = default)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        var entry = (name == null ? DefaultFor(kind) : Resolve(name)) ?? throw NotFound(name!);
        if (kind is { } needed && entry.Source.Kind is { } known && known != needed) throw WrongKind(entry.Source.Name, known, needed);
        var span = keepAlive ?? _options.KeepAlive;
        if (span < TimeSpan.Zero || span > LongestTimer) span = Timeout.InfiniteTimeSpan;
        if (span == TimeSpan.Zero && !entry.Source.CanUnload)
            throw ApiException.BadRequest($"keep_alive 0 would unload the model '{entry.Source.Name}', which this server keeps loaded while it runs", "keep_alive");

        var lease = entry.TryLease(span);
        if (lease == null)
        {
            await entry.LoadGate.WaitAsync(cancellation);
            try
            {
                lease = entry.TryLease(span) ?? await entry.LoadAsync(span, cancellation);
            }
            finally
            {
                entry.LoadGate.Release();
            }
        }
        if (kind is { } wanted && !lease.Model.Serves(wanted))
        {
            lease.Dispose();
            throw WrongKind(entry.Source.Name, lease.Model.Kind, wanted);
        }
        return lease;
    }

    /// <summary>
    /// The model for a request that names none: the default, unless it is known to be of another kind than the route
    /// needs and another model is of that kind (an embeddings request to a server whose default is a decoder).
    /// </summary>
    private Entry DefaultFor(ModelKind? kind)
    {
        var first = _order[0];
        if (kind == null || first.Source.Kind is not { } known || known == kind) return first;
        return _order.FirstOrDefault(entry => entry.Source.Kind == kind) ?? first;
    }

    /// <summary>A name as clients write it; Ollama's clients add the tag <c>:latest</c> to a bare name.</summary>
    private Entry? Resolve(string name) =>
        _entries.GetValueOrDefault(name) ?? (name.EndsWith(":latest", StringComparison.Ordinal) ? _entries.GetValueOrDefault(name[..^":latest".Length]) : null);

    private ApiException NotFound(string name)
    {
        string shown = name.Length > 100 ? name[..100] + "…" : name;
        return new ApiException(404, $"The model '{shown}' does not exist; this server serves {string.Join(", ", _order.Select(e => $"'{e.Source.Name}'"))}",
            "model", "model_not_found");
    }

    private static ApiException WrongKind(string name, ModelKind actual, ModelKind needed) => ApiException.BadRequest(actual == ModelKind.Encoder
            ? $"the model '{name}' is an encoder: it serves embeddings, reranking and classification, not completions; name a decoder for this route"
            : $"the model '{name}' is a decoder: it has no embeddings; name an encoder (such as a bert GGUF) for this route",
        "model", "model_not_supported");

    /// <summary>Counts an entry's memory against the cap, unloading idle models, least recently used first, to make room.</summary>
    private void Reserve(Entry entry, long bytes)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(bytes);
        lock (_memory)
        {
            if (_options.MemoryCapBytes is long cap)
            {
                if (bytes > cap)
                    throw new ApiException(507, $"the model '{entry.Source.Name}' needs {Describe(bytes)}, more than the whole memory cap of {Describe(cap)} (--memory-cap)",
                        "model", "insufficient_memory");
                while (_reservedBytes + bytes > cap)
                {
                    var victim = _order.Where(other => other != entry && other.IsIdle).MinBy(other => other.LastUsed);
                    if (victim == null)
                    {
                        var busy = _order.Where(other => other.ReservedBytes > 0).Select(other => $"'{other.Source.Name}' {Describe(other.ReservedBytes)}");
                        throw new ApiException(503, $"the model '{entry.Source.Name}' needs {Describe(bytes)} but only {Describe(cap - _reservedBytes)} of the " +
                            $"memory cap of {Describe(cap)} is free, and the models holding the rest are serving requests ({string.Join(", ", busy)}); try again later",
                            "model", "insufficient_memory");
                    }
                    victim.Unload();
                }
            }
            _reservedBytes += bytes;
            entry.ReservedBytes += bytes;
        }
    }

    /// <summary>Gives back what an entry reserved, once it is unloaded or its load failed. Called holding <see cref="_memory"/>.</summary>
    private void Unreserve(Entry entry)
    {
        _reservedBytes -= entry.ReservedBytes;
        entry.ReservedBytes = 0;
    }

    internal static string Describe(long bytes) => bytes switch
    {
        >= 1L << 30 => string.Create(CultureInfo.InvariantCulture, $"{bytes / (double)(1L << 30):F1} GiB"),
        >= 1L << 20 => string.Create(CultureInfo.InvariantCulture, $"{bytes / (double)(1L << 20):F1} MiB"),
        _ => string.Create(CultureInfo.InvariantCulture, $"{bytes / 1024.0:F1} KiB"),
    };

    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        lock (_memory)
        {
            foreach (var entry in _order)
            {
                entry.Unload(force: true);
                entry.StopTimer();
            }
        }
    }

    /// <summary>One configured model and its state. Lock order: <see cref="_memory"/>, then <see cref="_gate"/>.</summary>
    private sealed class Entry
    {
        private readonly ServedModels _owner;
        private readonly object _gate = new();
        private readonly Timer _idle;
        private ServedModel? _model;
        private int _leases;
        private TimeSpan _keepAlive;
        private DateTimeOffset _idleSince;

        /// <summary>One load at a time: concurrent first requests wait for the first one's load.</summary>
        public readonly SemaphoreSlim LoadGate = new(1, 1);

        /// <summary>Memory counted against the cap; written under <see cref="_memory"/>.</summary>
        public long ReservedBytes;

        public Entry(ServedModels owner, ModelSource source)
        {
            _owner = owner;
            Source = source;
            _idle = new Timer(_ => OnIdle());
            // A model built in code is loaded before the registry is: listings show it at once.
            if (source is LoadedModelSource loaded) _model = loaded.Model;
        }

        public ModelSource Source { get; }

        /// <summary>The registry's use clock at this model's last lease: the least recently used idle model unloads first.</summary>
        public long LastUsed { get; private set; }

        /// <summary>Loaded, unloadable and without leases. Read under <see cref="_memory"/>.</summary>
        public bool IsIdle
        {
            get { lock (_gate) return _model != null && _leases == 0 && Source.CanUnload; }
        }

        public ModelStatus Status()
        {
            lock (_gate)
            {
                DateTimeOffset? expires = _model == null ? null
                    : !Source.CanUnload || _keepAlive == Timeout.InfiniteTimeSpan ? DateTimeOffset.MaxValue
                    : (_leases > 0 ? DateTimeOffset.UtcNow : _idleSince) + _keepAlive;
                ModelKind? kind = _model != null && !(_model.Generator != null && _model.Embeddings != null) ? _model.Kind : Source.Kind;
                return new ModelStatus(Source.Name, Source.Path, kind, _model, expires, Interlocked.Read(ref ReservedBytes), _leases);
            }
        }

        public ModelLease? TryLease(TimeSpan keepAlive)
        {
            lock (_gate)
            {
                if (_model == null) return null;
                return LeaseLocked(keepAlive);
            }
        }

        private ModelLease LeaseLocked(TimeSpan keepAlive)
        {
            _leases++;
            _keepAlive = keepAlive;
            LastUsed = Interlocked.Increment(ref _owner._useClock);
            _idle.Change(Timeout.Infinite, Timeout.Infinite);
            return new ModelLease(_model!, Release);
        }

        /// <summary>Loads the model and leases it; the caller holds <see cref="LoadGate"/>.</summary>
        public async Task<ModelLease> LoadAsync(TimeSpan keepAlive, CancellationToken cancellation)
        {
            ServedModel model;
            try
            {
                model = await Source.LoadAsync(new ModelLoadContext(_owner, bytes => _owner.Reserve(this, bytes)), cancellation);
            }
            catch
            {
                lock (_owner._memory) _owner.Unreserve(this);
                throw;
            }
            lock (_gate)
            {
                _model = model;
                // Leased in the same lock that publishes it, so no idle check can unload it in between.
                return LeaseLocked(keepAlive);
            }
        }

        private void Release()
        {
            lock (_gate)
            {
                if (--_leases > 0 || _model == null || !Source.CanUnload) return;
                _idleSince = DateTimeOffset.UtcNow;
                if (_keepAlive != Timeout.InfiniteTimeSpan) _idle.Change(_keepAlive, Timeout.InfiniteTimeSpan);
            }
        }

        private void OnIdle()
        {
            if (_owner._disposed) return;
            lock (_owner._memory)
            {
                lock (_gate)
                {
                    // A lease taken since the timer fired keeps it loaded.
                    if (_leases > 0 || _model == null || _keepAlive == Timeout.InfiniteTimeSpan) return;
                    // A timer may fire a little early: wait out the rest.
                    var left = _idleSince + _keepAlive - DateTimeOffset.UtcNow;
                    if (left > TimeSpan.Zero)
                    {
                        _idle.Change(left, Timeout.InfiniteTimeSpan);
                        return;
                    }
                }
                Unload();
            }
        }

        /// <summary>Unloads the model if it is idle (or, with <paramref name="force"/>, at shutdown). Called holding <see cref="_memory"/>.</summary>
        public void Unload(bool force = false)
        {
            ServedModel? model;
            lock (_gate)
            {
                if (_model == null || (!force && (_leases > 0 || !Source.CanUnload))) return;
                model = _model;
                _model = null;
                _idle.Change(Timeout.Infinite, Timeout.Infinite);
            }
            _owner.Unreserve(this);
            if (Source.CanUnload) model.Dispose();
        }

        public void StopTimer() => _idle.Dispose();
    }
}
