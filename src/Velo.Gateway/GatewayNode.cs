using System.Collections.Concurrent;

namespace Velo.Gateway;

/// <summary>What a node says about a model in its <c>/v1/models</c> metadata: enough to tell two files apart that
/// carry the same model name.</summary>
public sealed record ModelIdentity(string Id, string? Architecture, long? Size, string? Sha256)
{
    /// <summary>Whether the two name the same model file: every field both report must agree.</summary>
    public bool SameAs(ModelIdentity other) =>
        Agree(Architecture, other.Architecture) && (Size is null || other.Size is null || Size == other.Size) && Agree(Sha256, other.Sha256);

    private static bool Agree(string? a, string? b) => a is null || b is null || string.Equals(a, b, StringComparison.OrdinalIgnoreCase);

    public override string ToString() => $"{Architecture ?? "?"}, {Size?.ToString(System.Globalization.CultureInfo.InvariantCulture) ?? "?"} bytes, sha256 {Sha256 ?? "?"}";
}

public enum NodeState
{
    /// <summary>Not checked yet.</summary>
    Unknown,

    /// <summary>Answered /health with 200: requests go to it.</summary>
    Healthy,

    /// <summary>Answers, but its model is still loading (503 on /health).</summary>
    Loading,

    /// <summary>Did not answer, or a request to it failed before its first byte: no requests until a check succeeds.</summary>
    Down,
}

/// <summary>One <c>velo serve</c> behind the gateway, with what the checks learned and the counters <c>/metrics</c> shows.</summary>
public sealed class GatewayNode(Uri address, bool configured)
{
    private int _outstanding;

    /// <summary>The node's base address, such as <c>http://10.0.0.5:8080/</c>.</summary>
    public Uri Address { get; } = address;

    /// <summary>The address YARP forwards to: without the trailing slash, so the request path follows it.</summary>
    public string Prefix { get; } = address.ToString().TrimEnd('/');

    /// <summary>Named in the configuration (never dropped for silence) rather than joined by heartbeat; a joined node
    /// becomes configured when the configuration file comes to list it.</summary>
    public bool Configured { get => Volatile.Read(ref _configured); internal set => Volatile.Write(ref _configured, value); }

    private bool _configured = configured;

    public volatile NodeState State;

    /// <summary>Why the node is not healthy, or why one of its models is refused; null when all is well.</summary>
    public volatile string? Error;

    /// <summary>The models the node serves that the gateway routes to it (a model whose identity differs from the
    /// one other nodes serve under that name is left out and named in <see cref="Error"/>).</summary>
    public volatile IReadOnlyDictionary<string, ModelIdentity> Models = new Dictionary<string, ModelIdentity>();

    /// <summary>The node's own queue (requests waiting for a sequence), from its last /metrics.</summary>
    public volatile int QueueLength;

    /// <summary>When a joined node last announced itself.</summary>
    public DateTime LastHeartbeat = DateTime.UtcNow;

    /// <summary>Until when the node is passed over after answering 503 (busy).</summary>
    public DateTime BusyUntil;

    public int Outstanding => Volatile.Read(ref _outstanding);
    public void Begin() => Interlocked.Increment(ref _outstanding);
    public void End() => Interlocked.Decrement(ref _outstanding);

    /// <summary>Saturated: it said it is busy lately, or requests wait in its queue.</summary>
    public bool Saturated => QueueLength > 0 || DateTime.UtcNow < BusyUntil;

    public ConcurrentDictionary<int, long> Responses { get; } = new();
    public long Failures;
    public long Retries;
    public long StreamErrors;

    public void CountResponse(int status) => Responses.AddOrUpdate(status, 1, (_, n) => n + 1);
}
