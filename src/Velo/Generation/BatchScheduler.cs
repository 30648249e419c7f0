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
/// served last.
/// </summary>
public sealed class BatchScheduler : IGenerationService, IDisposable
{
    private readonly LanguageModel _model;
    private readonly IModelState _state;
    private readonly BatchPlanner _planner;
    private readonly BatchSequence[] _sequences;

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
    public BatchScheduler(LanguageModel model, BatchSchedulerOptions options, WorkerPool pool, bool start = true)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(options.Parallel, 1, nameof(options.Parallel));
        ArgumentOutOfRangeException.ThrowIfLessThan(options.QueueCapacity, 0, nameof(options.QueueCapacity));
        // Zero means the model's own context; a negative one is a mistake, not a request for the default.
        ArgumentOutOfRangeException.ThrowIfNegative(options.ContextLength, nameof(options.ContextLength));
        _model = model;
        Options = options;
        ContextLength = model.Info.ContextFor(options.ContextLength);
        ArgumentOutOfRangeException.ThrowIfLessThan(ContextLength, 2, nameof(options.ContextLength));
        MemoryPlan.EnsureFits((context, parallel) => PlanFor(model, options, context, parallel), ContextLength, options.Parallel,
            options.AvailableMemoryBytes, "--ctx", "--parallel");
        _state = model.Model.CreateState(ContextLength, BatchTokens(options, options.Parallel), sequences: options.Parallel,
            maxLogitRows: options.Parallel, pool: pool, cacheTypes: options.CacheTypes);
        _planner = new BatchPlanner(model.Model, _state);
        _sequences = new BatchSequence[options.Parallel];
        for (int i = 0; i < _sequences.Length; i++) _sequences[i] = new BatchSequence(i, ContextLength);
        _owners = new Request?[options.Parallel];
        _releasedAt = new long[options.Parallel];
        Chat = new ChatPromptFormatter(model);
        ModelId = Path.GetFileNameWithoutExtension(model.Path);
        _planner.WarmUp();
        _thread = new Thread(Loop) { IsBackground = true, Name = "Velo batch scheduler" };
        if (start) Start();
    }

    /// <summary>A pass holds at least one token more than there are sequences, so a prompt advances while all others decode.
    /// Capped where that would overflow: the memory plan refuses so many sequences anyway.</summary>
    private static int BatchTokens(BatchSchedulerOptions options, int parallel) =>
        (int)Math.Min(int.MaxValue, Math.Max(options.MaxBatchTokens, parallel + 1L));

    private static MemoryPlan PlanFor(LanguageModel model, BatchSchedulerOptions options, int contextLength, int parallel) =>
        MemoryPlan.For(model.Model, contextLength, parallel, BatchTokens(options, parallel), parallel, options.CacheTypes);

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

        _planner.Run(_active);

        for (int i = 0; i < _active.Count; i++)
        {
            var sequence = _active[i];
            var request = _owners[sequence.Slot]!;
            if (request.Pipeline.Advance(_planner, sequence) is not FinishReason reason) continue;
            Release(sequence);
            request.Complete(reason);
            _active.RemoveAt(i--);
        }
        Volatile.Write(ref _activeCount, _active.Count);
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
