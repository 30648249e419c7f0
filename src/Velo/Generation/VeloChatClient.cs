using System.Runtime.CompilerServices;
using System.Text;
using System.Text.Json;
using Microsoft.Extensions.AI;
using Velo.Inference;
using Velo.Sampling.Grammars;
using Velo.Threading;
using Velo.Tools;
using TemplateMessage = Velo.Text.ChatTemplates.ChatMessage;

namespace Velo.Generation;

/// <summary>
/// <see cref="IChatClient"/> over an <see cref="IGenerationService"/>: a .NET app talks to a local model the way it
/// talks to a hosted one, without HTTP. Concurrent calls are batched together like server requests.
/// Unset <see cref="ChatOptions"/> take the same defaults as the server (llama.cpp's sampling defaults).
/// <see cref="ChatOptions.Tools"/> (functions) and <see cref="ChatOptions.ToolMode"/> work as the server's <c>tools</c> and
/// <c>tool_choice</c>: calls come back as <see cref="FunctionCallContent"/>, and <see cref="FunctionResultContent"/> in the
/// history goes back to the model, so <c>UseFunctionInvocation()</c> can run the loop.
/// </summary>
public sealed class VeloChatClient : IChatClient
{
    private readonly IGenerationService _generator;
    private readonly IDisposable[] _owned;
    private readonly ChatClientMetadata _metadata;

    /// <summary>Chats through an existing generator (a <see cref="BatchScheduler"/>), which the caller keeps and disposes.</summary>
    public VeloChatClient(IGenerationService generator, string? modelId = null) : this(generator, modelId, [])
    {
    }

    private VeloChatClient(IGenerationService generator, string? modelId, IDisposable[] owned)
    {
        _generator = generator;
        _owned = owned;
        ModelId = modelId ?? generator.ModelId;
        _metadata = new ChatClientMetadata("velo", null, ModelId);
    }

    public string ModelId { get; }

    /// <summary>Loads a model and serves it with its own scheduler and worker threads, all disposed with the client.</summary>
    public static VeloChatClient Open(string modelPath, BatchSchedulerOptions? options = null, int threads = 0)
    {
        var model = LanguageModel.Load(modelPath);
        WorkerPool? pool = null;
        try
        {
            pool = new WorkerPool(threads > 0 ? threads : Environment.ProcessorCount);
            var scheduler = new BatchScheduler(model, options ?? new BatchSchedulerOptions(), pool);
            return new VeloChatClient(scheduler, null, [scheduler, pool, model]);
        }
        catch
        {
            pool?.Dispose();
            model.Dispose();
            throw;
        }
    }

    public async Task<ChatResponse> GetResponseAsync(IEnumerable<ChatMessage> messages, ChatOptions? options = null, CancellationToken cancellationToken = default)
    {
        var (stream, tools) = Submit(messages, options, cancellationToken);
        var text = new StringBuilder();
        await foreach (var piece in stream.Pieces.ReadAllAsync(cancellationToken)) text.Append(piece.Text);
        var summary = await stream.Completion;
        var contents = new List<AIContent>();
        var finish = FinishReasonOf(summary);
        if (tools == null) contents.Add(new TextContent(text.ToString()));
        else
        {
            var output = ToolCallParser.Parse(_generator.Chat.ToolFormat, text.ToString(), tools.ParallelCalls);
            ToolCalling.CheckChoice(tools, output.Calls);
            if (output.Content.Length > 0 || output.Calls.Count == 0) contents.Add(new TextContent(output.Content));
            contents.AddRange(output.Calls.Select(FunctionCallOf));
            if (output.Calls.Count > 0) finish = ChatFinishReason.ToolCalls;
        }
        return new ChatResponse(new ChatMessage(ChatRole.Assistant, contents))
        {
            ModelId = ModelId,
            CreatedAt = DateTimeOffset.UtcNow,
            FinishReason = finish,
            Usage = UsageOf(summary),
        };
    }

