namespace Velo.Gateway;

/// <summary>How a request picks among the nodes that serve its model.</summary>
public enum RoutingPolicy
{
    /// <summary>Consistent hashing of the prompt's leading characters with bounded load, so a conversation keeps
    /// reaching the node holding its KV prefix; least outstanding requests when that node is saturated.</summary>
    PrefixAffinity,

    /// <summary>Each node in turn, ignoring the prompt: the baseline prefix affinity is measured against.</summary>
    RoundRobin,

    /// <summary>The node with the fewest requests in flight.</summary>
    LeastOutstanding,
}

public sealed record GatewayOptions
{
    public string Host { get; init; } = "127.0.0.1";
    public int Port { get; init; } = 8000;

    /// <summary>Nodes named in the configuration (<c>--node URL</c>): checked from the start, never forgotten.</summary>
    public IReadOnlyList<string> Nodes { get; init; } = [];

    /// <summary>An appsettings-style JSON file whose <c>Velo:Gateway:Nodes</c> array lists more nodes (<c>--config</c>),
    /// read again whenever it changes (<see cref="NodeConfigurationFile"/>); null for none.</summary>
    public string? ConfigFile { get; init; }

    /// <summary>When set, clients need <c>Authorization: Bearer</c> this key on every route but <c>/health</c>; the
    /// gateway sends it to the nodes too (the nodes of one gateway share its key, or have none), and nodes joining
    /// with <c>velo serve --join</c> present it.</summary>
    public string? ApiKey { get; init; }

    public RoutingPolicy Policy { get; init; } = RoutingPolicy.PrefixAffinity;

    /// <summary>The most leading characters prefix affinity hashes: of a chat, its messages up to the first user message;
    /// of a completion, its prompt.</summary>
    public int PrefixChars { get; init; } = 1024;

    /// <summary>Bounded load: a node takes a request while its outstanding requests stay under this factor times the
    /// average (Mirrokni, Thorup and Zadimoghaddam's consistent hashing with bounded loads).</summary>
    public double LoadFactor { get; init; } = 1.25;

    /// <summary>How often every node's /health, /v1/models and /metrics are read.</summary>
    public TimeSpan HealthInterval { get; init; } = TimeSpan.FromSeconds(2);

    /// <summary>How often joined nodes announce themselves; one silent for three intervals is dropped.</summary>
    public TimeSpan HeartbeatInterval { get; init; } = TimeSpan.FromSeconds(5);

    /// <summary>How long a node that answered 503 (busy) is passed over while other nodes can take its requests.</summary>
    public TimeSpan BusyBackoff { get; init; } = TimeSpan.FromSeconds(1);

    /// <summary>The largest request body the gateway reads (it must read a body to route it).</summary>
    public long MaxRequestBytes { get; init; } = 64L << 20;

    /// <summary>The most nodes one request is tried on before the gateway gives up.</summary>
    public int MaxAttempts { get; init; } = 3;
}
