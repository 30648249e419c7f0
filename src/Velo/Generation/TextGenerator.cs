using Velo.Inference;
using Velo.Runtime;
using Velo.Threading;

namespace Velo.Generation;

/// <summary>One piece of generated output: the token, and the text it completes (empty while a UTF-8 character is still partial).</summary>
public readonly record struct GeneratedToken(int Id, string Text);

/// <summary>
/// Generates text for one sequence at a time, as a plain enumerable: a one-slot <see cref="BatchScheduler"/>, so
/// prefill, prefix reuse, sampling and stop strings are the server's own. The KV cache persists between calls, so
/// a prompt that extends the previous conversation only computes its new tokens.
/// </summary>
public sealed class TextGenerator : IDisposable
{
    private readonly BatchScheduler _scheduler;
    private readonly WorkerPool _pool;
    private readonly bool _ownsPool;

    public TextGenerator(LanguageModel model, int contextLength = 0, int batchSize = 512, WorkerPool? pool = null, KvCacheTypes cacheTypes = default)
    {
        // Zero means the model's own context; a negative one is a mistake, not a request for the default.
        ArgumentOutOfRangeException.ThrowIfNegative(contextLength);
        ContextLength = contextLength > 0 ? contextLength : model.Info.ContextLength;
        _ownsPool = pool == null;
        _pool = pool ?? new WorkerPool(Environment.ProcessorCount);
        // A queue of one lets the next call wait for the slot while an abandoned generation is still being cancelled.
        _scheduler = new BatchScheduler(model, new BatchSchedulerOptions
        {
            Parallel = 1, ContextLength = ContextLength, QueueCapacity = 1, MaxBatchTokens = Math.Min(batchSize, ContextLength), CacheTypes = cacheTypes,
        }, _pool);
    }

    public int ContextLength { get; }
    public GenerationStats LastStats { get; private set; } = new();

    /// <summary>Generates after <paramref name="prompt"/> (token ids, BOS included if the model wants one). Cancelling
    /// ends the output early without an exception; so does leaving the enumeration.</summary>
    public IEnumerable<GeneratedToken> Generate(IReadOnlyList<int> prompt, GenerationOptions options, CancellationToken cancellation = default)
    {
        if (prompt.Count == 0) throw new ArgumentException("the prompt is empty: it needs at least one token (usually BOS)");
        if (prompt.Count >= ContextLength) throw new PromptTooLongException(prompt.Count, ContextLength);
        Sampler.Validate(options.Sampling);
        return Run(new GenerationRequest { Prompt = prompt, Options = options }, cancellation);
    }

    private IEnumerable<GeneratedToken> Run(GenerationRequest request, CancellationToken cancellation)
    {
        var stats = new GenerationStats { PromptTokens = request.Prompt.Count };
        LastStats = stats;
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(cancellation);
        var stream = _scheduler.Submit(request, stop.Token);
        try
        {
            TimeSpan? first = null;
            while (NextPiece(stream.Pieces, out var piece))
            {
                if (piece.TokenId >= 0) first ??= piece.Elapsed;
                yield return new GeneratedToken(piece.TokenId, piece.Text);
            }
            // The pieces end a moment before the summary is set.
            if (Summary(stream.Completion) is { } summary)
            {
                stats.PromptTime = first ?? summary.Duration;
                stats.GeneratedTokens = summary.GeneratedTokens;
                stats.GenerationTime = summary.Duration - stats.PromptTime;
                stats.FinishReason = summary.FinishReason;
            }
        }
        finally
        {
            // A caller that stops enumerating early frees the slot instead of generating into the void.
            stop.Cancel();
        }
    }

    private static GenerationSummary? Summary(Task<GenerationSummary> completion)
    {
        try
        {
            return completion.GetAwaiter().GetResult();
        }
        catch (OperationCanceledException)
        {
            return null;
        }
    }

    /// <summary>Waits for the next piece; false at the end of the output, also when the caller cancelled it.</summary>
    private static bool NextPiece(System.Threading.Channels.ChannelReader<GeneratedPiece> pieces, out GeneratedPiece piece)
    {
        while (!pieces.TryRead(out piece!))
        {
            try
            {
                var more = pieces.WaitToReadAsync();
                if (!(more.IsCompleted ? more.Result : more.AsTask().GetAwaiter().GetResult())) return false;
            }
            catch (OperationCanceledException)
            {
                return false;
            }
        }
        return true;
    }

    public void Dispose()
    {
        _scheduler.Dispose();
        if (_ownsPool) _pool.Dispose();
    }
}

/// <summary>A prompt that does not fit in the context window.</summary>
public sealed class PromptTooLongException(int promptTokens, int contextLength)
    : ArgumentException($"the prompt has {promptTokens} tokens but the context holds {contextLength}; shorten the prompt or raise --ctx")
{
    public int PromptTokens { get; } = promptTokens;
    public int ContextLength { get; } = contextLength;
}
