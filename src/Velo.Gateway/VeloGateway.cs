using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Yarp.ReverseProxy.Forwarder;

namespace Velo.Gateway;

/// <summary>
/// The gateway as a Kestrel host: one OpenAI-compatible endpoint in front of several <c>velo serve</c> nodes. What
/// <c>velo gateway</c> runs and what tests start on a loopback port.
/// </summary>
public static class VeloGateway
{
    /// <summary>Where nodes announce themselves (<c>velo serve --join</c>): <c>{"url": "http://host:port"}</c>.</summary>
    public const string JoinRoute = "/gateway/join";

    /// <summary>Builds the app; port 0 picks a free one. Node addresses are checked here (a malformed one throws).</summary>
    public static WebApplication Build(GatewayOptions options, LogLevel logLevel = LogLevel.Warning)
    {
        var registry = new NodeRegistry(options);
        var builder = WebApplication.CreateSlimBuilder();
        builder.Logging.SetMinimumLevel(logLevel);
        // The nodes' comings and goings at the level asked for; ASP.NET Core's and YARP's per-request lines only as warnings.
        builder.Logging.AddFilter("Microsoft", LogLevel.Warning);
        builder.Logging.AddFilter("Yarp", LogLevel.Warning);
        builder.WebHost.UseKestrel(kestrel =>
        {
            if (options.Host is "localhost") kestrel.ListenLocalhost(options.Port);
            else kestrel.Listen(System.Net.IPAddress.Parse(options.Host), options.Port);
        });
        builder.Services.AddHttpForwarder();
        builder.Services.AddSingleton(options);
        builder.Services.AddSingleton(registry);
        builder.Services.AddSingleton<GatewayMetrics>();
        builder.Services.AddSingleton<NodeRouter>();
        builder.Services.AddSingleton<GatewayProxy>();
        builder.Services.AddSingleton<NodeHealthChecker>();
        builder.Services.AddHostedService(services => services.GetRequiredService<NodeHealthChecker>());
        if (options.ConfigFile is { } configFile)
            builder.Services.AddSingleton(services =>
                new NodeConfigurationFile(configFile, registry, services.GetRequiredService<ILoggerFactory>().CreateLogger("Velo.Gateway.Nodes")));
        var app = builder.Build();

        var proxy = app.Services.GetRequiredService<GatewayProxy>();
        var checker = app.Services.GetRequiredService<NodeHealthChecker>();
        // Read now, so a bad file fails the start; the container disposes it (and its file watcher) with the app.
        if (options.ConfigFile != null)
            try
            {
                app.Services.GetRequiredService<NodeConfigurationFile>();
            }
            catch
            {
                ((IDisposable)app).Dispose();
                throw;
            }
        var metrics = app.Services.GetRequiredService<GatewayMetrics>();
        foreach (string route in new[] { "/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/rerank", "/v1/classify" })
            app.MapPost(route, Handle(options, metrics, route, true, proxy.ForwardAsync));
        app.MapGet("/v1/models", Handle(options, metrics, "/v1/models", true, http => ModelsAsync(http, registry)));
        app.MapGet("/v1/models/{id}", Handle(options, metrics, "/v1/models/{id}", true, http => ModelAsync(http, registry)));
        app.MapGet("/health", Handle(options, metrics, "/health", false, http => HealthAsync(http, registry)));
        app.MapGet("/metrics", Handle(options, metrics, "/metrics", true, http =>
        {
            http.Response.ContentType = "text/plain; version=0.0.4; charset=utf-8";
            return http.Response.WriteAsync(metrics.Render(registry.Nodes), http.RequestAborted);
        }));
        app.MapGet("/gateway/nodes", Handle(options, metrics, "/gateway/nodes", true, http => NodesAsync(http, registry)));
        app.MapPost(JoinRoute, Handle(options, metrics, JoinRoute, true, http => JoinAsync(http, registry, checker, options)));
        app.MapFallback(Handle(options, metrics, "other", true, http =>
            throw new GatewayError(404, $"the gateway has no route {http.Request.Method} {http.Request.Path}: it forwards /v1/chat/completions, " +
                "/v1/completions and /v1/embeddings, and answers /v1/models, /health, /metrics and /gateway/nodes", code: "not_found")));
        return app;
    }

