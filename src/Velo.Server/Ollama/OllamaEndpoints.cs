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

    /// <summary>The model a request names: Ollama requires one (a bare name means its <c>latest</c> tag).</summary>
    public static string ModelName(RequestBody body)
    {
        string model = body.String("model") ?? body.String("name") ?? "";
        return model.Length > 0 ? model : throw ApiException.BadRequest("model is required", "model");
    }

    /// <summary>
    /// Ollama's keep_alive: how long the model stays loaded once idle after this request. A number of seconds or a Go
    /// duration such as "5m" or "1h30m"; negative keeps it loaded for ever, 0 unloads it as soon as the request ends.
    /// Null when the request has none (the server's <c>--keep-alive</c> applies).
    /// </summary>
    public static TimeSpan? KeepAlive(RequestBody body)
    {
        const string expected = "a duration (a number of seconds or a string such as \"5m\")";
        switch (body.Field("keep_alive"))
        {
            case null or { ValueKind: JsonValueKind.Null }:
                return null;
            case { ValueKind: JsonValueKind.Number } number:
                if (!number.TryGetDouble(out double seconds) || !double.IsFinite(seconds)) throw RequestBody.WrongType("keep_alive", expected);
                return KeepAliveDuration.FromSeconds(seconds);
            case { ValueKind: JsonValueKind.String } text:
                return KeepAliveDuration.Parse(text.GetString()!) ?? throw RequestBody.WrongType("keep_alive", expected);
            default:
                throw RequestBody.WrongType("keep_alive", expected);
        }
    }

    public static string Timestamp(DateTimeOffset time) => time.UtcDateTime.ToString("yyyy-MM-ddTHH:mm:ss.fffffffZ", CultureInfo.InvariantCulture);

    private static readonly HashSet<string> ShowFields = ["model", "name", "verbose"];

    private static async Task ShowAsync(HttpContext http, VeloEngine engine)
    {
        using var body = await RequestBody.ReadAsync(http.Request, VeloEndpoints.TokenizerBodyBytes, http.RequestAborted);
        RefuseUnknownFields(body, ShowFields);
        string name = ModelName(body);
        if (body.Bool("verbose") == true) throw ApiException.BadRequest("verbose is not supported: velo serve shows no tokenizer arrays", "verbose");
        using var lease = await engine.AcquireAsync(name, null, null, http.RequestAborted);
        var model = engine.Models.Models.First(status => status.Loaded == lease.Model);
        var info = lease.Model.Generator?.ModelInfo;
        await WriteJsonAsync(http, json =>
        {
            json.WriteStartObject();
            json.WriteString("modelfile", "");
            json.WriteString("parameters", "");
            json.WriteString("template", "");
            WriteDetails(json, model);
            json.WriteStartObject("model_info");
            if (info != null)
            {
                json.WriteString("general.architecture", info.Architecture);
                json.WriteNumber($"{info.Architecture}.context_length", info.ContextLength);
                json.WriteNumber($"{info.Architecture}.embedding_length", info.EmbeddingLength);
                json.WriteNumber($"{info.Architecture}.block_count", info.Layers.Count);
                json.WriteNumber($"{info.Architecture}.vocab_size", info.VocabSize);
            }
            else if (lease.Model.Embeddings is { } embeddings)
            {
                json.WriteNumber("embedding_length", embeddings.Dimensions);
                json.WriteNumber("context_length", embeddings.MaxInputTokens);
            }
            json.WriteEndObject();
            json.WriteStartArray("capabilities");
            foreach (string capability in VeloEndpoints.Capabilities(model)) json.WriteStringValue(capability);
            json.WriteEndArray();
            json.WriteString("modified_at", Timestamp(ModifiedAt(engine, model)));
            json.WriteEndObject();
        });
    }

    /// <summary><c>/api/tags</c>: every configured model; <c>/api/ps</c>: the loaded ones, with when each unloads if idle.</summary>
    private static Task ModelListAsync(HttpContext http, VeloEngine engine, bool running)
    {
        var models = engine.Models.Models.Where(model => !running || model.Loaded != null).ToList();
        return WriteJsonAsync(http, json =>
        {
            json.WriteStartObject();
            json.WriteStartArray("models");
            foreach (var model in models)
            {
                json.WriteStartObject();
                json.WriteString("name", model.Name);
                json.WriteString("model", model.Name);
                // Running: the memory its plan reserved (a model built in code has none: its file's size).
                json.WriteNumber("size", running && model.ReservedBytes > 0 ? model.ReservedBytes : ModelFileBytes(model));
                json.WriteString("digest", model.Path != null && File.Exists(model.Path) ? engine.FileSha256(model.Path) : "");
                WriteDetails(json, model);
                if (running)
                {
                    json.WriteString("expires_at", Timestamp(model.ExpiresAt ?? DateTimeOffset.MaxValue));
                    json.WriteNumber("size_vram", 0);
                    if (model.Loaded!.Generator is { } generator) json.WriteNumber("context_length", generator.ContextLength);
                    else json.WriteNumber("context_length", model.Loaded.Embeddings!.MaxInputTokens);
                }
                else
                {
                    json.WriteString("modified_at", Timestamp(ModifiedAt(engine, model)));
                }
                json.WriteEndObject();
            }
            json.WriteEndArray();
            json.WriteEndObject();
        });
    }

    private static void WriteDetails(Utf8JsonWriter json, ModelStatus model)
    {
        string family = model.Loaded?.Generator?.ModelInfo.Architecture ?? (model.Kind == ModelKind.Encoder ? "bert" : "");
        json.WriteStartObject("details");
        json.WriteString("parent_model", "");
        json.WriteString("format", "gguf");
        json.WriteString("family", family);
        json.WriteStartArray("families");
        if (family.Length > 0) json.WriteStringValue(family);
        json.WriteEndArray();
        json.WriteString("parameter_size", "");
        json.WriteString("quantization_level", "");
        json.WriteEndObject();
    }

    private static long ModelFileBytes(ModelStatus model) =>
        model.Path is { } path && File.Exists(path) ? new FileInfo(path).Length : 0;

    private static DateTimeOffset ModifiedAt(VeloEngine engine, ModelStatus model) =>
        model.Path is { } path && File.Exists(path) ? File.GetLastWriteTimeUtc(path) : engine.Created;

    private static readonly HashSet<string> EmbedFields = ["model", "input", "truncate", "dimensions", "options", "keep_alive"];

    /// <summary>Largest /api/embed body, as for /v1/embeddings.</summary>
    private const long MaxEmbedBodyBytes = 16L << 20;

    private const int MaxEmbedInputs = 2048;

    private static async Task EmbedAsync(HttpContext http, VeloEngine engine)
    {
        using var body = await RequestBody.ReadAsync(http.Request, MaxEmbedBodyBytes, http.RequestAborted);
        RefuseUnknownFields(body, EmbedFields);
        string name = ModelName(body);
        var keepAlive = KeepAlive(body);
        var clock = System.Diagnostics.Stopwatch.StartNew();
        using var lease = await engine.AcquireAsync(name, ModelKind.Encoder, keepAlive, http.RequestAborted);
        var loaded = clock.Elapsed;
        var embeddings = lease.Embeddings;
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
        RequestLogEntry.Of(http)?.Model = lease.Model.Id;
        RequestLogEntry.Of(http)?.PromptTokens = (int)Math.Min(tokens, int.MaxValue);
        await WriteJsonAsync(http, json =>
        {
            json.WriteStartObject();
            json.WriteString("model", lease.Model.Id);
            json.WriteStartArray("embeddings");
            foreach (var vector in vectors)
            {
                json.WriteStartArray();
                foreach (float v in Velo.Inference.VeloEmbeddingGenerator.WithDimensions(vector, dimensions)) json.WriteNumberValue(v);
                json.WriteEndArray();
            }
            json.WriteEndArray();
            json.WriteNumber("total_duration", Nanoseconds(clock.Elapsed));
            json.WriteNumber("load_duration", Nanoseconds(loaded));
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
