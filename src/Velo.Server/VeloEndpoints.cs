using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.DependencyInjection;
using Velo.Inference;

namespace Velo.Server;

public static class VeloServiceCollectionExtensions
{
    /// <summary>Registers an engine that loads the model in the background once the host starts.</summary>
    public static IServiceCollection AddVelo(this IServiceCollection services, VeloServerOptions options) =>
        services.AddVelo(new VeloEngine(options));

    /// <summary>Registers a ready engine (or one whose loading the caller manages).</summary>
    public static IServiceCollection AddVelo(this IServiceCollection services, VeloEngine engine)
    {
        services.AddSingleton(engine);
        services.AddHostedService(_ => new VeloEngineLoader(engine));
        return services;
    }
}

/// <summary>
/// The OpenAI-compatible routes as minimal APIs. Map them on an app or on a group
/// (<c>app.MapGroup("/llm").MapVelo()</c>) after <see cref="VeloServiceCollectionExtensions.AddVelo(IServiceCollection, VeloEngine)"/>.
/// </summary>
public static class VeloEndpoints
{
    /// <summary>Body limit of /tokenize and /detokenize: with the bounds below, room for any request they accept.</summary>
    internal const long TokenizerBodyBytes = 1 << 20;

    /// <summary>Bounds on one /tokenize or /detokenize request's work: far beyond any context, far below a slow answer.</summary>
    internal const int MaxTokenizeChars = 1 << 18, MaxDetokenizeTokens = 1 << 16;

    public static IEndpointRouteBuilder MapVelo(this IEndpointRouteBuilder endpoints)
    {
        var engine = endpoints.ServiceProvider.GetRequiredService<VeloEngine>();
        endpoints.MapPost("/v1/chat/completions", Handle(engine, "/v1/chat/completions", true, http => CompletionEndpoints.ChatAsync(http, engine)));
        endpoints.MapPost("/v1/completions", Handle(engine, "/v1/completions", true, http => CompletionEndpoints.CompletionAsync(http, engine)));
        endpoints.MapPost("/v1/embeddings", Handle(engine, "/v1/embeddings", true, http => EmbeddingsEndpoint.HandleAsync(http, engine)));
        foreach (string route in (string[])["/v1/rerank", "/rerank", "/v1/reranking"])
            endpoints.MapPost(route, Handle(engine, route, true, http => RerankEndpoints.RerankAsync(http, engine)));
        endpoints.MapPost("/v1/classify", Handle(engine, "/v1/classify", true, http => RerankEndpoints.ClassifyAsync(http, engine)));
        endpoints.MapGet("/v1/models", Handle(engine, "/v1/models", true, http => ModelsAsync(http, engine)));
        endpoints.MapGet("/v1/models/{id}", Handle(engine, "/v1/models/{id}", true, http => ModelAsync(http, engine)));
        endpoints.MapGet("/health", Handle(engine, "/health", false, http => HealthAsync(http, engine)));
        endpoints.MapPost("/tokenize", Handle(engine, "/tokenize", true, http => TokenizeAsync(http, engine)));
        endpoints.MapPost("/detokenize", Handle(engine, "/detokenize", true, http => DetokenizeAsync(http, engine)));
        endpoints.MapGet("/metrics", Handle(engine, "/metrics", !engine.PublicMetrics, http => MetricsAsync(http, engine)));
        endpoints.MapGet("/props", Handle(engine, "/props", true, http => ServerInfo.PropsAsync(http, engine)));
        Ollama.OllamaEndpoints.MapOllama(endpoints, engine);
        return endpoints;
    }

    /// <summary>
    /// Wraps a handler with the API key check, the JSON content type check, OpenAI error bodies for every failure, and
    /// request counting.
    /// </summary>
    private static RequestDelegate Handle(VeloEngine engine, string route, bool needsKey, Func<HttpContext, Task> handler) =>
        Handle(engine, route, needsKey, handler, (response, error) => error.WriteResponseAsync(response));