    /// <summary>The address the started app listens on, such as <c>http://127.0.0.1:50123</c>.</summary>
    public static Uri Address(WebApplication app) =>
        new(app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First());

    /// <summary>The API key check, the JSON content type check and error bodies around a route, and its counting.</summary>
    private static RequestDelegate Handle(GatewayOptions options, GatewayMetrics metrics, string route, bool needsKey, Func<HttpContext, Task> handler) => async http =>
    {
        try
        {
            if (needsKey && options.ApiKey != null && !Authorized(http.Request, options.ApiKey))
                throw new GatewayError(401, "Incorrect or missing API key: send 'Authorization: Bearer KEY'", code: "invalid_api_key");
            if (HttpMethods.IsPost(http.Request.Method) && !http.Request.HasJsonContentType())
                throw new GatewayError(415, "the request body must be JSON, sent with 'Content-Type: application/json'", code: "unsupported_media_type");
            await handler(http);
        }
        catch (Exception e) when (!http.Response.HasStarted && !http.RequestAborted.IsCancellationRequested)
        {
            var error = e switch
            {
                GatewayError gateway => gateway,
                BadHttpRequestException bad => new GatewayError(bad.StatusCode, bad.Message),
                _ => new GatewayError(500, $"internal error: {e.Message}"),
            };
            if (error.Status == 503) http.Response.Headers.RetryAfter = "1";
            await error.WriteResponseAsync(http.Response);
        }
        catch (OperationCanceledException) when (http.RequestAborted.IsCancellationRequested)
        {
            // The client went away; YARP has cancelled the node's request.
        }
        finally
        {
            metrics.CountRequest(route, http.Response.StatusCode);
        }
    };

    private static bool Authorized(HttpRequest request, string key)
    {
        string header = request.Headers.Authorization.ToString();
        const string scheme = "Bearer ";
        if (!header.StartsWith(scheme, StringComparison.OrdinalIgnoreCase)) return false;
        return CryptographicOperations.FixedTimeEquals(Encoding.UTF8.GetBytes(header[scheme.Length..].Trim()), Encoding.UTF8.GetBytes(key));
    }

    private static Task ModelsAsync(HttpContext http, NodeRegistry registry) => WriteJsonAsync(http, 200, json =>
    {
        json.WriteStartObject();
        json.WriteString("object", "list");
        json.WriteStartArray("data");
        foreach (var model in registry.Models()) WriteModel(json, model, registry);
        json.WriteEndArray();
        json.WriteEndObject();
    });

    private static Task ModelAsync(HttpContext http, NodeRegistry registry)
    {
        string id = (string)http.Request.RouteValues["id"]!;
        var model = registry.Models().FirstOrDefault(m => m.Id == id) ?? throw new GatewayError(404, $"The model '{id}' does not exist", "model", "model_not_found");
        return WriteJsonAsync(http, 200, json => WriteModel(json, model, registry));
    }

    private static void WriteModel(Utf8JsonWriter json, ModelIdentity model, NodeRegistry registry)
    {
        json.WriteStartObject();
        json.WriteString("id", model.Id);
        json.WriteString("object", "model");
        json.WriteNumber("created", 0);
        json.WriteString("owned_by", "velo");
        json.WriteStartObject("meta");
        if (model.Architecture != null) json.WriteString("architecture", model.Architecture);
        if (model.Size is { } size) json.WriteNumber("size", size);
        if (model.Sha256 != null) json.WriteString("sha256", model.Sha256);
        json.WriteNumber("nodes", registry.Serving(model.Id).Count);
        json.WriteEndObject();
        json.WriteEndObject();
    }

