using System.Globalization;
using System.Reflection;
using System.Text.Json;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;
using Velo.Generation;

namespace Velo.Server.Ollama;

/// <summary>
/// Ollama's API beside OpenAI's: <c>/api/chat</c>, <c>/api/generate</c> (NDJSON streams, on by default), <c>/api/tags</c>,
/// <c>/api/show</c>, <c>/api/ps</c>, <c>/api/embed</c> and <c>/api/version</c>, so Ollama's clients work against
/// <c>velo serve</c>. Errors come as Ollama's <c>{"error": "..."}</c> with a 4xx or 5xx status.
/// </summary>
internal static class OllamaEndpoints
{
    /// <summary>Velo's version without the source revision, for <c>/api/version</c>.</summary>
    public static string Version { get; } = BuildInfo.Split('+')[0];

    /// <summary>Velo's version with the source revision it was built from, when the build recorded one.</summary>
    public static string BuildInfo =>
        typeof(OllamaEndpoints).Assembly.GetCustomAttribute<AssemblyInformationalVersionAttribute>()?.InformationalVersion ?? "unknown";

    public static void MapOllama(IEndpointRouteBuilder endpoints, VeloEngine engine)
    {
        endpoints.MapPost("/api/chat", Handle(engine, "/api/chat", http => OllamaGeneration.ChatAsync(http, engine)));
        endpoints.MapPost("/api/generate", Handle(engine, "/api/generate", http => OllamaGeneration.GenerateAsync(http, engine)));
        endpoints.MapPost("/api/embed", Handle(engine, "/api/embed", http => EmbedAsync(http, engine)));
        endpoints.MapPost("/api/show", Handle(engine, "/api/show", http => ShowAsync(http, engine)));
        endpoints.MapGet("/api/tags", Handle(engine, "/api/tags", http => ModelListAsync(http, engine, running: false)));
        endpoints.MapGet("/api/ps", Handle(engine, "/api/ps", http => ModelListAsync(http, engine, running: true)));
        endpoints.MapGet("/api/version", Handle(engine, "/api/version", http => WriteJsonAsync(http, json =>
        {
            json.WriteStartObject();
            json.WriteString("version", Version);
            json.WriteEndObject();
        })));
    }

    /// <summary>The OpenAI routes' API key and JSON checks and error handling, with Ollama's error body.</summary>
    private static RequestDelegate Handle(VeloEngine engine, string route, Func<HttpContext, Task> handler) =>
        VeloEndpoints.Handle(engine, route, needsKey: true, handler, (response, error) => WriteErrorAsync(response, error.Status, error.Message));

    /// <summary>Ollama's error body: <c>{"error": "message"}</c>.</summary>
    public static void WriteError(Utf8JsonWriter json, string message)
    {
        json.WriteStartObject();
        json.WriteString("error", message);
        json.WriteEndObject();
    }

    public static async Task WriteErrorAsync(HttpResponse response, int status, string message)
    {
        response.StatusCode = status;
        response.ContentType = "application/json; charset=utf-8";
        await using var json = new Utf8JsonWriter(response.Body, JsonOutput.Options);
        WriteError(json, message);
    }

    /// <summary>
    /// Refuses request fields this server does not know, naming them, instead of ignoring them. A null or empty value
    /// (<c>{}</c>, <c>[]</c>, <c>""</c>) asks for nothing and passes: clients send such leftovers, as OllamaSharp sends
    /// its <c>"CustomHeaders": {}</c>.
    /// </summary>
    public static void RefuseUnknownFields(RequestBody body, HashSet<string> known)
    {
        foreach (var field in body.Root.EnumerateObject())
            if (!known.Contains(field.Name) && !IsEmpty(field.Value))
                throw ApiException.BadRequest($"unknown field \"{field.Name}\"", field.Name);
    }

    public static bool IsEmpty(JsonElement value) => value.ValueKind switch
    {
        JsonValueKind.Null => true,
        JsonValueKind.Object => !value.EnumerateObject().Any(),
        JsonValueKind.Array => value.GetArrayLength() == 0,
        JsonValueKind.String => value.GetString()!.Length == 0,
        _ => false,
    };

    /// <summary>The served model, named as Ollama names it (a bare name means its <c>latest</c> tag).</summary>
    public static void CheckModel(RequestBody body, VeloEngine engine)
    {
        string model = body.String("model") ?? body.String("name") ?? "";
        if (model.Length == 0) throw ApiException.BadRequest("model is required", "model");
        if (model != engine.ModelId && model != engine.ModelId + ":latest")
            throw new ApiException(404, $"model \"{model}\" not found; this server serves \"{engine.ModelId}\"", "model");
    }