    /// <inheritdoc cref="Handle(VeloEngine, string, bool, Func{HttpContext, Task})"/>
    /// <remarks>Errors are written by <paramref name="writeError"/>: Ollama's routes answer in Ollama's body.</remarks>
    internal static RequestDelegate Handle(VeloEngine engine, string route, bool needsKey, Func<HttpContext, Task> handler,
        Func<HttpResponse, ApiException, Task> writeError) => async http =>
    {
        try
        {
            if (needsKey && engine.ApiKey != null && !Authorized(http.Request, engine.ApiKey))
                throw new ApiException(401, "Incorrect or missing API key: send 'Authorization: Bearer KEY'", code: "invalid_api_key");
            // A browser sends text/plain, form or multipart POSTs to any origin without asking (no CORS preflight);
            // requiring JSON keeps a page on another site from driving this server through its visitors' browsers.
            if (HttpMethods.IsPost(http.Request.Method) && !http.Request.HasJsonContentType())
                throw new ApiException(415, "the request body must be JSON, sent with 'Content-Type: application/json'" +
                    (http.Request.ContentType is { } type ? $", not '{type}'" : ""), code: "unsupported_media_type");
            await handler(http);
        }
        catch (Exception e) when (!http.Response.HasStarted && !http.RequestAborted.IsCancellationRequested)
        {
            var error = e switch
            {
                ApiException api => api,
                // Kestrel's own refusals while reading the body, such as 413 past the route's body limit.
                BadHttpRequestException bad => new ApiException(bad.StatusCode, bad.Message),
                OperationCanceledException when engine.IsStopping => ServerInfo.ShuttingDownError(),
                _ => new ApiException(500, $"internal error: {e.Message}"),
            };
            await writeError(http.Response, error);
        }
        catch (OperationCanceledException) when (http.RequestAborted.IsCancellationRequested)
        {
            // The client went away; nobody is left to answer.
        }
        finally
        {
            engine.Metrics.CountRequest(route, http.Response.StatusCode);
        }
    };

    private static bool Authorized(HttpRequest request, string key)
    {
        string header = request.Headers.Authorization.ToString();
        const string scheme = "Bearer ";
        if (!header.StartsWith(scheme, StringComparison.OrdinalIgnoreCase)) return false;
        return CryptographicOperations.FixedTimeEquals(Encoding.UTF8.GetBytes(header[scheme.Length..].Trim()), Encoding.UTF8.GetBytes(key));
    }

    private static Task ModelsAsync(HttpContext http, VeloEngine engine)
    {
        var models = engine.Models.Models;
        return WriteJsonAsync(http, 200, json =>
        {
            json.WriteStartObject();
            json.WriteString("object", "list");
            json.WriteStartArray("data");
            foreach (var model in models) WriteModel(json, engine, model);
            json.WriteEndArray();
            json.WriteEndObject();
        });
    }

    private static Task ModelAsync(HttpContext http, VeloEngine engine)
    {
        string id = (string)http.Request.RouteValues["id"]!;
        var model = engine.Models.Models.FirstOrDefault(model => model.Name == id)
            ?? throw new ApiException(404, $"The model '{id}' does not exist", "model", "model_not_found");
        return WriteJsonAsync(http, 200, json => WriteModel(json, engine, model));
    }

    private static void WriteModel(Utf8JsonWriter json, VeloEngine engine, ModelStatus model)
    {
        json.WriteStartObject();
        json.WriteString("id", model.Name);
        json.WriteString("object", "model");
        json.WriteNumber("created", engine.Created.ToUnixTimeSeconds());
        json.WriteString("owned_by", "velo");
        // llama.cpp's /v1/models "meta", with what identifies the model: a gateway in front of several servers
        // refuses one that serves a different model under the same name.
        json.WriteStartObject("meta");
        if (model.Loaded?.Generator?.ModelInfo is { } info)
        {
            json.WriteString("architecture", info.Architecture);
            json.WriteNumber("n_vocab", info.VocabSize);
            json.WriteNumber("n_embd", info.EmbeddingLength);
            json.WriteNumber("n_layer", info.Layers.Count);
            json.WriteNumber("n_ctx_train", info.ContextLength);
        }
        if (model.Path != null && File.Exists(model.Path))
        {
            json.WriteNumber("size", new FileInfo(model.Path).Length);
            json.WriteString("sha256", engine.FileSha256(model.Path));
        }
        // Ollama's capability names: what the model answers (the chat page lists only the models that complete).
        if (Capabilities(model) is { Length: > 0 } capabilities)
        {
            json.WriteStartArray("capabilities");
            foreach (string capability in capabilities) json.WriteStringValue(capability);
            json.WriteEndArray();
        }
        json.WriteBoolean("loaded", model.Loaded != null);
        json.WriteEndObject();
        json.WriteEndObject();
    }

    /// <summary>What a model answers, in Ollama's names: <c>completion</c> for a decoder, <c>embedding</c> for an encoder.</summary>
    internal static string[] Capabilities(ModelStatus model) => model.Loaded is { } loaded
        ? [.. loaded.Generator != null ? ["completion"] : Array.Empty<string>(), .. loaded.Embeddings != null ? ["embedding"] : Array.Empty<string>()]
        : model.Kind switch
        {
            ModelKind.Decoder => ["completion"],
            ModelKind.Encoder => ["embedding"],
            _ => [],
        };

    private static async Task HealthAsync(HttpContext http, VeloEngine engine)
    {
        if (!engine.IsReady) throw engine.NotReadyError();
        if (engine.HealthCheck != null && await engine.HealthCheck(http.RequestAborted) is { } problem)
            throw new ApiException(503, problem, code: "unhealthy");
        await WriteJsonAsync(http, 200, json =>
        {
            json.WriteStartObject();
            json.WriteString("status", "ok");
            json.WriteEndObject();
        });
    }

