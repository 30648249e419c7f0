namespace Velo.Server;

public sealed record VeloServerOptions
{
    public required string ModelPath { get; init; }

    /// <summary>The model id clients name in requests and see in <c>/v1/models</c>; default: the file name without extension.</summary>
    public string? ModelId { get; init; }

    /// <summary>More models served beside the default one (<c>--model NAME=FILE</c>), each named by <c>model</c> in a
    /// request, loaded on its first request.</summary>
    public IReadOnlyList<NamedModelFile> Models { get; init; } = [];

    /// <summary>Entries built over other entries (such as a cascade over a small and a large model), registered after the files.</summary>
    public IReadOnlyList<ModelSource> Routes { get; init; } = [];

    /// <summary>How long a model stays loaded once idle (<c>--keep-alive</c>, Ollama's keep-alive);
    /// <see cref="Timeout.InfiniteTimeSpan"/> for ever.</summary>
    public TimeSpan KeepAlive { get; init; } = TimeSpan.FromMinutes(5);

    /// <summary>The most memory the loaded models may plan to use together (<c>--memory-cap</c>); null for no cap.</summary>
    public long? MemoryCapBytes { get; init; }

    public string Host { get; init; } = "127.0.0.1";
    public int Port { get; init; } = 8080;

    /// <summary>Sequences generated together (continuous batching slots), for each decoder.</summary>
    public int Parallel { get; init; } = 4;

    /// <summary>Context per sequence in tokens; 0 means the model's own, capped at <see cref="Velo.Models.ModelInfo.DefaultContextCap"/>.</summary>
    public int ContextLength { get; init; }

    /// <summary>Requests that may wait for a slot before the server answers 503.</summary>
    public int QueueCapacity { get; init; } = 64;

    /// <summary>Tokens per forward pass (llama-server's <c>--batch-size</c>): one per decoding sequence, the rest for prompts.</summary>
    public int BatchSize { get; init; } = new Velo.Generation.BatchSchedulerOptions().MaxBatchTokens;

    public int Threads { get; init; } = Environment.ProcessorCount;

    /// <summary>How cached keys and values are stored: F32, or F16 in half the memory.</summary>
    public Velo.Runtime.KvCacheTypes CacheTypes { get; init; }

    /// <summary>A draft model for speculative decoding (<c>--model-draft</c>), of the model's vocabulary; needs <see cref="Speculation"/>.</summary>
    public string? DraftModelPath { get; init; }

    /// <summary>Speculative decoding for every sequence: with the draft model, or by prompt lookup; null: none.</summary>
    public Velo.Generation.SpeculationOptions? Speculation { get; init; }

    /// <summary>When set, every route except <c>/health</c> (and <c>/metrics</c> when <see cref="PublicMetrics"/>) needs
    /// <c>Authorization: Bearer</c> this key.</summary>
    public string? ApiKey { get; init; }

    /// <summary>Serve <c>/metrics</c> without the API key, for a scraper that cannot send one; the metrics show request
    /// counts and latencies, not request content.</summary>
    public bool PublicMetrics { get; init; }

    /// <summary>The largest request body the completion routes accept, in bytes; 0 derives it from the context length
    /// (<see cref="VeloEngine.DefaultMaxRequestBytes"/>).</summary>
    public long MaxRequestBytes { get; init; }

    /// <summary>
    /// The batch scheduler's options for a decoder served with these options: the draft's speculation only for the model
    /// it drafts for (<paramref name="withDraft"/>), prompt lookup (<c>--spec-ngram</c>) for every decoder.
    /// </summary>
    public Velo.Generation.BatchSchedulerOptions SchedulerOptions(bool withDraft) => new()
    {
        Parallel = Parallel,
        ContextLength = ContextLength,
        QueueCapacity = QueueCapacity,
        MaxBatchTokens = BatchSize,
        CacheTypes = CacheTypes,
        Speculation = withDraft || Speculation?.NGram > 0 ? Speculation : null,
    };
}

/// <summary>A model file served under a name (<c>--model NAME=FILE</c>).</summary>
public sealed record NamedModelFile(string Name, string Path);
