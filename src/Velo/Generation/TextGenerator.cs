using Velo.Inference;
using Velo.Models;
using Velo.Runtime;
using Velo.Threading;

namespace Velo.Generation;

/// <summary>
/// Generates text for one sequence at a time on the caller's thread, as a plain enumerable: the scheduler's
/// <see cref="BatchPlanner"/> and <see cref="RequestPipeline"/> without its thread and channel, so prefill, prefix
/// reuse, sampling and stop strings are the server's own. The KV cache persists between calls, so a prompt that
/// extends the previous conversation only computes its new tokens. One generation runs at a time: starting another
/// ends the one before, and the generator is not thread-safe.
/// </summary>
public sealed class TextGenerator : IDisposable
{
    private readonly LanguageModel _model;
    private readonly IModelState _state;
    private readonly BatchPlanner _planner;
    private readonly BatchSequence _sequence;
    private readonly BatchSequence[] _sequences;
    private readonly WorkerPool _pool;
    private readonly bool _ownsPool;
    private readonly ISpeculatorSet? _speculators;
    private readonly ISpeculator? _speculator;
    private readonly int _draftMax;
    private int _generation;

    /// <param name="contextLength">Tokens of prompt and output together; 0 means the model's own.</param>
    /// <param name="batchSize">Prompt tokens per forward pass at most.</param>
    /// <param name="speculation">Speculative decoding: with <paramref name="draft"/>, that model proposes the tokens each
    /// pass verifies; without, prompt lookup does when <see cref="SpeculationOptions.NGram"/> is set.</param>
    /// <exception cref="NotEnoughMemoryException">The machine's free memory does not hold such a context.</exception>
    /// <exception cref="ArgumentException">The draft does not share the model's vocabulary.</exception>
    public TextGenerator(LanguageModel model, int contextLength = 0, int batchSize = 512, WorkerPool? pool = null, KvCacheTypes cacheTypes = default,
        SpeculationOptions? speculation = null, LanguageModel? draft = null)
    {
        speculation?.Validate();
        if (draft != null && speculation == null) throw new ArgumentException("a draft model needs speculation options", nameof(speculation));
        // Zero means the model's own context; a negative one is a mistake, not a request for the default.
        ArgumentOutOfRangeException.ThrowIfNegative(contextLength);
        ArgumentOutOfRangeException.ThrowIfLessThan(batchSize, 1);
        _model = model;
        ContextLength = contextLength > 0 ? contextLength : model.Info.ContextLength;
        ArgumentOutOfRangeException.ThrowIfLessThan(ContextLength, 2, nameof(contextLength));
        int batchTokens = Math.Min(batchSize, ContextLength);
        MemoryPlan.EnsureFits((context, sequences) => MemoryPlan.For(model.Model, context, sequences, batchTokens, sequences, cacheTypes),
            ContextLength, 1, null, "--ctx", "--parallel");
        _ownsPool = pool == null;
        _pool = pool ?? new WorkerPool(Environment.ProcessorCount);
        try
        {
            // Each verified draft takes a token of the pass and a logits row.
            speculation = speculation?.Limited(batchTokens - 1);
            _speculators = Speculators.Create(model, draft, speculation, ContextLength, sequences: 1, batchTokens, _pool, cacheTypes);
            _speculator = _speculators?[0];
            _draftMax = _speculators != null ? speculation!.DraftMax : 0;
            _state = model.Model.CreateState(ContextLength, batchTokens, sequences: 1, maxLogitRows: 1 + _draftMax, pool: _pool, cacheTypes: cacheTypes);
        }
        catch
        {
            _speculators?.Dispose();
            if (_ownsPool) _pool.Dispose();
            throw;
        }
        _planner = new BatchPlanner(model.Model, _state);
        _sequence = new BatchSequence(0, ContextLength);
        _sequences = [_sequence];
        _planner.WarmUp();
    }

    public int ContextLength { get; }
    public GenerationStats LastStats { get; private set; } = new();

    /// <summary>Generates after <paramref name="prompt"/> (token ids, BOS included if the model wants one). Cancelling
    /// ends the output early without an exception; so does leaving the enumeration.</summary>
    public IEnumerable<GeneratedPiece> Generate(IReadOnlyList<int> prompt, GenerationOptions options, CancellationToken cancellation = default) =>
        Generate(new GenerationRequest { Prompt = prompt, Options = options }, cancellation);

    /// <inheritdoc cref="Generate(IReadOnlyList{int}, GenerationOptions, CancellationToken)"/>
    public IEnumerable<GeneratedPiece> Generate(GenerationRequest request, CancellationToken cancellation = default)
    {
        var ready = new Queue<GeneratedPiece>();
        // Built here, not in the iterator, so a request that cannot run is refused at the call.
        var pipeline = new RequestPipeline(request, _model.Tokenizer, _model.Info.VocabSize, ContextLength, ready.Enqueue) { Speculator = _speculator };
        return Run(pipeline, ready, cancellation);
    }

    private IEnumerable<GeneratedPiece> Run(RequestPipeline pipeline, Queue<GeneratedPiece> ready, CancellationToken cancellation)
    {
        int generation = ++_generation;
        var stats = new GenerationStats { PromptTokens = pipeline.Request.Prompt.Count };
        LastStats = stats;
        pipeline.CachedPromptTokens = _planner.Start(_sequence, pipeline.Request.Prompt);
        TimeSpan? first = null;
        FinishReason? end = null;
        while (end == null)
        {
            if (cancellation.IsCancellationRequested) yield break;
            if (generation != _generation)
                throw new InvalidOperationException("a later Generate call took over this generator's sequence; one generation runs at a time");
            bool decoding = _sequence.IsDecoding;
            if (decoding && _speculator != null)
            {
                // No guess past the last token the request wants: that one comes from the pass's last row anyway.
                int wanted = pipeline.Request.Options.MaxTokens < 0 ? int.MaxValue : pipeline.Request.Options.MaxTokens - pipeline.GeneratedTokens - 1;
                int max = Math.Min(Math.Min(_draftMax, wanted), ContextLength - _sequence.Count);
                if (max > 0) _speculator.Propose(_sequence.History, max, _sequence.Drafts);
            }
            try
            {
                _planner.Run(_sequences);
            }
            catch
            {
                // What the failed pass stored is unknown, so nothing of the sequence can be reused.
                _planner.Reset(_sequence);
                throw;
            }
            if (decoding)
            {
                stats.DecodePasses++;
                stats.DraftedTokens += _sequence.PlannedDrafts;
            }
            end = pipeline.Advance(_planner, _sequence);
            while (ready.TryDequeue(out var piece))
            {
                first ??= piece.Elapsed;
                yield return piece;
            }
        }
        var summary = pipeline.Finish(end.Value);
        while (ready.TryDequeue(out var piece)) yield return piece;
        stats.PromptTime = first ?? summary.Duration;
        stats.GeneratedTokens = summary.GeneratedTokens;
        stats.GenerationTime = summary.Duration - stats.PromptTime;
        stats.FinishReason = summary.FinishReason;
        stats.AcceptedDrafts = pipeline.AcceptedDrafts;
    }

    public void Dispose()
    {
        _state.Dispose();
        _speculators?.Dispose();
        if (_ownsPool) _pool.Dispose();
    }
}