    private static async Task TokenizeAsync(HttpContext http, VeloEngine engine)
    {
        using var body = await RequestBody.ReadAsync(http.Request, TokenizerBodyBytes, http.RequestAborted);
        string content = body.String("content") ?? throw ApiException.BadRequest("'content' is required", "content");
        if (content.Length > MaxTokenizeChars)
            throw ApiException.BadRequest($"'content' may hold at most {MaxTokenizeChars} characters, got {content.Length}", "content");
        bool addSpecial = body.Bool("add_special") ?? false;
        bool withPieces = body.Bool("with_pieces") ?? false;
        // llama.cpp's /tokenize parses control tokens written in the text unless told not to; it generates nothing.
        bool parseSpecial = body.Bool("parse_special") ?? true;
        using var lease = await engine.AcquireAsync(body.String("model"), null, null, http.RequestAborted);
        var tokenizer = Tokenizer(lease.Model);
        int[] tokens = tokenizer.Encode(content, addSpecial, parseSpecial);
        await WriteJsonAsync(http, 200, json =>
        {
            json.WriteStartObject();
            json.WriteStartArray("tokens");
            foreach (int id in tokens)
            {
                if (!withPieces)
                {
                    json.WriteNumberValue(id);
                    continue;
                }
                json.WriteStartObject();
                json.WriteNumber("id", id);
                json.WriteString("piece", Encoding.UTF8.GetString(tokenizer.TokenBytes(id)));
                json.WriteEndObject();
            }
            json.WriteEndArray();
            json.WriteEndObject();
        });
    }

    private static async Task DetokenizeAsync(HttpContext http, VeloEngine engine)
    {
        using var body = await RequestBody.ReadAsync(http.Request, TokenizerBodyBytes, http.RequestAborted);
        using var lease = await engine.AcquireAsync(body.String("model"), null, null, http.RequestAborted);
        var tokenizer = Tokenizer(lease.Model);
        if (body.Field("tokens") is not { ValueKind: JsonValueKind.Array } list) throw RequestBody.WrongType("tokens", "a list of token ids");
        if (list.GetArrayLength() > MaxDetokenizeTokens)
            throw ApiException.BadRequest($"'tokens' may hold at most {MaxDetokenizeTokens} ids, got {list.GetArrayLength()}", "tokens");
        var tokens = new List<int>();
        foreach (var item in list.EnumerateArray())
        {
            if (item.ValueKind != JsonValueKind.Number || !item.TryGetInt32(out int id) || (uint)id >= (uint)tokenizer.VocabSize)
                throw ApiException.BadRequest($"'tokens' must hold token ids between 0 and {tokenizer.VocabSize - 1}", "tokens");
            tokens.Add(id);
        }
        string content = tokenizer.Decode(tokens.ToArray());
        await WriteJsonAsync(http, 200, json =>
        {
            json.WriteStartObject();
            json.WriteString("content", content);
            json.WriteEndObject();
        });
    }

    /// <summary>A model's tokenizer: its decoder's, or its encoder's.</summary>
    private static Velo.Text.ITokenizer Tokenizer(ServedModel model) => model.Generator?.Tokenizer ?? model.Embeddings!.Tokenizer;

    private static async Task MetricsAsync(HttpContext http, VeloEngine engine)
    {
        // The loaded decoders together: each has its own slots and queue. A route between sizes only passes requests to
        // two of them, which are counted on their own.
        var models = engine.Models.Models;
        var all = models.Select(model => model.Loaded?.Generator).OfType<Velo.Generation.IGenerationService>().ToList();
        var generators = all.Where(g => g is not Velo.Generation.CascadeGenerationService).ToList();
        string text = engine.Metrics.Render(generators.Sum(g => g.QueueLength), generators.Sum(g => g.ActiveSequences), generators.Sum(g => g.Parallel),
            generators.Sum(g => g.CancelledRequests), models.Count(model => model.Loaded != null), models.Sum(model => model.ReservedBytes),
            generators.Aggregate(default(Velo.Generation.SpeculationCounters), (sum, g) => sum + g.Speculation));
        text += ServerMetrics.RenderRoutes(all.OfType<Velo.Generation.CascadeGenerationService>());
        http.Response.ContentType = "text/plain; version=0.0.4; charset=utf-8";
        await http.Response.WriteAsync(text, http.RequestAborted);
    }

    internal static async Task WriteJsonAsync(HttpContext http, int status, Action<Utf8JsonWriter> write)
    {
        http.Response.StatusCode = status;
        http.Response.ContentType = "application/json";
        await using var json = new Utf8JsonWriter(http.Response.Body, JsonOutput.Options);
        write(json);
    }
}
