using Velo.Sampling.Grammars;
using System.Text;
using System.Text.Json;
using Microsoft.AspNetCore.Http;
using Velo.Generation;
using Velo.Text.ChatTemplates;

namespace Velo.Server.Ollama;

/// <summary>
/// <c>POST /api/chat</c> and <c>POST /api/generate</c>: Ollama's requests turned into a <see cref="GenerationRequest"/>
/// for the engine's <see cref="IGenerationService"/>, answered as one JSON object or (Ollama's default) a stream of
/// JSON lines ending with one that has <c>"done": true</c> and the counts and durations.
/// </summary>
internal static class OllamaGeneration
{
    private static readonly HashSet<string> ChatFields = ["model", "messages", "stream", "format", "options", "keep_alive", "think", "tools"];
    private static readonly HashSet<string> GenerateFields =
        ["model", "prompt", "system", "raw", "stream", "format", "options", "keep_alive", "think", "images", "suffix", "template", "context"];
    private static readonly HashSet<string> MessageFields = ["role", "content", "images", "tool_calls", "thinking", "tool_name"];
    private static readonly HashSet<string> Roles = ["system", "user", "assistant", "tool"];

    public static async Task ChatAsync(HttpContext http, VeloEngine engine)
    {
        using var body = await RequestBody.ReadAsync(http.Request, engine.CompletionBodyLimit, http.RequestAborted);
        OllamaEndpoints.RefuseUnknownFields(body, ChatFields);
        string name = OllamaEndpoints.ModelName(body);
        var keepAlive = OllamaEndpoints.KeepAlive(body);
        RefuseUnsupported(body);
        var messages = Messages(body);
        using var lease = await engine.AcquireAsync(name, ModelKind.Decoder, keepAlive, http.RequestAborted);
        var generator = lease.Generator;
        CompletionEndpoints.RejectByBytes(generator, messages.Sum(m => (long)Encoding.UTF8.GetByteCount(m.Content)), "messages");
        var (options, context) = OllamaOptions.Parse(body.Field("options"), generator.ContextLength, generator.Chat.StopStrings);
        int[] prompt = Format(generator, messages);
        options = OllamaOptions.FitToContext(options, prompt.Length, context, generator.ContextLength);
        await RespondAsync(http, engine, lease.Model.Id, generator, body, new GenerationRequest { Prompt = prompt, Options = options with { Grammar = FormatGrammar(body) } }, chat: true);
    }

    public static async Task GenerateAsync(HttpContext http, VeloEngine engine)
    {
        using var body = await RequestBody.ReadAsync(http.Request, engine.CompletionBodyLimit, http.RequestAborted);
        OllamaEndpoints.RefuseUnknownFields(body, GenerateFields);
        string name = OllamaEndpoints.ModelName(body);
        var keepAlive = OllamaEndpoints.KeepAlive(body);
        RefuseUnsupported(body);
        foreach (string field in (string[])["suffix", "template"])
            if (body.String(field) is { Length: > 0 }) throw ApiException.BadRequest($"{field} is not supported", field);
        if (body.Field("images") is { } images && (images.ValueKind != JsonValueKind.Array || images.GetArrayLength() > 0))
            throw ApiException.BadRequest("images are not supported: the model reads text only", "images");
        if (body.Field("context") is { } earlier && (earlier.ValueKind != JsonValueKind.Array || earlier.GetArrayLength() > 0))
            throw ApiException.BadRequest("context (Ollama's deprecated token memory) is not supported; send the conversation to /api/chat", "context");
        string text = body.String("prompt") ?? "";
        string? system = body.String("system");
        bool raw = body.Bool("raw") ?? false;
        if (raw && system != null) throw ApiException.BadRequest("system has no place in a raw prompt, which skips the chat template", "system");
        using var lease = await engine.AcquireAsync(name, ModelKind.Decoder, keepAlive, http.RequestAborted);
        var generator = lease.Generator;
        if (text.Length == 0)
        {
            // Ollama answers an empty prompt by loading the model, or with keep_alive 0 by unloading it (once this lease ends).
            await WriteLineAsync(http, json => WriteDone(json, lease.Model.Id, chat: false, keepAlive == TimeSpan.Zero ? "unload" : "load", null, null));
            return;
        }
        CompletionEndpoints.RejectByBytes(generator, Encoding.UTF8.GetByteCount(text) + Encoding.UTF8.GetByteCount(system ?? ""), "prompt");
        var (options, context) = OllamaOptions.Parse(body.Field("options"), generator.ContextLength, raw ? [] : generator.Chat.StopStrings);
        // A raw prompt is plain text, as on /v1/completions: no text a client sends becomes a control token.
        int[] prompt = raw ? generator.Tokenizer.Encode(text, addSpecial: true)
            : Format(generator, [.. system != null ? [new ChatMessage("system", system)] : Array.Empty<ChatMessage>(), new ChatMessage("user", text)]);
        options = OllamaOptions.FitToContext(options, prompt.Length, context, generator.ContextLength);
        await RespondAsync(http, engine, lease.Model.Id, generator, body, new GenerationRequest { Prompt = prompt, Options = options with { Grammar = FormatGrammar(body) } }, chat: false);
    }

