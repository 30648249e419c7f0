using Velo.Sampling;
using System.Threading.Channels;

namespace Velo.Generation;

/// <summary>One generation for an <see cref="IGenerationService"/> or a <see cref="TextGenerator"/>: prompt tokens (BOS included if the model wants one) and how to continue them.</summary>
public sealed record GenerationRequest
{
    public required IReadOnlyList<int> Prompt { get; init; }

    public GenerationOptions Options { get; init; } = new();

    /// <summary>Report each generated token's log-probability and this many most likely alternatives (0..20); null reports none.</summary>
    public int? TopLogprobs { get; init; }

    /// <summary>Added to the logits of these token ids before sampling (OpenAI's logit_bias; -100 effectively bans a token).</summary>
    public IReadOnlyDictionary<int, float>? LogitBias { get; init; }

    /// <summary>How long the caller is prepared to wait for the whole answer, a hint for a service that routes between
    /// models (<see cref="CascadeGenerationService"/> sends a request with a generous budget straight to its large model);
    /// a single model has one way to answer and needs no hint. Null: no budget stated.</summary>
    public TimeSpan? LatencyBudget { get; init; }

    public const int MaxTopLogprobs = 20;
}

/// <summary>
/// One step of a generation's output: the sampled token (-1 for text released by the stop-string matcher at the
/// end) and the text that is ready now, which is empty while a UTF-8 character or a possible stop string is
/// incomplete. <see cref="Elapsed"/> is measured from submission, so the first piece's is the time to first token.
/// With log-probabilities (<see cref="GenerationRequest.TopLogprobs"/>) comes <see cref="Entropy"/>, the entropy in nats
/// of the model's raw distribution the token was drawn at, which <see cref="CascadeGenerationService"/> may judge by.
/// </summary>
public sealed record GeneratedPiece(int TokenId, string Text, TimeSpan Elapsed, TokenLogprob? Logprob = null, TokenLogprob[]? TopLogprobs = null,
    float? Entropy = null);

/// <summary>What a finished generation did.</summary>
public sealed record GenerationSummary(int PromptTokens, int CachedPromptTokens, int GeneratedTokens, FinishReason FinishReason, TimeSpan Duration);

/// <summary>
/// A submitted generation: its pieces arrive on <see cref="Pieces"/> as the scheduler produces them; the channel
/// completes when generation ends (with an <see cref="OperationCanceledException"/> when it was cancelled), after
/// which <see cref="Completion"/> holds the summary.
/// </summary>
public sealed class GenerationStream
{
    internal GenerationStream(ChannelReader<GeneratedPiece> pieces, Task<GenerationSummary> completion)
    {
        Pieces = pieces;
        Completion = completion;
    }

    public ChannelReader<GeneratedPiece> Pieces { get; }
    public Task<GenerationSummary> Completion { get; }
}

/// <summary>The scheduler's queue is full; the caller should retry later.</summary>
public sealed class SchedulerBusyException(int queueCapacity)
    : InvalidOperationException($"the server is busy: all sequence slots are in use and {queueCapacity} requests are already waiting");

/// <summary>A prompt that does not fit in the context window.</summary>
public sealed class PromptTooLongException(int promptTokens, int contextLength)
    : ArgumentException($"the prompt has {promptTokens} tokens but the context holds {contextLength}; shorten the prompt or raise --ctx")
{
    public int PromptTokens { get; } = promptTokens;
    public int ContextLength { get; } = contextLength;
}