    /// <summary>Ollama's keep_alive: how long the model stays loaded. velo serve keeps its one model loaded, so only a
    /// request to unload it (0) cannot be honoured.</summary>
    public static void CheckKeepAlive(RequestBody body)
    {
        if (body.Field("keep_alive") is not { } keepAlive) return;
        bool unload = keepAlive.ValueKind switch
        {
            JsonValueKind.Number => keepAlive.TryGetDouble(out double seconds) && seconds == 0,
            JsonValueKind.String => keepAlive.GetString() is "0" or "0s" or "0m" or "0h",
            _ => throw RequestBody.WrongType("keep_alive", "a duration (a number of seconds or a string such as \"5m\")"),
        };
        if (unload) throw ApiException.BadRequest("keep_alive 0 would unload the model; velo serve keeps its model loaded while it runs", "keep_alive");
    }

    public static string Timestamp(DateTimeOffset time) => time.UtcDateTime.ToString("yyyy-MM-ddTHH:mm:ss.fffffffZ", CultureInfo.InvariantCulture);

    private static readonly HashSet<string> ShowFields = ["model", "name", "verbose"];

    private static async Task ShowAsync(HttpContext http, VeloEngine engine)
    {
        using var body = await RequestBody.ReadAsync(http.Request, VeloEndpoints.TokenizerBodyBytes, http.RequestAborted);
        RefuseUnknownFields(body, ShowFields);
        CheckModel(body, engine);
        if (body.Bool("verbose") == true) throw ApiException.BadRequest("verbose is not supported: velo serve shows no tokenizer arrays", "verbose");
        if (!engine.IsReady) throw engine.NotReadyError();
        var info = engine.LoadedGenerator?.ModelInfo;
        await WriteJsonAsync(http, json =>
        {
            json.WriteStartObject();
            json.WriteString("modelfile", "");
            json.WriteString("parameters", "");
            json.WriteString("template", "");
            WriteDetails(json, engine);
            json.WriteStartObject("model_info");
            if (info != null)
            {
                json.WriteString("general.architecture", info.Architecture);
                json.WriteNumber($"{info.Architecture}.context_length", info.ContextLength);
                json.WriteNumber($"{info.Architecture}.embedding_length", info.EmbeddingLength);
                json.WriteNumber($"{info.Architecture}.block_count", info.Layers.Count);
                json.WriteNumber($"{info.Architecture}.vocab_size", info.VocabSize);
            }
            else if (engine.Embeddings is { } embeddings)
            {
                json.WriteNumber("embedding_length", embeddings.Dimensions);
                json.WriteNumber("context_length", embeddings.MaxInputTokens);
            }
            json.WriteEndObject();
            json.WriteStartArray("capabilities");
            json.WriteStringValue(info != null ? "completion" : "embedding");
            json.WriteEndArray();
            json.WriteString("modified_at", Timestamp(ModifiedAt(engine)));
            json.WriteEndObject();
        });
    }

    private static Task ModelListAsync(HttpContext http, VeloEngine engine, bool running)
    {
        if (!engine.IsReady) throw engine.NotReadyError();
        return WriteJsonAsync(http, json =>
        {
            json.WriteStartObject();
            json.WriteStartArray("models");
            json.WriteStartObject();
            json.WriteString("name", engine.ModelId);
            json.WriteString("model", engine.ModelId);
            json.WriteNumber("size", ModelFileBytes(engine));
            json.WriteString("digest", engine.ModelFileSha256 ?? "");
            WriteDetails(json, engine);
            if (running)
            {
                // Loaded for as long as the server runs.
                json.WriteString("expires_at", Timestamp(DateTimeOffset.MaxValue));
                json.WriteNumber("size_vram", 0);
                json.WriteNumber("context_length", engine.LoadedGenerator?.ContextLength ?? engine.Embeddings!.MaxInputTokens);
            }
            else
            {
                json.WriteString("modified_at", Timestamp(ModifiedAt(engine)));
            }
            json.WriteEndObject();
            json.WriteEndArray();
            json.WriteEndObject();
        });
    }

    private static void WriteDetails(Utf8JsonWriter json, VeloEngine engine)
    {
        string family = engine.LoadedGenerator?.ModelInfo.Architecture ?? "bert";
        json.WriteStartObject("details");
        json.WriteString("parent_model", "");
        json.WriteString("format", "gguf");
        json.WriteString("family", family);
        json.WriteStartArray("families");
        json.WriteStringValue(family);
        json.WriteEndArray();
        json.WriteString("parameter_size", "");
        json.WriteString("quantization_level", "");
        json.WriteEndObject();
    }