    /// <summary>Ollama's <c>format</c>: <c>"json"</c> for any JSON object, or a JSON Schema the output must satisfy.</summary>
    private static Grammar? FormatGrammar(RequestBody body)
    {
        if (body.Field("format") is not { } format || format.ValueKind == JsonValueKind.Null) return null;
        return format.ValueKind switch
        {
            JsonValueKind.String when format.GetString() == "" => null,
            JsonValueKind.String when format.GetString() == "json" => Grammar.AnyJsonObject(),
            JsonValueKind.Object => OutputConstraints.FromSchema("format", format),
            _ => throw ApiException.BadRequest("format must be \"json\" or a JSON Schema object", "format"),
        };
    }

    /// <summary>What Ollama offers and Velo cannot honour yet, refused by name; their off values are accepted.</summary>
    private static void RefuseUnsupported(RequestBody body)
    {
        if (body.Bool("think") == true) throw ApiException.BadRequest("think is not supported: velo serve does not separate thinking", "think");
        if (body.Field("tools") is { } tools && (tools.ValueKind != JsonValueKind.Array || tools.GetArrayLength() > 0))
            throw ApiException.BadRequest("tools (tool calling) are not supported yet", "tools");
        if (body.Field("stream") is { } stream && stream.ValueKind is not (JsonValueKind.True or JsonValueKind.False))
            throw RequestBody.WrongType("stream", "a boolean");
    }

    private static List<ChatMessage> Messages(RequestBody body)
    {
        if (body.Field("messages") is not { } list) throw ApiException.BadRequest("messages is required", "messages");
        if (list.ValueKind != JsonValueKind.Array) throw RequestBody.WrongType("messages", "a list of messages");
        var messages = new List<ChatMessage>();
        foreach (var item in list.EnumerateArray())
        {
            string param = $"messages[{messages.Count}]";
            if (item.ValueKind != JsonValueKind.Object) throw RequestBody.WrongType(param, "an object");
            foreach (var field in item.EnumerateObject())
            {
                if (field.Value.ValueKind == JsonValueKind.Null) continue;
                if (!MessageFields.Contains(field.Name)) throw ApiException.BadRequest($"unknown field \"{field.Name}\" in {param}", $"{param}.{field.Name}");
                bool empty = field.Value.ValueKind switch
                {
                    JsonValueKind.Array => field.Value.GetArrayLength() == 0,
                    JsonValueKind.String => field.Value.GetString()!.Length == 0,
                    _ => false,
                };
                if (field.Name is "images" or "tool_calls" or "thinking" or "tool_name" && !empty)
                    throw ApiException.BadRequest($"{param}.{field.Name} is not supported: the model reads text messages only", $"{param}.{field.Name}");
            }
            if (!item.TryGetProperty("role", out var role) || role.ValueKind != JsonValueKind.String || !Roles.Contains(role.GetString()!))
                throw ApiException.BadRequest($"{param}.role must be one of {string.Join(", ", Roles)}", $"{param}.role");
            string content = "";
            if (item.TryGetProperty("content", out var text) && text.ValueKind != JsonValueKind.Null)
                content = text.ValueKind == JsonValueKind.String ? text.GetString()! : throw RequestBody.WrongType($"{param}.content", "a string");
            messages.Add(new ChatMessage(role.GetString()!, content));
        }
        if (messages.Count == 0) throw ApiException.BadRequest("messages must hold at least one message", "messages");
        return messages;
    }

    private static int[] Format(IGenerationService generator, IReadOnlyList<ChatMessage> messages)
    {
        try
        {
            return generator.Chat.Format(messages);
        }
        catch (ChatTemplateException e)
        {
            throw ApiException.BadRequest($"the chat template rejected the messages: {e.Message}", "messages");
        }
        catch (ArgumentException e)
        {
            throw ApiException.BadRequest(e.Message, "messages");
        }
    }

