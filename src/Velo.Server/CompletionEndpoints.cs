using System.Text;
using System.Text.Json;
using Microsoft.AspNetCore.Http;
using Velo.Generation;
using Velo.Inference;
using Velo.Text.ChatTemplates;
using Velo.Tools;

namespace Velo.Server;

/// <summary><c>POST /v1/chat/completions</c> and <c>POST /v1/completions</c>, streaming (server-sent events) or not.</summary>
internal static class CompletionEndpoints
{
    private static readonly HashSet<string> Roles = ["system", "developer", "user", "assistant", "tool"];

    /// <summary>Request fields both routes read (or refuse by name with a reason of their own); any other is a 400.
    /// <c>user</c>, an end-user id OpenAI keeps for abuse monitoring, is accepted and has no effect on the answer.</summary>
    private static readonly string[] CommonFields =
    [
        "model", "stream", "stream_options", "max_tokens", "n", "stop", "seed", "temperature", "top_p", "top_k", "min_p",
        "presence_penalty", "frequency_penalty", "repeat_penalty", "logit_bias", "logprobs", "ignore_eos", "response_format",
        "grammar", "json_schema", "suffix", "best_of", "functions", "function_call", "user", "store", "modalities",
        "latency_budget",
    ];

    private static readonly HashSet<string> MessageFields = ["role", "content", "tool_calls", "tool_call_id"];

    private static readonly HashSet<string> ChatFields =
        [.. CommonFields, "messages", "max_completion_tokens", "top_logprobs", "tools", "tool_choice", "parallel_tool_calls"];

    private static readonly HashSet<string> CompletionFields =
        [.. CommonFields, "prompt", "echo", "parse_special", "tools", "tool_choice", "parallel_tool_calls"];

    public static async Task ChatAsync(HttpContext http, VeloEngine engine)
    {
        using var body = await RequestBody.ReadAsync(http.Request, engine.CompletionBodyLimit, http.RequestAborted);
        // The model first: a request to an encoder is told so, whatever else it holds.
        using var lease = await engine.AcquireAsync(body.String("model"), ModelKind.Decoder, null, http.RequestAborted);
        body.RefuseUnknownFields(ChatFields, "/v1/chat/completions");
        var generator = lease.Generator;
        var messages = Messages(body);
        // The template only adds text around the contents, so their bytes alone bound the prompt's tokens from below.
        RejectByBytes(generator, messages.Sum(message => (long)Encoding.UTF8.GetByteCount(message.Content)), "messages");
        var options = GenerationParameters.Parse(body, generator.ContextLength, generator.Chat.StopStrings);
        // With tool_choice "none" the tools are neither shown to the model nor looked for in its output.
        var tools = ToolParameters.Parse(body) is { IsActive: true } active ? active : null;
        var chat = generator.Chat;
        if (tools is { Choice.ForcesCall: true } && options.Grammar != null)
            throw ApiException.BadRequest("a forced 'tool_choice' constrains the output to the call: it cannot be combined with 'response_format', 'grammar' or 'json_schema'", "tool_choice");
        var toolGeneration = ToolCalling.Prepare(options, tools, chat.ToolFormat);
        bool logprobs = body.Bool("logprobs") ?? false;
        long? topLogprobs = body.Integer("top_logprobs", 0, GenerationRequest.MaxTopLogprobs);
        if (topLogprobs != null && !logprobs) throw ApiException.BadRequest("'top_logprobs' needs 'logprobs' set to true", "top_logprobs");
        int[] prompt;
        try
        {
            prompt = chat.Format(messages, tools?.Tools);
        }
        catch (ChatTemplateException e)
        {
            throw ApiException.BadRequest($"the chat template rejected the messages: {e.Message}", "messages");
        }
        catch (ArgumentException e)
        {
            throw ApiException.BadRequest(e.Message, "messages");
        }
        var request = new GenerationRequest
        {
            Prompt = prompt, Options = toolGeneration.Options, TopLogprobs = logprobs ? (int)(topLogprobs ?? 0) : null,
            LogitBias = GenerationParameters.LogitBias(body, generator.ModelInfo.VocabSize),
            LatencyBudget = GenerationParameters.LatencyBudget(body),
        };
        await GenerateAsync(http, engine, generator, lease.Model.Id, body, request, new ChatShape(lease.Model.Id), tools, chat.ToolFormat);
    }