    private static long ModelFileBytes(VeloEngine engine) =>
        engine.ModelPath is { } path && File.Exists(path) ? new FileInfo(path).Length : 0;

    private static DateTimeOffset ModifiedAt(VeloEngine engine) =>
        engine.ModelPath is { } path && File.Exists(path) ? File.GetLastWriteTimeUtc(path) : engine.Created;

    private static readonly HashSet<string> EmbedFields = ["model", "input", "truncate", "dimensions", "options", "keep_alive"];

    /// <summary>Largest /api/embed body, as for /v1/embeddings.</summary>
    private const long MaxEmbedBodyBytes = 16L << 20;

    private const int MaxEmbedInputs = 2048;

    private static async Task EmbedAsync(HttpContext http, VeloEngine engine)
    {
        using var body = await RequestBody.ReadAsync(http.Request, MaxEmbedBodyBytes, http.RequestAborted);
        RefuseUnknownFields(body, EmbedFields);
        CheckModel(body, engine);
        CheckKeepAlive(body);
        if (!engine.IsReady) throw engine.NotReadyError();
        var embeddings = engine.Embeddings ?? throw ApiException.BadRequest(
            $"\"{engine.ModelId}\" is a decoder and has no embeddings; serve an encoder (such as a bert GGUF) for /api/embed", "model");
        if (body.Field("options") is { } options && (options.ValueKind != JsonValueKind.Object || options.EnumerateObject().Any(o => o.Value.ValueKind != JsonValueKind.Null)))
            throw ApiException.BadRequest("options are not supported for embeddings", "options");
        bool truncate = body.Bool("truncate") ?? true;
        int dimensions = (int)(body.Integer("dimensions", 1, embeddings.Dimensions) ?? embeddings.Dimensions);
        var texts = new List<string>();
        switch (body.Field("input"))
        {
            case { ValueKind: JsonValueKind.String } one:
                texts.Add(one.GetString()!);
                break;
            case { ValueKind: JsonValueKind.Array } many:
                foreach (var item in many.EnumerateArray())
                {
                    if (item.ValueKind != JsonValueKind.String) throw RequestBody.WrongType("input", "a string or a list of strings");
                    texts.Add(item.GetString()!);
                }
                if (texts.Count > MaxEmbedInputs) throw ApiException.BadRequest($"input may hold at most {MaxEmbedInputs} texts, got {texts.Count}", "input");
                break;
            case null:
                throw ApiException.BadRequest("input is required", "input");
            default:
                throw RequestBody.WrongType("input", "a string or a list of strings");
        }
        var clock = System.Diagnostics.Stopwatch.StartNew();
        var inputs = new int[texts.Count][];
        for (int i = 0; i < texts.Count; i++)
        {
            // Ollama cuts inputs to the context unless told not to, then refuses them.
            if (!truncate && embeddings.Tokenizer.Encode(texts[i], addSpecial: true).Length > embeddings.MaxInputTokens)
                throw ApiException.BadRequest($"input {i} is longer than the model's {embeddings.MaxInputTokens} tokens and truncate is false", "input");
            inputs[i] = embeddings.Tokenize(texts[i]);
        }
        float[][] vectors = inputs.Length > 0 ? embeddings.EmbedTokens(inputs) : [];
        long tokens = inputs.Sum(input => (long)input.Length);
        RequestLogEntry.Of(http)?.Model = engine.ModelId;
        RequestLogEntry.Of(http)?.PromptTokens = (int)Math.Min(tokens, int.MaxValue);
        await WriteJsonAsync(http, json =>
        {
            json.WriteStartObject();
            json.WriteString("model", engine.ModelId);
            json.WriteStartArray("embeddings");
            foreach (var vector in vectors)
            {
                json.WriteStartArray();
                foreach (float v in Velo.Inference.VeloEmbeddingGenerator.WithDimensions(vector, dimensions)) json.WriteNumberValue(v);
                json.WriteEndArray();
            }
            json.WriteEndArray();
            json.WriteNumber("total_duration", Nanoseconds(clock.Elapsed));
            json.WriteNumber("load_duration", 0);
            json.WriteNumber("prompt_eval_count", tokens);
            json.WriteEndObject();
        });
    }

    public static long Nanoseconds(TimeSpan time) => time.Ticks * 100;

    public static async Task WriteJsonAsync(HttpContext http, Action<Utf8JsonWriter> write)
    {
        http.Response.StatusCode = 200;
        http.Response.ContentType = "application/json; charset=utf-8";
        await using var json = new Utf8JsonWriter(http.Response.Body, JsonOutput.Options);
        write(json);
    }
}
