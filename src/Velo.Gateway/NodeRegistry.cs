namespace Velo.Gateway;

/// <summary>The nodes the gateway knows: those configured (with <c>--node</c> or in the configuration file), and those
/// that joined and keep announcing themselves.</summary>
public sealed class NodeRegistry
{
    private readonly object _gate = new();
    private readonly TimeSpan _heartbeatTimeout;
    private readonly HashSet<Uri> _commandLine;
    private HashSet<Uri> _fromFile = [];
    private GatewayNode[] _nodes;

    public NodeRegistry(GatewayOptions options)
    {
        _heartbeatTimeout = options.HeartbeatInterval * 3;
        _nodes = options.Nodes.Select(url => new GatewayNode(ParseNodeAddress(url), configured: true)).DistinctBy(n => n.Address).ToArray();
        _commandLine = _nodes.Select(n => n.Address).ToHashSet();
    }

    /// <summary>A snapshot of the nodes now known.</summary>
    public IReadOnlyList<GatewayNode> Nodes => Volatile.Read(ref _nodes);

    /// <summary>Raised when a node appears, so it is checked at once instead of at the next round.</summary>
    public event Action<GatewayNode>? NodeAdded;

    /// <summary>Records a heartbeat of the node at <paramref name="address"/>, adding it when new; returns it and whether it is new.</summary>
    public (GatewayNode Node, bool Added) Heartbeat(Uri address)
    {
        GatewayNode node;
        lock (_gate)
        {
            node = _nodes.FirstOrDefault(n => n.Address == address)!;
            if (node != null)
            {
                node.LastHeartbeat = DateTime.UtcNow;
                return (node, false);
            }
            node = new GatewayNode(address, configured: false);
            _nodes = [.. _nodes, node];
        }
        NodeAdded?.Invoke(node);
        return (node, true);
    }

    /// <summary>
    /// Makes the configuration file's nodes <paramref name="listed"/>: new addresses are added (and checked at once), a
    /// node that had joined by heartbeat becomes configured, and nodes the file no longer lists are forgotten unless
    /// <c>--node</c> names them (one still announcing itself comes back at its next heartbeat, as a joined node).
    /// </summary>
    public (List<Uri> Added, List<Uri> Removed) SetFileNodes(IEnumerable<Uri> listed)
    {
        var wanted = listed.ToHashSet();
        var added = new List<GatewayNode>();
        List<Uri> removed;
        lock (_gate)
        {
            var kept = _nodes.Where(n => wanted.Contains(n.Address) || _commandLine.Contains(n.Address) || !_fromFile.Contains(n.Address)).ToList();
            removed = _nodes.Except(kept).Select(n => n.Address).ToList();
            foreach (var node in kept)
                if (wanted.Contains(node.Address)) node.Configured = true;
            foreach (var address in wanted.Where(a => !kept.Any(n => n.Address == a)).OrderBy(a => a.ToString(), StringComparer.Ordinal))
                added.Add(new GatewayNode(address, configured: true));
            _nodes = [.. kept, .. added];
            _fromFile = wanted;
        }
        foreach (var node in added) NodeAdded?.Invoke(node);
        return (added.Select(n => n.Address).ToList(), removed);
    }

    /// <summary>Forgets joined nodes that stopped announcing themselves; configured ones stay (and stay checked).</summary>
    public void DropSilent()
    {
        var deadline = DateTime.UtcNow - _heartbeatTimeout;
        lock (_gate)
            if (_nodes.Any(n => !n.Configured && n.LastHeartbeat < deadline))
                _nodes = _nodes.Where(n => n.Configured || n.LastHeartbeat >= deadline).ToArray();
    }

    /// <summary>The healthy nodes that serve <paramref name="model"/>.</summary>
    public List<GatewayNode> Serving(string model) =>
        Nodes.Where(n => n.State == NodeState.Healthy && n.Models.ContainsKey(model)).ToList();

    /// <summary>Every model some healthy node serves, with its identity.</summary>
    public IEnumerable<ModelIdentity> Models() =>
        Nodes.Where(n => n.State == NodeState.Healthy).SelectMany(n => n.Models.Values).DistinctBy(m => m.Id).OrderBy(m => m.Id, StringComparer.Ordinal);

    /// <summary>
    /// The identity under which another node already serves <paramref name="model"/>'s name when it differs from
    /// <paramref name="model"/>'s own: the node reporting it must not get that model's requests.
    /// </summary>
    public (GatewayNode Node, ModelIdentity Identity)? Conflict(GatewayNode node, ModelIdentity model)
    {
        foreach (var other in Nodes)
            if (other != node && other.Models.TryGetValue(model.Id, out var theirs) && !theirs.SameAs(model))
                return (other, theirs);
        return null;
    }

    /// <summary>A node's base address from user input: an absolute http(s) URL with nothing after the host and port.</summary>
    public static Uri ParseNodeAddress(string url)
    {
        if (!Uri.TryCreate(url.Trim(), UriKind.Absolute, out var uri) || (uri.Scheme != Uri.UriSchemeHttp && uri.Scheme != Uri.UriSchemeHttps))
            throw new ArgumentException($"a node address must be an absolute http:// or https:// URL, such as http://10.0.0.5:8080, not '{url}'");
        if (uri.AbsolutePath != "/" || uri.Query.Length > 0 || uri.Fragment.Length > 0 || uri.UserInfo.Length > 0)
            throw new ArgumentException($"a node address is a scheme, host and port only (the gateway adds the /v1/... paths), not '{url}'");
        return new Uri(uri.GetLeftPart(UriPartial.Authority) + "/");
    }
}