    /// <summary>200 while some node takes requests, else 503; node addresses and errors are on /gateway/nodes, behind the key.</summary>
    private static Task HealthAsync(HttpContext http, NodeRegistry registry)
    {
        var nodes = registry.Nodes;
        int healthy = nodes.Count(n => n.State == NodeState.Healthy);
        return WriteJsonAsync(http, healthy > 0 ? 200 : 503, json =>
        {
            json.WriteStartObject();
            json.WriteString("status", healthy > 0 ? "ok" : "no healthy node");
            json.WriteNumber("nodes", nodes.Count);
            json.WriteNumber("healthy_nodes", healthy);
            json.WriteEndObject();
        });
    }

    private static Task NodesAsync(HttpContext http, NodeRegistry registry) => WriteJsonAsync(http, 200, json =>
    {
        json.WriteStartObject();
        json.WriteStartArray("nodes");
        foreach (var node in registry.Nodes) WriteNode(json, node);
        json.WriteEndArray();
        json.WriteEndObject();
    });

    private static void WriteNode(Utf8JsonWriter json, GatewayNode node)
    {
        json.WriteStartObject();
        json.WriteString("url", node.Prefix);
        json.WriteString("state", node.State.ToString().ToLowerInvariant());
        json.WriteBoolean("configured", node.Configured);
        json.WriteStartArray("models");
        foreach (var id in node.Models.Keys) json.WriteStringValue(id);
        json.WriteEndArray();
        json.WriteNumber("outstanding_requests", node.Outstanding);
        json.WriteNumber("queue_length", node.QueueLength);
        json.WriteString("error", node.Error);
        json.WriteEndObject();
    }

    /// <summary>
    /// A node announcing itself: new ones are checked before they are added, so an address the gateway cannot reach
    /// (a node listening on loopback only, a wrong advertised address) is refused with the reason.
    /// </summary>
    private static async Task JoinAsync(HttpContext http, NodeRegistry registry, NodeHealthChecker checker, GatewayOptions options)
    {
        string? url;
        try
        {
            using var body = await JsonDocument.ParseAsync(http.Request.Body, cancellationToken: http.RequestAborted);
            url = body.RootElement.ValueKind == JsonValueKind.Object && body.RootElement.TryGetProperty("url", out var u) && u.ValueKind == JsonValueKind.String
                ? u.GetString() : null;
        }
        catch (JsonException e)
        {
            throw GatewayError.BadRequest($"the request body is not valid JSON: {e.Message}");
        }
        if (url == null) throw GatewayError.BadRequest("'url' is required: the address the gateway reaches the node at", "url");
        Uri address;
        try
        {
            address = NodeRegistry.ParseNodeAddress(url);
        }
        catch (ArgumentException e)
        {
            throw GatewayError.BadRequest(e.Message, "url");
        }
        if (!registry.Nodes.Any(n => n.Address == address))
        {
            var probe = new GatewayNode(address, configured: false);
            await checker.CheckAsync(probe, http.RequestAborted);
            if (probe.State == NodeState.Down)
                throw GatewayError.BadRequest($"the gateway cannot reach the node at {probe.Prefix}: it {probe.Error}", "url");
        }
        var (node, added) = registry.Heartbeat(address);
        await WriteJsonAsync(http, 200, json =>
        {
            json.WriteStartObject();
            json.WriteString("url", node.Prefix);
            json.WriteBoolean("added", added);
            json.WriteNumber("heartbeat_seconds", options.HeartbeatInterval.TotalSeconds);
            json.WriteEndObject();
        });
    }

    private static async Task WriteJsonAsync(HttpContext http, int status, Action<Utf8JsonWriter> write)
    {
        http.Response.StatusCode = status;
        http.Response.ContentType = "application/json";
        await using var json = new Utf8JsonWriter(http.Response.Body, GatewayError.JsonOptions);
        write(json);
    }
}