    public static async Task CompletionAsync(HttpContext http, VeloEngine engine)
    {
        using var body = await RequestBody.ReadAsync(http.Request, engine.CompletionBodyLimit, http.RequestAborted);
        // The model first: a request to an encoder is told so, whatever else it holds.
        using var lease = await engine.AcquireAsync(body.String("model"), ModelKind.Decoder, null, http.RequestAborted);
        body.RefuseUnknownFields(CompletionFields, "/v1/completions");
        var generator = lease.Generator;
        string prompt = body.Field("prompt") switch
        {
            { ValueKind: JsonValueKind.String } text => text.GetString()!,
            null => throw ApiException.BadRequest("'prompt' is required", "prompt"),
            _ => throw RequestBody.WrongType("prompt", "a string"),
        };
        RejectByBytes(generator, Encoding.UTF8.GetByteCount(prompt), "prompt");
        if (body.Bool("echo") == true) throw ApiException.BadRequest("'echo' is not supported", "echo");
        foreach (string name in (string[])["tools", "tool_choice", "parallel_tool_calls"])
            if (body.Field(name) != null) throw ApiException.BadRequest($"'{name}' belongs to /v1/chat/completions, not /v1/completions", name);
        var options = GenerationParameters.Parse(body, generator.ContextLength, []);
        long? logprobs = body.Integer("logprobs", 0, 5);
        // The prompt is plain text unless the caller asks for control tokens written in it to be parsed (llama.cpp's
        // completion endpoint always parses them, which lets any text forge turns and end-of-text markers).
        bool parseSpecial = body.Bool("parse_special") ?? false;
        int[] tokens = generator.Tokenizer.Encode(prompt, addSpecial: true, parseSpecial);
        if (tokens.Length == 0) throw ApiException.BadRequest("the prompt is empty", "prompt");
        var request = new GenerationRequest
        {
            Prompt = tokens, Options = options, TopLogprobs = logprobs is long n ? (int)n : null,
            LogitBias = GenerationParameters.LogitBias(body, generator.ModelInfo.VocabSize),
            LatencyBudget = GenerationParameters.LatencyBudget(body),
        };
        await GenerateAsync(http, engine, generator, lease.Model.Id, body, request, new CompletionShape(lease.Model.Id), null, null);
    }

    /// <summary>
    /// Refuses a prompt whose UTF-8 bytes already prove it longer than the context, before it is tokenized: no token
    /// stands for more than <see cref="Velo.Text.ITokenizer.MaxInputBytesPerToken"/> bytes of input, so a huge body
    /// costs no tokenizing time.
    /// </summary>
    internal static void RejectByBytes(IGenerationService generator, long promptBytes, string param)
    {
        int bytesPerToken = generator.Tokenizer.MaxInputBytesPerToken;
        int contextLength = generator.ContextLength;
        if (bytesPerToken > 0 && promptBytes / bytesPerToken >= contextLength)
            throw ApiException.BadRequest($"the prompt has at least {promptBytes / bytesPerToken} tokens but the context holds {contextLength}; " +
                "shorten the prompt or raise --ctx", param, "context_length_exceeded");
    }

    private static List<ChatMessage> Messages(RequestBody body)
    {
        if (body.Field("messages") is not { } list) throw ApiException.BadRequest("'messages' is required", "messages");
        if (list.ValueKind != JsonValueKind.Array) throw RequestBody.WrongType("messages", "a list of messages");
        var messages = new List<ChatMessage>();
        foreach (var item in list.EnumerateArray())
        {
            string param = $"messages[{messages.Count}]";
            if (item.ValueKind != JsonValueKind.Object) throw RequestBody.WrongType(param, "an object");
            if (!item.TryGetProperty("role", out var role) || role.ValueKind != JsonValueKind.String || !Roles.Contains(role.GetString()!))
                throw ApiException.BadRequest($"'{param}.role' must be one of {string.Join(", ", Roles)}", $"{param}.role");
            messages.Add(Message(item, role.GetString()!, param));
        }
        if (messages.Count == 0) throw ApiException.BadRequest("'messages' must hold at least one message", "messages");
        return messages;
    }

