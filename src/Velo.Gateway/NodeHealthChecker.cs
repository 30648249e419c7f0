using System.Globalization;
using System.Net.Http.Headers;
using System.Text.Json;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace Velo.Gateway;

/// <summary>
/// The active health check: every <see cref="GatewayOptions.HealthInterval"/> each node's <c>/health</c>, then, for a
/// healthy one, the models it serves (<c>/v1/models</c>, with their identity) and its queue (<c>/metrics</c>). A node
/// whose model carries a name another node already serves with a different identity gets no requests for it.
/// </summary>
public sealed class NodeHealthChecker : BackgroundService
{
    private readonly NodeRegistry _registry;
    private readonly GatewayOptions _options;
    private readonly ILogger _logger;
    private readonly HttpClient _http;

    public NodeHealthChecker(NodeRegistry registry, GatewayOptions options, ILogger<NodeHealthChecker> logger)
    {
        _registry = registry;
        _options = options;
        _logger = logger;
        _http = new HttpClient(new SocketsHttpHandler { UseProxy = false, ConnectTimeout = TimeSpan.FromSeconds(3) }) { Timeout = TimeSpan.FromSeconds(5) };
        registry.NodeAdded += node => _ = CheckAsync(node, CancellationToken.None);
    }

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        using var timer = new PeriodicTimer(_options.HealthInterval);
        do
        {
            _registry.DropSilent();
            await Task.WhenAll(_registry.Nodes.Select(node => CheckAsync(node, stoppingToken)));
        }
        while (await timer.WaitForNextTickAsync(stoppingToken));
    }

    /// <summary>Checks one node now and records what it found.</summary>
    public async Task CheckAsync(GatewayNode node, CancellationToken cancellation)
    {
        var before = (node.State, node.Error);
        try
        {
            using var health = await _http.GetAsync(new Uri(node.Address, "health"), cancellation);
            if (!health.IsSuccessStatusCode)
            {
                node.State = NodeState.Loading;
                node.Error = $"/health answered {(int)health.StatusCode}: {await ErrorMessageAsync(health, cancellation)}";
            }
            else
            {
                var models = await GetJsonAsync(node, "v1/models", cancellation);
                // One node at a time: of two nodes that bring different models under one name, the first keeps it.
                lock (_registry) ReadModels(node, models);
                node.QueueLength = QueueLength(await GetTextAsync(node, "metrics", cancellation));
                node.State = NodeState.Healthy;
            }
        }
        catch (Exception e) when (e is HttpRequestException or TaskCanceledException or JsonException or InvalidDataException && !cancellation.IsCancellationRequested)
        {
            node.State = NodeState.Down;
            node.Error = $"does not answer: {e.Message}";
        }
        if (before != (node.State, node.Error)) Report(node);
    }

    private void Report(GatewayNode node)
    {
        if (node.State == NodeState.Healthy)
            _logger.LogInformation("node {Node} is healthy, serving {Models}{Error}", node.Prefix, string.Join(", ", node.Models.Keys),
                node.Error != null ? "; " + node.Error : "");
        else
            _logger.LogWarning("node {Node} is {State}: {Error}", node.Prefix, node.State.ToString().ToLowerInvariant(), node.Error);
    }

    private void ReadModels(GatewayNode node, JsonElement list)
    {
        if (!list.TryGetProperty("data", out var data) || data.ValueKind != JsonValueKind.Array)
            throw new InvalidDataException("/v1/models has no 'data' list");
        var models = new Dictionary<string, ModelIdentity>();
        var refused = new List<string>();
        foreach (var entry in data.EnumerateArray())
        {
            if (!entry.TryGetProperty("id", out var id) || id.ValueKind != JsonValueKind.String) continue;
            var meta = entry.TryGetProperty("meta", out var m) && m.ValueKind == JsonValueKind.Object ? m : default;
            var identity = new ModelIdentity(id.GetString()!, String(meta, "architecture"), Number(meta, "size"), String(meta, "sha256"));
            if (_registry.Conflict(node, identity) is var (other, theirs))
                refused.Add($"it serves '{identity.Id}' as {identity}, but {other.Prefix} serves a different model under that name ({theirs}); " +
                    $"give one of them another name with --alias");
            else models[identity.Id] = identity;
        }
        node.Models = models;
        node.Error = refused.Count > 0 ? string.Join("; ", refused) : null;
    }

    private static string? String(JsonElement meta, string name) =>
        meta.ValueKind == JsonValueKind.Object && meta.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.String ? v.GetString() : null;

    private static long? Number(JsonElement meta, string name) =>
        meta.ValueKind == JsonValueKind.Object && meta.TryGetProperty(name, out var v) && v.TryGetInt64(out long n) ? n : null;

    /// <summary>The node's <c>velo_queue_length</c> gauge; 0 when its metrics do not say.</summary>
    internal static int QueueLength(string metrics)
    {
        foreach (var line in metrics.Split('\n'))
            if (line.StartsWith("velo_queue_length ", StringComparison.Ordinal) &&
                int.TryParse(line.AsSpan("velo_queue_length ".Length), NumberStyles.Integer, CultureInfo.InvariantCulture, out int queue))
                return queue;
        return 0;
    }

    private async Task<JsonElement> GetJsonAsync(GatewayNode node, string path, CancellationToken cancellation)
    {
        using var document = JsonDocument.Parse(await GetTextAsync(node, path, cancellation));
        return document.RootElement.Clone();
    }

    private async Task<string> GetTextAsync(GatewayNode node, string path, CancellationToken cancellation)
    {
        using var request = new HttpRequestMessage(HttpMethod.Get, new Uri(node.Address, path));
        if (_options.ApiKey != null) request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", _options.ApiKey);
        using var response = await _http.SendAsync(request, cancellation);
        if (!response.IsSuccessStatusCode)
            throw new InvalidDataException($"/{path} answered {(int)response.StatusCode}: {await ErrorMessageAsync(response, cancellation)}");
        return await response.Content.ReadAsStringAsync(cancellation);
    }

    private static async Task<string> ErrorMessageAsync(HttpResponseMessage response, CancellationToken cancellation)
    {
        string text = await response.Content.ReadAsStringAsync(cancellation);
        try
        {
            using var document = JsonDocument.Parse(text);
            if (document.RootElement.TryGetProperty("error", out var error) && error.TryGetProperty("message", out var message)) return message.ToString();
        }
        catch (JsonException)
        {
        }
        return text.Length > 200 ? text[..200] : text;
    }

    public override void Dispose()
    {
        _http.Dispose();
        base.Dispose();
    }
}