    public async IAsyncEnumerable<ChatResponseUpdate> GetStreamingResponseAsync(IEnumerable<ChatMessage> messages, ChatOptions? options = null,
        [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        var (stream, tools) = Submit(messages, options, cancellationToken);
        string responseId = Guid.NewGuid().ToString("N");
        var parser = ToolCalling.Parser(tools, _generator.Chat.ToolFormat);
        // A forced call is checked before anything goes out, as the server does.
        bool holdAll = tools?.Choice.ForcesCall == true;
        var held = new List<ToolOutputPiece>();
        var calls = new List<ToolCall>();
        ChatResponseUpdate Update(AIContent content) => new(ChatRole.Assistant, [content]) { ModelId = ModelId, ResponseId = responseId };
        IEnumerable<ChatResponseUpdate> Updates(IReadOnlyList<ToolOutputPiece> parsed)
        {
            foreach (var part in parsed)
            {
                if (holdAll) held.Add(part);
                else if (part.Call is { } call)
                {
                    calls.Add(call);
                    yield return Update(FunctionCallOf(call));
                }
                else yield return Update(new TextContent(part.Content));
            }
        }
        await foreach (var piece in stream.Pieces.ReadAllAsync(cancellationToken))
        {
            if (piece.Text.Length == 0) continue;
            if (parser == null) yield return Update(new TextContent(piece.Text));
            else
                foreach (var update in Updates(parser.Push(piece.Text))) yield return update;
        }
        var summary = await stream.Completion;
        if (parser != null)
        {
            foreach (var update in Updates(parser.Finish())) yield return update;
            if (holdAll)
            {
                ToolCalling.CheckChoice(tools, [.. held.Where(part => part.Call != null).Select(part => part.Call!)]);
                holdAll = false;
                foreach (var update in Updates(held)) yield return update;
            }
        }
        yield return new ChatResponseUpdate(ChatRole.Assistant, [new UsageContent(UsageOf(summary))])
        {
            ModelId = ModelId,
            ResponseId = responseId,
            FinishReason = calls.Count > 0 ? ChatFinishReason.ToolCalls : FinishReasonOf(summary),
        };
    }

    private (GenerationStream Stream, ToolRequest? Tools) Submit(IEnumerable<ChatMessage> messages, ChatOptions? options, CancellationToken cancellation)
    {
        ArgumentNullException.ThrowIfNull(messages);
        if (options?.ModelId is { } model && model != ModelId)
            throw new ArgumentException($"this client serves '{ModelId}', not '{model}'", nameof(options));
        // Not built yet: refused by name rather than answered with plain text the caller would fail on later.
        var tools = ToolsOf(options);
        var conversation = new List<TemplateMessage>();
        if (options?.Instructions is { Length: > 0 } instructions) conversation.Add(new TemplateMessage("system", instructions));
        foreach (var message in messages) conversation.AddRange(TemplateMessages(message));
        if (conversation.Count == 0) throw new ArgumentException("the conversation has no messages", nameof(messages));

        var defaults = new SamplerOptions();
        var sampling = new SamplerOptions
        {
            Temperature = options?.Temperature ?? defaults.Temperature,
            TopP = options?.TopP ?? defaults.TopP,
            TopK = options?.TopK ?? defaults.TopK,
            PresencePenalty = options?.PresencePenalty ?? 0,
            FrequencyPenalty = options?.FrequencyPenalty ?? 0,
            Seed = options?.Seed is long seed ? unchecked((ulong)seed) : null,
        };
        var generation = ToolCalling.Prepare(new GenerationOptions
        {
            MaxTokens = options?.MaxOutputTokens ?? -1,
            Sampling = sampling,
            Stop = [.. options?.StopSequences ?? [], .. _generator.Chat.StopStrings],
            Grammar = GrammarOf(options?.ResponseFormat),
        }, tools, _generator.Chat.ToolFormat);
        var request = new GenerationRequest
        {
            Prompt = _generator.Chat.Format(conversation, tools?.Tools),
            Options = generation.Options,
        };
        return (_generator.Submit(request, cancellation), tools);
    }

    /// <summary>JSON output is decoded under a grammar: the schema's when there is one (so <c>GetResponseAsync&lt;T&gt;</c>
    /// always gets a T it can deserialize), else any JSON object. A schema outside the supported subset is refused with
    /// a <see cref="GrammarException"/> naming the keyword.</summary>
    private static Grammar? GrammarOf(ChatResponseFormat? format) => format switch
    {
        ChatResponseFormatJson { Schema: { } schema } => Grammar.FromJsonSchema(schema),
        ChatResponseFormatJson => Grammar.AnyJsonObject(),
        _ => null,
    };

    /// <summary>The functions among <see cref="ChatOptions.Tools"/> with <see cref="ChatOptions.ToolMode"/>; null when
    /// none take part (no tools, or <see cref="ChatToolMode.None"/>, which neither shows them nor reads calls).</summary>
    private static ToolRequest? ToolsOf(ChatOptions? options)
    {
        if (options?.Tools is not { Count: > 0 } tools) return null;
        var definitions = new List<ToolDefinition>();
        foreach (var tool in tools)
        {
            if (tool is not AIFunctionDeclaration function)
                throw new NotSupportedException($"ChatOptions.Tools: only functions can be called, not {tool.GetType().Name} '{tool.Name}'");
            definitions.Add(new ToolDefinition(function.Name, function.Description is { Length: > 0 } description ? description : null, function.JsonSchema));
        }
        var choice = options.ToolMode switch
        {
            null or AutoChatToolMode => ToolChoice.Auto,
            NoneChatToolMode => ToolChoice.None,
            RequiredChatToolMode { RequiredFunctionName: { } name } => definitions.Any(tool => tool.Name == name)
                ? ToolChoice.Function(name) : throw new ArgumentException($"ChatOptions.ToolMode requires '{name}', which is not among ChatOptions.Tools", nameof(options)),
            RequiredChatToolMode => ToolChoice.Required,
            var other => throw new NotSupportedException($"ChatOptions.ToolMode: {other.GetType().Name} is not supported"),
        };
        var request = new ToolRequest(definitions, choice, options.AllowMultipleToolCalls ?? true);
        return request.IsActive ? request : null;
    }

    /// <summary>A message as the template sees it: its text, an assistant's calls, and each function result as a tool message.</summary>
    private static IEnumerable<TemplateMessage> TemplateMessages(ChatMessage message)
    {
        var calls = message.Contents.OfType<FunctionCallContent>()
            .Select(call => new ToolCall(call.CallId, call.Name, JsonSerializer.Serialize(call.Arguments ?? new Dictionary<string, object?>(), CompactJson)))
            .ToList();
        var results = message.Contents.OfType<FunctionResultContent>().ToList();
        if (results.Count == 0 || message.Text.Length > 0 || calls.Count > 0)
            yield return new TemplateMessage(message.Role.Value, message.Text) { ToolCalls = calls.Count > 0 ? calls : null };
        foreach (var result in results)
            yield return new TemplateMessage("tool", ResultText(result)) { ToolCallId = result.CallId };
    }

    /// <summary>MEAI's serializer settings, on one line: arguments and results go into the prompt as the model writes them.</summary>
    private static readonly JsonSerializerOptions CompactJson = new(AIJsonUtilities.DefaultOptions) { WriteIndented = false };

    private static string ResultText(FunctionResultContent result) => result.Result switch
    {
        null when result.Exception is { } error => $"Error: {error.Message}",
        string text => text,
        JsonElement { ValueKind: JsonValueKind.String } text => text.GetString()!,
        var value => JsonSerializer.Serialize(value, CompactJson),
    };

    private static FunctionCallContent FunctionCallOf(ToolCall call) =>
        FunctionCallContent.CreateFromParsedArguments(call.Arguments, call.Id, call.Name,
            arguments => JsonSerializer.Deserialize<Dictionary<string, object?>>(arguments, AIJsonUtilities.DefaultOptions));

    private static ChatFinishReason FinishReasonOf(GenerationSummary summary) =>
        summary.FinishReason == FinishReason.Length ? ChatFinishReason.Length : ChatFinishReason.Stop;

    private static UsageDetails UsageOf(GenerationSummary summary) => new()
    {
        InputTokenCount = summary.PromptTokens,
        OutputTokenCount = summary.GeneratedTokens,
        TotalTokenCount = summary.PromptTokens + summary.GeneratedTokens,
    };

    public object? GetService(Type serviceType, object? serviceKey = null)
    {
        ArgumentNullException.ThrowIfNull(serviceType);
        if (serviceKey != null) return null;
        if (serviceType == typeof(ChatClientMetadata)) return _metadata;
        if (serviceType.IsInstanceOfType(this)) return this;
        if (serviceType.IsInstanceOfType(_generator)) return _generator;
        return null;
    }

    public void Dispose()
    {
        foreach (var owned in _owned) owned.Dispose();
    }
}
