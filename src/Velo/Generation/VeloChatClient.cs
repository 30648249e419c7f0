using System.Runtime.CompilerServices;
using System.Text;
using Microsoft.Extensions.AI;
using Velo.Inference;
using Velo.Sampling.Grammars;
using Velo.Threading;
using TemplateMessage = Velo.Text.ChatTemplates.ChatMessage;

namespace Velo.Generation;

/// <summary>
/// <see cref="IChatClient"/> over an <see cref="IGenerationService"/>: a .NET app talks to a local model the way it
/// talks to a hosted one, without HTTP. Concurrent calls are batched together like server requests.
/// Unset <see cref="ChatOptions"/> take the same defaults as the server (llama.cpp's sampling defaults).
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
        var stream = Submit(messages, options, cancellationToken);
        var text = new StringBuilder();
        await foreach (var piece in stream.Pieces.ReadAllAsync(cancellationToken)) text.Append(piece.Text);
        var summary = await stream.Completion;
        return new ChatResponse(new ChatMessage(ChatRole.Assistant, text.ToString()))
        {
            ModelId = ModelId,
            CreatedAt = DateTimeOffset.UtcNow,
            FinishReason = FinishReasonOf(summary),
            Usage = UsageOf(summary),
        };
    }

    public async IAsyncEnumerable<ChatResponseUpdate> GetStreamingResponseAsync(IEnumerable<ChatMessage> messages, ChatOptions? options = null,
        [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        var stream = Submit(messages, options, cancellationToken);
        string responseId = Guid.NewGuid().ToString("N");
        await foreach (var piece in stream.Pieces.ReadAllAsync(cancellationToken))
        {
            if (piece.Text.Length == 0) continue;
            yield return new ChatResponseUpdate(ChatRole.Assistant, piece.Text) { ModelId = ModelId, ResponseId = responseId };
        }
        var summary = await stream.Completion;
        yield return new ChatResponseUpdate(ChatRole.Assistant, [new UsageContent(UsageOf(summary))])
        {
            ModelId = ModelId,
            ResponseId = responseId,
            FinishReason = FinishReasonOf(summary),
        };
    }

    private GenerationStream Submit(IEnumerable<ChatMessage> messages, ChatOptions? options, CancellationToken cancellation)
    {
        ArgumentNullException.ThrowIfNull(messages);
        if (options?.ModelId is { } model && model != ModelId)
            throw new ArgumentException($"this client serves '{ModelId}', not '{model}'", nameof(options));
        // Not built yet: refused by name rather than answered with plain text the caller would fail on later.
        if (options?.Tools is { Count: > 0 }) throw new NotSupportedException("ChatOptions.Tools: tool calling is not supported yet");
        var conversation = new List<TemplateMessage>();
        if (options?.Instructions is { Length: > 0 } instructions) conversation.Add(new TemplateMessage("system", instructions));
        foreach (var message in messages) conversation.Add(new TemplateMessage(message.Role.Value, message.Text));
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
        var request = new GenerationRequest
        {
            Prompt = _generator.Chat.Format(conversation),
            Options = new GenerationOptions
            {
                MaxTokens = options?.MaxOutputTokens ?? -1,
                Sampling = sampling,
                Stop = [.. options?.StopSequences ?? [], .. _generator.Chat.StopStrings],
                Grammar = GrammarOf(options?.ResponseFormat),
            },
        };
        return _generator.Submit(request, cancellation);
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
