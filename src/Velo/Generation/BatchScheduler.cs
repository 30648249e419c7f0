using System.Threading.Channels;
using Velo.Inference;
using Velo.Models;
using Velo.Runtime;
using Velo.Text;
using Velo.Threading;

namespace Velo.Generation;

public sealed record BatchSchedulerOptions
{
    /// <summary>Sequences generated together, each with its own KV cache region.</summary>
    public int Parallel { get; init; } = 4;

    /// <summary>Tokens per sequence (prompt and output); 0 means the model's own, capped at <see cref="ModelInfo.DefaultContextCap"/>.</summary>
    public int ContextLength { get; init; }

    /// <summary>Requests that may wait for a free sequence slot; more are refused with <see cref="SchedulerBusyException"/>.</summary>
    public int QueueCapacity { get; init; } = 64;

    /// <summary>Tokens per forward pass: one per decoding sequence, the rest spent on prompts being prefilled.</summary>
    public int MaxBatchTokens { get; init; } = 512;

    /// <summary>How cached keys and values are stored: F32, or F16 in half the memory.</summary>
    public KvCacheTypes CacheTypes { get; init; }

    /// <summary>Memory the scheduler may take; null measures what the machine has free (<see cref="AvailableMemory.Measure"/>).
    /// A configuration that needs more is refused with <see cref="NotEnoughMemoryException"/>.</summary>
    public long? AvailableMemoryBytes { get; init; }

    /// <summary>Speculative decoding for every sequence: with the scheduler's draft model, or by prompt lookup
    /// (<see cref="SpeculationOptions.NGram"/>); null: none.</summary>
    public SpeculationOptions? Speculation { get; init; }
}

/// <summary>
/// Continuous batching: one background thread owns the model state and advances every active sequence together.
/// Each step the <see cref="BatchPlanner"/> builds one forward pass with the next token of every decoding sequence
/// plus as much of the waiting prompts as fits, and each request's <see cref="RequestPipeline"/> samples and streams
/// its sequence's logits. Requests join at the next step and leave as soon as they finish or are cancelled, so a
/// freed sequence is reused within one step. Each sequence keeps its tokens after its request ends, and a new request
/// is placed in the free sequence that shares the longest prefix with its prompt, skipping that part of the prefill
/// (a chat's next turn resumes where the last one ended); among equals, the one free the longest, so that a new
/// conversation, which shares only the chat template's opening with every sequence, does not evict the conversation
/// served last. With speculation, each step first has every decoding sequence's proposer guess its next tokens (a
/// draft model for all of them in shared passes of its own, one KV sequence per slot), and the target's one pass
/// verifies them all.
/// </summary>
public sealed class BatchScheduler : IGenerationService, IDisposable
{
    private readonly LanguageModel _model;
    private readonly IModelState _state;
    private readonly BatchPlanner _planner;
    private readonly BatchSequence[] _sequences;
    private readonly ISpeculatorSet? _speculators;
    private readonly int _draftMax;

    /// <summary>The decoding sequences of the step being planned, with how many drafts each may get; reused every step.</summary>
    private readonly List<BatchSequence> _drafting = [];
    private readonly List<int> _draftBudgets = [];

    /// <summary>Whether each sequence decoded (rather than prefilled) in the step's pass, by slot.</summary>
    private readonly bool[] _decodedInPass;

    private long _decodeSteps, _decodedTokens, _draftedTokens, _acceptedDrafts;

    /// <summary>The request holding each sequence, by slot; null for a free one.</summary>
    private readonly Request?[] _owners;

    /// <summary>When each sequence was last freed, in releases counted so far (0: never used), by slot.</summary>
    private readonly long[] _releasedAt;

    private long _releases;

    /// <summary>The sequences of active requests, in admission order: what each step plans.</summary>
    private readonly List<BatchSequence> _active = [];
    private readonly Queue<Request> _waiting = new();
    private readonly object _gate = new();
    private readonly SemaphoreSlim _wake = new(0);
    private readonly Thread _thread;
    private volatile bool _stopping;
    private int _started;

