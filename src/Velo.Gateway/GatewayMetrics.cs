using System.Collections.Concurrent;
using System.Globalization;
using System.Text;

namespace Velo.Gateway;

/// <summary><c>GET /metrics</c> of the gateway, in the Prometheus text format: its own requests, and counters per node.</summary>
public sealed class GatewayMetrics
{
    private readonly ConcurrentDictionary<(string Route, int Status), long> _requests = new();

    public void CountRequest(string route, int status) => _requests.AddOrUpdate((route, status), 1, (_, n) => n + 1);

    public string Render(IReadOnlyList<GatewayNode> nodes)
    {
        var text = new StringBuilder();
        text.Append("# HELP velo_gateway_requests_total Requests the gateway answered, by route and status code.\n# TYPE velo_gateway_requests_total counter\n");
        foreach (var ((route, status), count) in _requests.OrderBy(e => e.Key.Route, StringComparer.Ordinal).ThenBy(e => e.Key.Status))
            text.Append(CultureInfo.InvariantCulture, $"velo_gateway_requests_total{{route=\"{route}\",status=\"{status}\"}} {count}\n");
        text.Append("# HELP velo_gateway_node_responses_total Responses from each node by status code (599: cut off after it began).\n" +
            "# TYPE velo_gateway_node_responses_total counter\n");
        foreach (var node in nodes)
            foreach (var (status, count) in node.Responses.OrderBy(e => e.Key))
                text.Append(CultureInfo.InvariantCulture, $"velo_gateway_node_responses_total{{node=\"{node.Prefix}\",status=\"{status}\"}} {count}\n");
        PerNode(text, nodes, "velo_gateway_node_failures_total", "counter", "Requests to the node that failed before or while it answered.", n => Interlocked.Read(ref n.Failures));
        PerNode(text, nodes, "velo_gateway_node_retries_total", "counter", "Requests the node took after another node failed them or was busy.", n => Interlocked.Read(ref n.Retries));
        PerNode(text, nodes, "velo_gateway_node_stream_errors_total", "counter", "Streams from the node that broke mid-way and ended with an error event.", n => Interlocked.Read(ref n.StreamErrors));
        PerNode(text, nodes, "velo_gateway_node_outstanding_requests", "gauge", "Requests in flight to the node.", n => n.Outstanding);
        PerNode(text, nodes, "velo_gateway_node_queue_length", "gauge", "Requests waiting in the node's own queue, at its last check.", n => n.QueueLength);
        PerNode(text, nodes, "velo_gateway_node_healthy", "gauge", "1 when the node takes requests.", n => n.State == NodeState.Healthy ? 1 : 0);
        return text.ToString();
    }

    private static void PerNode(StringBuilder text, IReadOnlyList<GatewayNode> nodes, string name, string type, string help, Func<GatewayNode, long> value)
    {
        text.Append(CultureInfo.InvariantCulture, $"# HELP {name} {help}\n# TYPE {name} {type}\n");
        foreach (var node in nodes) text.Append(CultureInfo.InvariantCulture, $"{name}{{node=\"{node.Prefix}\"}} {value(node)}\n");
    }
}