    /// <summary>A message with what its role may carry: an assistant's <c>tool_calls</c>, a tool result's <c>tool_call_id</c>.</summary>
    private static ChatMessage Message(JsonElement item, string role, string param)
    {
        foreach (var field in item.EnumerateObject())
            if (field.Value.ValueKind != JsonValueKind.Null && !MessageFields.Contains(field.Name))
                throw ApiException.BadRequest(field.Name == "name"
                    ? $"'{param}.name' is not supported: chat templates have no participant names"
                    : $"unknown field '{param}.{field.Name}'", $"{param}.{field.Name}");
        var message = new ChatMessage(role, Content(item, param));
        if (role == "assistant") return message with { ToolCalls = ToolParameters.MessageCalls(item, param) };
        if (item.TryGetProperty("tool_calls", out var calls) && calls.ValueKind != JsonValueKind.Null)
            throw ApiException.BadRequest($"'{param}.tool_calls' is only allowed on assistant messages", $"{param}.tool_calls");
        if (role != "tool") return message;
        if (!item.TryGetProperty("tool_call_id", out var id) || id.ValueKind != JsonValueKind.String)
            throw ApiException.BadRequest($"'{param}.tool_call_id' is required on tool messages and must be a string", $"{param}.tool_call_id");
        return message with { ToolCallId = id.GetString() };
    }

    /// <summary>A message's text: a string, or the text parts of a list of content parts.</summary>
    private static string Content(JsonElement message, string param)
    {
        if (!message.TryGetProperty("content", out var content) || content.ValueKind == JsonValueKind.Null) return "";
        if (content.ValueKind == JsonValueKind.String) return content.GetString()!;
        if (content.ValueKind != JsonValueKind.Array) throw RequestBody.WrongType($"{param}.content", "a string or a list of content parts");
        var text = new StringBuilder();
        foreach (var part in content.EnumerateArray())
        {
            if (part.ValueKind != JsonValueKind.Object || !part.TryGetProperty("type", out var type) || type.ValueKind != JsonValueKind.String)
                throw RequestBody.WrongType($"{param}.content", "a list of content parts with a 'type'");
            if (type.GetString() != "text" || !part.TryGetProperty("text", out var partText) || partText.ValueKind != JsonValueKind.String)
                throw ApiException.BadRequest($"'{param}.content' may only hold text parts", $"{param}.content");
            text.Append(partText.GetString());
        }
        return text.ToString();
    }