    private static async Task RespondAsync(HttpContext http, VeloEngine engine, string modelId, IGenerationService generator, RequestBody body,
        GenerationRequest request, bool chat)
    {
        bool stream = body.Bool("stream") ?? true;
        // Cancelled when the client disconnects, when the server stops, and when this handler leaves for any reason.
        using var abandon = CancellationTokenSource.CreateLinkedTokenSource(http.RequestAborted, engine.Stopping);
        GenerationStream generation;
        try
        {
            generation = generator.Submit(request, abandon.Token);
        }
        catch (PromptTooLongException e)
        {
            throw ApiException.BadRequest(e.Message, chat ? "messages" : "prompt");
        }
        catch (SchedulerBusyException e)
        {
            http.Response.Headers.RetryAfter = "1";
            throw new ApiException(503, e.Message);
        }
        catch (ArgumentException e)
        {
            throw ApiException.BadRequest(e.Message);
        }

        try
        {
            var observer = new GenerationObserver(engine, modelId, http);
            if (!stream)
            {
                var text = new StringBuilder();
                await foreach (var piece in generation.Pieces.ReadAllAsync(http.RequestAborted))
                {
                    observer.Observe(piece);
                    text.Append(piece.Text);
                }
                var whole = await generation.Completion;
                observer.Finish(whole);
                await WriteLineAsync(http, json => WriteDone(json, modelId, chat, Reason(whole), text.ToString(), (whole, observer.FirstToken)));
                return;
            }

            http.Response.StatusCode = 200;
            http.Response.ContentType = "application/x-ndjson";
            var lines = new JsonLines(http.Response);
            try
            {
                var pieces = generation.Pieces;
                while (await pieces.WaitToReadAsync(http.RequestAborted))
                {
                    // Everything already generated goes out in one flush: a client that fell behind catches up in one write.
                    while (pieces.TryRead(out var piece))
                    {
                        observer.Observe(piece);
                        if (piece.Text.Length == 0) continue;
                        lines.Write(json => WriteChunk(json, modelId, chat, piece.Text));
                    }
                    await lines.FlushAsync(http.RequestAborted);
                }
                var summary = await generation.Completion;
                observer.Finish(summary);
                lines.Write(json => WriteDone(json, modelId, chat, Reason(summary), chat ? "" : null, (summary, observer.FirstToken)));
                await lines.FlushAsync(http.RequestAborted);
            }
            catch (Exception e) when (!http.RequestAborted.IsCancellationRequested && (e is not OperationCanceledException || engine.IsStopping))
            {
                // The status line is gone; as Ollama does, the error ends the stream as a line of its own.
                string message = e is OperationCanceledException ? ServerInfo.ShuttingDownError().Message : $"generation failed: {e.Message}";
                lines.Write(json => OllamaEndpoints.WriteError(json, message));
                await lines.FlushAsync(CancellationToken.None);
            }
        }
        finally
        {
            // However the response ends (finished, client gone, write failed), the sequence must not go on generating.
            abandon.Cancel();
        }
    }

    private static string Reason(GenerationSummary summary) => summary.FinishReason == FinishReason.Length ? "length" : "stop";

    private static void WriteChunk(Utf8JsonWriter json, string model, bool chat, string text)
    {
        json.WriteStartObject();
        json.WriteString("model", model);
        json.WriteString("created_at", OllamaEndpoints.Timestamp(DateTimeOffset.UtcNow));
        WriteText(json, chat, text);
        json.WriteBoolean("done", false);
        json.WriteEndObject();
    }

    private static void WriteText(Utf8JsonWriter json, bool chat, string text)
    {
        if (!chat)
        {
            json.WriteString("response", text);
            return;
        }
        json.WriteStartObject("message");
        json.WriteString("role", "assistant");
        json.WriteString("content", text);
        json.WriteEndObject();
    }

    /// <summary>The last line: <c>done</c>, why, and Ollama's counts and durations (nanoseconds).</summary>
    private static void WriteDone(Utf8JsonWriter json, string model, bool chat, string reason, string? text, (GenerationSummary Summary, TimeSpan? FirstToken)? stats)
    {
        json.WriteStartObject();
        json.WriteString("model", model);
        json.WriteString("created_at", OllamaEndpoints.Timestamp(DateTimeOffset.UtcNow));
        WriteText(json, chat, text ?? "");
        json.WriteBoolean("done", true);
        json.WriteString("done_reason", reason);
        if (stats is var (summary, firstToken))
        {
            // The prompt's time is the time to the first token (queueing included); the rest is generation.
            var prompt = firstToken ?? summary.Duration;
            json.WriteNumber("total_duration", OllamaEndpoints.Nanoseconds(summary.Duration));
            json.WriteNumber("load_duration", 0);
            json.WriteNumber("prompt_eval_count", summary.PromptTokens);
            json.WriteNumber("prompt_eval_duration", OllamaEndpoints.Nanoseconds(prompt));
            json.WriteNumber("eval_count", summary.GeneratedTokens);
            json.WriteNumber("eval_duration", OllamaEndpoints.Nanoseconds(summary.Duration - prompt));
        }
        json.WriteEndObject();
    }

    private static async Task WriteLineAsync(HttpContext http, Action<Utf8JsonWriter> write)
    {
        http.Response.StatusCode = 200;
        http.Response.ContentType = "application/json; charset=utf-8";
        var lines = new JsonLines(http.Response);
        lines.Write(write);
        await lines.FlushAsync(http.RequestAborted);
    }

    /// <summary>Newline-delimited JSON, buffered until a flush.</summary>
    private sealed class JsonLines(HttpResponse response)
    {
        private readonly MemoryStream _buffer = new();

        public void Write(Action<Utf8JsonWriter> write)
        {
            using (var json = new Utf8JsonWriter(_buffer, JsonOutput.Options)) write(json);
            _buffer.WriteByte((byte)'\n');
        }

        public async Task FlushAsync(CancellationToken cancellation)
        {
            await response.Body.WriteAsync(_buffer.GetBuffer().AsMemory(0, (int)_buffer.Length), cancellation);
            await response.Body.FlushAsync(cancellation);
            _buffer.SetLength(0);
        }
    }
}