    /// <param name="start">False leaves the loop stopped until <see cref="Start"/>, so tests can fill the queue deterministically.</param>
    /// <param name="draft">The draft model of <see cref="BatchSchedulerOptions.Speculation"/>, which the caller keeps and disposes.</param>
    /// <exception cref="ArgumentException">The draft does not share the model's vocabulary.</exception>
    public BatchScheduler(LanguageModel model, BatchSchedulerOptions options, WorkerPool pool, bool start = true, LanguageModel? draft = null)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(options.Parallel, 1, nameof(options.Parallel));
        ArgumentOutOfRangeException.ThrowIfLessThan(options.QueueCapacity, 0, nameof(options.QueueCapacity));
        ArgumentOutOfRangeException.ThrowIfLessThan(options.MaxBatchTokens, 1, nameof(options.MaxBatchTokens));
        // Zero means the model's own context; a negative one is a mistake, not a request for the default.
        ArgumentOutOfRangeException.ThrowIfNegative(options.ContextLength, nameof(options.ContextLength));
        _model = model;
        Options = options;
        ContextLength = model.Info.ContextFor(options.ContextLength);
        ArgumentOutOfRangeException.ThrowIfLessThan(ContextLength, 2, nameof(options.ContextLength));
        var plan = MemoryPlan.EnsureFits((context, parallel) => PlanFor(model, options, context, parallel), ContextLength, options.Parallel,
            options.AvailableMemoryBytes, "--ctx", "--parallel");
        if (draft != null) EnsureDraftFits(draft, options, plan);
        int batchTokens = BatchTokens(options, options.Parallel);
        var speculation = options.Speculation?.Limited(batchTokens - options.Parallel);
        _speculators = Speculators.Create(model, draft, speculation, ContextLength, options.Parallel, batchTokens, pool, options.CacheTypes);
        _draftMax = _speculators != null ? speculation!.DraftMax : 0;
        try
        {
            _state = model.Model.CreateState(ContextLength, batchTokens, sequences: options.Parallel,
                maxLogitRows: LogitRows(options, options.Parallel), pool: pool, cacheTypes: options.CacheTypes);
        }
        catch
        {
            _speculators?.Dispose();
            throw;
        }
        _planner = new BatchPlanner(model.Model, _state);
        _decodedInPass = new bool[options.Parallel];
        _sequences = new BatchSequence[options.Parallel];
        for (int i = 0; i < _sequences.Length; i++) _sequences[i] = new BatchSequence(i, ContextLength);
        _owners = new Request?[options.Parallel];
        _releasedAt = new long[options.Parallel];
        Chat = new ChatPromptFormatter(model);
        ModelId = Path.GetFileNameWithoutExtension(model.Path);
        // A server runs for long: its KV memory is faulted in now rather than page by page in its first requests' passes.
        _state.Cache.Commit();
        _planner.WarmUp();
        _thread = new Thread(Loop) { IsBackground = true, Name = "Velo batch scheduler" };
        if (start) Start();
    }

    /// <summary>A pass holds at least one token more than there are sequences, so a prompt advances while all others decode.
    /// Capped where that would overflow: the memory plan refuses so many sequences anyway.</summary>
    private static int BatchTokens(BatchSchedulerOptions options, int parallel) =>
        (int)Math.Min(int.MaxValue, Math.Max(options.MaxBatchTokens, parallel + 1L));

    /// <summary>A logits row per sequence, and with speculation one per draft too, as far as a pass has tokens for them.</summary>
    private static int LogitRows(BatchSchedulerOptions options, int parallel) => options.Speculation is not { } speculation ? parallel
        : (int)Math.Min(BatchTokens(options, parallel), parallel * (1L + speculation.DraftMax));

    private static MemoryPlan PlanFor(LanguageModel model, BatchSchedulerOptions options, int contextLength, int parallel) =>
        MemoryPlan.For(model.Model, contextLength, parallel, BatchTokens(options, parallel), LogitRows(options, parallel), options.CacheTypes);

    /// <summary>Refuses a draft model whose weights and state (a KV sequence per slot) do not fit in what the model's
    /// <paramref name="plan"/> leaves of the available memory.</summary>
    private void EnsureDraftFits(LanguageModel draft, BatchSchedulerOptions options, MemoryPlan plan)
    {
        long left = Math.Max((options.AvailableMemoryBytes ?? AvailableMemory.Measure()) - plan.TotalBytes, 0);
        try
        {
            MemoryPlan.EnsureFits((context, parallel) => MemoryPlan.For(draft.Model, context, parallel, BatchTokens(options, parallel), parallel, options.CacheTypes),
                ContextLength, options.Parallel, left, "--ctx", "--parallel");
        }
        catch (NotEnoughMemoryException e)
        {
            throw new NotEnoughMemoryException($"the draft model {draft.Path} does not fit beside the model: {e.Message}", e.NeededBytes, e.AvailableBytes,
                e.FittingContextLength, e.FittingSequences);
        }
    }

    /// <summary>The memory a scheduler built with these options plans to use, before any of it is allocated.</summary>
    public static MemoryPlan MemoryPlanFor(LanguageModel model, BatchSchedulerOptions options) =>
        PlanFor(model, options, model.Info.ContextFor(options.ContextLength), options.Parallel);

    public BatchSchedulerOptions Options { get; }
    public string ModelId { get; }
    public ModelInfo ModelInfo => _model.Info;
    public TokenizerBase Tokenizer => _model.Tokenizer;
    public ChatPromptFormatter Chat { get; }
    public int ContextLength { get; }
    public int Parallel => _sequences.Length;

    public int QueueLength
    {
        get { lock (_gate) return _waiting.Count; }
    }

    public int ActiveSequences => Volatile.Read(ref _activeCount);

    private int _activeCount;

    public long CancelledRequests => Interlocked.Read(ref _cancelledRequests);

    private long _cancelledRequests;

    public SpeculationCounters Speculation => new(Interlocked.Read(ref _decodeSteps), Interlocked.Read(ref _decodedTokens),
        Interlocked.Read(ref _draftedTokens), Interlocked.Read(ref _acceptedDrafts));

    public void Start()
    {
        if (Interlocked.Exchange(ref _started, 1) == 0) _thread.Start();
    }

    public GenerationStream Submit(GenerationRequest request, CancellationToken cancellation = default)
    {
        ObjectDisposedException.ThrowIf(_stopping, this);
        var waiting = new Request(request, _model, ContextLength, cancellation);
        lock (_gate)
        {
            // Checked under the lock Dispose takes, so no request can slip into a queue nobody will drain.
            ObjectDisposedException.ThrowIf(_stopping, this);
            if (_waiting.Count >= Options.QueueCapacity + FreeSequencesUnlocked()) throw new SchedulerBusyException(Options.QueueCapacity);
            _waiting.Enqueue(waiting);
        }
        _wake.Release();
        return new GenerationStream(waiting.Output.Reader, waiting.Done.Task);
    }

    /// <summary>Sequences not held by an active request; waiting requests take them at the next step.</summary>
    private int FreeSequencesUnlocked() => _sequences.Length - Volatile.Read(ref _activeCount);

    private void Loop()
    {
        while (!_stopping)
        {
            Admit();
            if (_active.Count == 0)
            {
                _wake.Wait();
                continue;
            }
            try
            {
                Step();
            }
            catch (Exception e)
            {
                // A failed forward pass leaves the memory of every sequence in it unusable.
                foreach (var sequence in _active) Fail(sequence, e);
                _active.Clear();
                foreach (var sequence in _sequences) _planner.Reset(sequence);
                Volatile.Write(ref _activeCount, 0);
            }
        }
        lock (_gate)
        {
            foreach (var sequence in _active) Fail(sequence, new ObjectDisposedException(nameof(BatchScheduler)));
            while (_waiting.TryDequeue(out var request)) request.Fail(new ObjectDisposedException(nameof(BatchScheduler)));
        }
    }

    private void Admit()
    {
        lock (_gate)
        {
            // Cancelled requests leave the queue at once, so they stop counting against its capacity.
            if (_waiting.Any(w => w.Cancellation.IsCancellationRequested))
            {
                var keep = new Queue<Request>();
                foreach (var request in _waiting)
                    if (request.Cancellation.IsCancellationRequested) Cancel(request);
                    else keep.Enqueue(request);
                _waiting.Clear();
                foreach (var request in keep) _waiting.Enqueue(request);
            }
            while (_waiting.Count > 0 && _active.Count < _sequences.Length)
            {
                var request = _waiting.Dequeue();
                if (request.Cancellation.IsCancellationRequested)
                {
                    Cancel(request);
                    continue;
                }
                var sequence = BestFreeSequence(request.Pipeline.Request.Prompt);
                _owners[sequence.Slot] = request;
                request.Pipeline.CachedPromptTokens = _planner.Start(sequence, request.Pipeline.Request.Prompt);
                if (_speculators != null) request.Pipeline.Speculator = _speculators[sequence.Slot];
                _active.Add(sequence);
            }
            Volatile.Write(ref _activeCount, _active.Count);
        }
    }

    private BatchSequence BestFreeSequence(IReadOnlyList<int> prompt)
    {
        BatchSequence? best = null;
        int bestShared = -1;
        foreach (var sequence in _sequences)
        {
            if (_owners[sequence.Slot] != null) continue;
            int shared = sequence.SharedPrefix(prompt);
            if (shared > bestShared || shared == bestShared && _releasedAt[sequence.Slot] < _releasedAt[best!.Slot])
            {
                best = sequence;
                bestShared = shared;
            }
        }
        return best!;
    }

    private void Step()
    {
        // Cancelled requests leave before the pass, so their sequences serve the next admission.
        for (int i = _active.Count - 1; i >= 0; i--)
        {
            var request = _owners[_active[i].Slot]!;
            if (!request.Cancellation.IsCancellationRequested) continue;
            Release(_active[i]);
            Cancel(request);
            _active.RemoveAt(i);
        }
        Volatile.Write(ref _activeCount, _active.Count);
        if (_active.Count == 0) return;

        if (_speculators != null) Speculate();
        for (int i = 0; i < _active.Count; i++) _decodedInPass[_active[i].Slot] = _active[i].IsDecoding;
        _planner.Run(_active);

        long steps = 0, decoded = 0, drafted = 0, accepted = 0;
        for (int i = 0; i < _active.Count; i++)
        {
            var sequence = _active[i];
            var request = _owners[sequence.Slot]!;
            int generated = request.Pipeline.GeneratedTokens, acceptedBefore = request.Pipeline.AcceptedDrafts;
            var finish = request.Pipeline.Advance(_planner, sequence);
            if (_decodedInPass[sequence.Slot])
            {
                steps++;
                decoded += request.Pipeline.GeneratedTokens - generated;
                drafted += sequence.PlannedDrafts;
                accepted += request.Pipeline.AcceptedDrafts - acceptedBefore;
            }
            if (finish is not FinishReason reason) continue;
            Release(sequence);
            request.Complete(reason);
            _active.RemoveAt(i--);
        }
        Volatile.Write(ref _activeCount, _active.Count);
        Interlocked.Add(ref _decodeSteps, steps);
        Interlocked.Add(ref _decodedTokens, decoded);
        Interlocked.Add(ref _draftedTokens, drafted);
        Interlocked.Add(ref _acceptedDrafts, accepted);
    }

    /// <summary>
    /// Has every decoding sequence's proposer guess its next tokens, for the pass to verify. The pass's tokens and logits
    /// rows beyond one per sequence are shared evenly among the decoding ones, so no guess is made that the pass would
    /// drop; and none past the last token a request wants, which the pass's last row gives anyway.
    /// </summary>
    private void Speculate()
    {
        int decoding = 0, prefilling = 0;
        for (int i = 0; i < _active.Count; i++)
            if (_active[i].IsDecoding) decoding++;
            else if (_active[i].Count > _active[i].Cached) prefilling++;
        if (decoding == 0) return;
        int room = Math.Min(_planner.Batch.Capacity, _state.MaxLogitRows) - decoding - prefilling;
        int share = Math.Min(_draftMax, Math.Max(room, 0) / decoding);
        _drafting.Clear();
        _draftBudgets.Clear();
        for (int i = 0; i < _active.Count; i++)
        {
            var sequence = _active[i];
            if (!sequence.IsDecoding) continue;
            var pipeline = _owners[sequence.Slot]!.Pipeline;
            int maxTokens = pipeline.Request.Options.MaxTokens;
            int wanted = maxTokens < 0 ? int.MaxValue : maxTokens - pipeline.GeneratedTokens - 1;
            _drafting.Add(sequence);
            _draftBudgets.Add(Math.Min(Math.Min(share, wanted), sequence.ContextLength - sequence.Count));
        }
        _speculators!.Propose(_drafting, _draftBudgets);
    }

    /// <summary>Frees a sequence for the next request; it keeps its tokens (as far as the memory holds them) for prefix reuse.</summary>
    private void Release(BatchSequence sequence)
    {
        _owners[sequence.Slot] = null;
        _releasedAt[sequence.Slot] = ++_releases;
    }

    private void Fail(BatchSequence sequence, Exception failure)
    {
        var request = _owners[sequence.Slot]!;
        Release(sequence);
        request.Fail(failure);
    }

    private void Cancel(Request request)
    {
        Interlocked.Increment(ref _cancelledRequests);
        request.Cancel();
    }

    public void Dispose()
    {
        lock (_gate)
        {
            if (_stopping) return;
            _stopping = true;
        }
        _wake.Release();
        if (Volatile.Read(ref _started) == 1) _thread.Join();
        else
            lock (_gate)
                while (_waiting.TryDequeue(out var request)) request.Fail(new ObjectDisposedException(nameof(BatchScheduler)));
        _state.Dispose();
        _speculators?.Dispose();
        _wake.Dispose();
    }

    /// <summary>A submitted request: its pipeline, writing to the channel its caller reads, and how it ends.</summary>
    private sealed class Request
    {
        public Request(GenerationRequest request, LanguageModel model, int contextLength, CancellationToken cancellation)
        {
            Output = Channel.CreateUnbounded<GeneratedPiece>(new UnboundedChannelOptions { SingleWriter = true });
            Pipeline = new RequestPipeline(request, model.Tokenizer, model.Info.VocabSize, contextLength, piece => Output.Writer.TryWrite(piece));
            Cancellation = cancellation;
        }

        public RequestPipeline Pipeline { get; }
        public CancellationToken Cancellation { get; }
        public Channel<GeneratedPiece> Output { get; }
        public TaskCompletionSource<GenerationSummary> Done { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public void Complete(FinishReason reason)
        {
            var summary = Pipeline.Finish(reason);
            Output.Writer.TryComplete();
            Done.TrySetResult(summary);
        }

        public void Cancel()
        {
            Output.Writer.TryComplete(new OperationCanceledException(Cancellation));
            Done.TrySetCanceled(Cancellation);
        }

        public void Fail(Exception failure)
        {
            Output.Writer.TryComplete(failure);
            Done.TrySetException(failure);
        }
    }
}