    /// <param name="tools">The chat request's active tools, whose calls are read out of the output; null for plain text.</param>
    private static async Task GenerateAsync(HttpContext http, VeloEngine engine, IGenerationService generator, string modelId, RequestBody body, GenerationRequest request, ResponseShape shape,
        ToolRequest? tools, ToolCallFormat? format)
    {
        bool stream = body.Bool("stream") ?? false;
        bool includeUsage = false;
        if (body.Field("stream_options") is { } streamOptions)
        {
            if (streamOptions.ValueKind != JsonValueKind.Object) throw RequestBody.WrongType("stream_options", "an object");
            if (streamOptions.TryGetProperty("include_usage", out var usage) && usage.ValueKind != JsonValueKind.Null)
            {
                if (usage.ValueKind is not (JsonValueKind.True or JsonValueKind.False)) throw RequestBody.WrongType("stream_options.include_usage", "a boolean");
                includeUsage = usage.GetBoolean();
            }
        }

        // Cancelled when the client disconnects, when the server stops, and when this handler leaves for any reason.
        using var abandon = CancellationTokenSource.CreateLinkedTokenSource(http.RequestAborted, engine.Stopping);
        GenerationStream generation;
        try
        {
            generation = generator.Submit(request, abandon.Token);
        }
        catch (PromptTooLongException e)
        {
            throw ApiException.BadRequest(e.Message, shape.PromptParam, "context_length_exceeded");
        }
        catch (SchedulerBusyException e)
        {
            http.Response.Headers.RetryAfter = "1";
            throw new ApiException(503, e.Message, code: "server_busy");
        }

        try
        {
            var observer = new GenerationObserver(engine, modelId, http);
            if (!stream)
            {
                var text = new StringBuilder();
                var tokens = new List<GeneratedPiece>();
                await foreach (var piece in generation.Pieces.ReadAllAsync(http.RequestAborted))
                {
                    observer.Observe(piece);
                    text.Append(piece.Text);
                    if (piece.Logprob != null) tokens.Add(piece);
                }
                var summary = await generation.Completion;
                observer.Finish(summary);
                string content = text.ToString();
                IReadOnlyList<ToolCall>? calls = null;
                if (tools != null)
                {
                    var output = ToolCallParser.Parse(format!, content, tools.ParallelCalls);
                    CheckChoice(tools, output.Calls);
                    (content, calls) = (output.Content, output.Calls);
                }
                http.Response.ContentType = "application/json";
                await using var json = new Utf8JsonWriter(http.Response.Body, JsonOutput.Options);
                shape.WriteWhole(json, content, calls, request.TopLogprobs != null ? tokens : null, summary, generator.Tokenizer);
                return;
            }

            http.Response.ContentType = "text/event-stream";
            http.Response.Headers.CacheControl = "no-cache";
            shape.IncludeUsage = includeUsage;
            var sse = new ServerSentEvents(http.Response);
            var tokenizer = generator.Tokenizer;
            sse.Write(json => shape.WriteChunk(json, "", null, null, first: true, tokenizer));
            await sse.FlushAsync(http.RequestAborted);
            var pending = new List<GeneratedPiece>();
            void WriteText(string text)
            {
                sse.Write(json => shape.WriteChunk(json, text, request.TopLogprobs != null ? pending : null, null, first: false, tokenizer));
                pending.Clear();
            }
            // Text streams as it comes and each call once it is complete; a forced call is checked before anything goes out.
            var parser = ToolCalling.Parser(tools, format!);
            bool holdAll = tools?.Choice.ForcesCall == true;
            var held = new List<ToolOutputPiece>();
            void WriteParsed(IReadOnlyList<ToolOutputPiece> parsed)
            {
                foreach (var part in parsed)
                {
                    if (holdAll) held.Add(part);
                    else if (part.Call is { } call)
                    {
                        sse.Write(json => ((ChatShape)shape).WriteToolCallDelta(json, part.Index, call, header: true));
                        sse.Write(json => ((ChatShape)shape).WriteToolCallDelta(json, part.Index, call, header: false));
                    }
                    else WriteText(part.Content!);
                }
            }
            try
            {
                var pieces = generation.Pieces;
                while (await pieces.WaitToReadAsync(http.RequestAborted))
                {
                    // Everything already generated goes out in one flush: a client that fell behind catches up in one write.
                    while (pieces.TryRead(out var piece))
                    {
                        observer.Observe(piece);
                        if (piece.Logprob != null) pending.Add(piece);
                        if (piece.Text.Length == 0) continue;
                        if (parser != null) WriteParsed(parser.Push(piece.Text));
                        else WriteText(piece.Text);
                    }
                    await sse.FlushAsync(http.RequestAborted);
                }
                var summary = await generation.Completion;
                observer.Finish(summary);
                if (parser != null)
                {
                    WriteParsed(parser.Finish());
                    if (holdAll)
                    {
                        CheckChoice(tools, [.. held.Where(part => part.Call != null).Select(part => part.Call!)]);
                        holdAll = false;
                        WriteParsed(held);
                    }
                }
                sse.Write(json => shape.WriteChunk(json, "", request.TopLogprobs != null && pending.Count > 0 ? pending : null,
                    summary.FinishReason, first: false, tokenizer));
                if (includeUsage) sse.Write(json => shape.WriteUsageChunk(json, summary));
                sse.WriteDone();
                await sse.FlushAsync(http.RequestAborted);
            }
            catch (Exception e) when (!http.RequestAborted.IsCancellationRequested && (e is not OperationCanceledException || engine.IsStopping))
            {
                // The status line is gone; the error travels as an event, as OpenAI's streams send it.
                var error = e as ApiException ?? (e is OperationCanceledException ? ServerInfo.ShuttingDownError() : new ApiException(500, $"generation failed: {e.Message}"));
                sse.Write(error.WriteBody);
                await sse.FlushAsync(CancellationToken.None);
            }
        }
        finally
        {
            // However the response ends (finished, client gone, write failed), the sequence must not go on generating.
            abandon.Cancel();
        }
    }

    /// <summary>A forced tool_choice that the output did not meet fails the request rather than passing text off as an answer.</summary>
    private static void CheckChoice(ToolRequest? tools, IReadOnlyList<ToolCall> calls)
    {
        try
        {
            ToolCalling.CheckChoice(tools, calls);
        }
        catch (ToolChoiceNotMetException e)
        {
            throw new ApiException(500, e.Message, "tool_choice", "tool_choice_not_met");
        }
    }

}
