using System.Diagnostics;
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

    /// <summary>Tokens per sequence (prompt and output); 0 means the model's own, capped at 4096.</summary>
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
/// Each step builds one <see cref="ForwardBatch"/> with the next token of every decoding sequence plus as much of
/// the waiting prompts as fits, runs a single forward pass, and samples each sequence with its own
/// <see cref="Sampler"/>. Requests join at the next step and leave as soon as they finish or are cancelled, so a
/// freed slot is reused within one step. Each slot keeps its tokens after its request ends, and a new request is
/// placed in the free slot that shares the longest prefix with its prompt, skipping that part of the prefill
/// (a chat's next turn resumes where the last one ended).
/// </summary>
public sealed class BatchScheduler : IDisposable
{
    private readonly LanguageModel _model;
    private readonly IModelState _state;
    private readonly ForwardBatch _batch;
    private readonly Slot[] _slots;
    private readonly List<Sequence> _active = [];
    private readonly Queue<Sequence> _waiting = new();
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
        ContextLength = options.ContextLength > 0 ? options.ContextLength : Math.Min(model.Info.ContextLength, 4096);
        ArgumentOutOfRangeException.ThrowIfLessThan(ContextLength, 2, nameof(options.ContextLength));
        MemoryPlan.EnsureFits((context, parallel) => PlanFor(model, options, context, parallel), ContextLength, options.Parallel,
            options.AvailableMemoryBytes, "--ctx", "--parallel");
        int batchTokens = BatchTokens(options, options.Parallel);
        _batch = new ForwardBatch(batchTokens);
        _state = model.Model.CreateState(ContextLength, batchTokens, sequences: options.Parallel, maxLogitRows: options.Parallel, pool: pool, cacheTypes: options.CacheTypes);
        _slots = new Slot[options.Parallel];
        for (int i = 0; i < _slots.Length; i++) _slots[i] = new Slot(i, ContextLength);
        WarmUp();
        _thread = new Thread(Loop) { IsBackground = true, Name = "Velo batch scheduler" };
        if (start) Start();
    }

    /// <summary>A pass holds at least one token more than there are sequences, so a prompt advances while all others decode.
    /// Capped where that would overflow: the memory plan refuses so many sequences anyway.</summary>
    private static int BatchTokens(BatchSchedulerOptions options, int parallel) =>
        (int)Math.Min(int.MaxValue, Math.Max(options.MaxBatchTokens, parallel + 1L));

    private static MemoryPlan PlanFor(LanguageModel model, BatchSchedulerOptions options, int contextLength, int parallel) =>
        MemoryPlan.For(model.Model, contextLength, parallel, BatchTokens(options, parallel), parallel, options.CacheTypes);

    /// <summary>
    /// Runs a short prompt and one decode step through slot 0, whose recorded tokens stay empty, so the kernels are
    /// compiled before the first request: without tiering (the CLI and server) the JIT would otherwise delay the
    /// first answer by about half a second on a 1B model.
    /// </summary>
    private void WarmUp()
    {
        int prompt = Math.Min(Math.Min(9, _batch.Capacity), ContextLength - 1);
        _batch.Clear();
        for (int i = 0; i < prompt; i++) _batch.Add(i, i, sequence: 0, wantLogits: i == prompt - 1);
        _model.Model.Forward(_state, _batch);
        _batch.Clear();
        _batch.Add(0, prompt, sequence: 0, wantLogits: true);
        _model.Model.Forward(_state, _batch);
        _batch.Clear();
        _state.Cache.RemoveRange(0, 0);
    }

    public BatchSchedulerOptions Options { get; }
    public LanguageModel Model => _model;
    public int ContextLength { get; }
    public int Parallel => _slots.Length;

    /// <summary>Requests waiting for a slot.</summary>
    public int QueueLength
    {
        get { lock (_gate) return _waiting.Count; }
    }

    /// <summary>Sequences holding a slot (prefilling or decoding).</summary>
    public int ActiveSequences => Volatile.Read(ref _activeCount);

    private int _activeCount;

    /// <summary>Requests that ended because their caller cancelled them (or, for a server, disconnected).</summary>
    public long CancelledRequests => Interlocked.Read(ref _cancelledRequests);

    private long _cancelledRequests;

    public void Start()
    {
        if (Interlocked.Exchange(ref _started, 1) == 0) _thread.Start();
    }

    /// <summary>Queues a generation. Throws <see cref="PromptTooLongException"/> when the prompt leaves no room to generate,
    /// <see cref="SchedulerBusyException"/> when the queue is full.</summary>
    public GenerationStream Submit(GenerationRequest request, CancellationToken cancellation = default)
    {
        ArgumentNullException.ThrowIfNull(request);
        if (request.Prompt.Count == 0) throw new ArgumentException("the prompt is empty: it needs at least one token (usually BOS)");
        if (request.Prompt.Count >= ContextLength) throw new PromptTooLongException(request.Prompt.Count, ContextLength);
        foreach (int token in request.Prompt)
            if ((uint)token >= (uint)_model.Info.VocabSize)
                throw new ArgumentException($"token id {token} is outside the vocabulary of {_model.Info.VocabSize}");
        if (request.LogitBias?.Keys.Any(id => (uint)id >= (uint)_model.Info.VocabSize) == true)
            throw new ArgumentException($"logit bias names a token outside the vocabulary of {_model.Info.VocabSize}");
        if (request.TopLogprobs is < 0 or > GenerationRequest.MaxTopLogprobs)
            throw new ArgumentException($"top logprobs must be between 0 and {GenerationRequest.MaxTopLogprobs}");
        ObjectDisposedException.ThrowIf(_stopping, this);
        var sequence = new Sequence(request, new Sampler(request.Options.Sampling, _model.Info.VocabSize), _model.Tokenizer, cancellation);
        lock (_gate)
        {
            // Checked under the lock Dispose takes, so no request can slip into a queue nobody will drain.
            ObjectDisposedException.ThrowIf(_stopping, this);
            if (_waiting.Count >= Options.QueueCapacity + FreeSlotsUnlocked()) throw new SchedulerBusyException(Options.QueueCapacity);
            _waiting.Enqueue(sequence);
        }
        _wake.Release();
        return new GenerationStream(sequence.Output.Reader, sequence.Done.Task);
    }

    /// <summary>Slots not held by an active sequence; waiting requests take them at the next step.</summary>
    private int FreeSlotsUnlocked() => _slots.Length - Volatile.Read(ref _activeCount);

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
                // A failed forward pass leaves the caches of every sequence in it unusable.
                foreach (var sequence in _active) Finish(sequence, failure: e);
                _active.Clear();
                foreach (var slot in _slots)
                {
                    slot.Length = 0;
                    _state.Cache.RemoveRange(slot.Index, 0);
                }
                Volatile.Write(ref _activeCount, 0);
            }
        }
        lock (_gate)
        {
            foreach (var sequence in _active) Finish(sequence, failure: new ObjectDisposedException(nameof(BatchScheduler)));
            while (_waiting.TryDequeue(out var sequence)) Finish(sequence, failure: new ObjectDisposedException(nameof(BatchScheduler)));
        }
    }

    private void Admit()
    {
        lock (_gate)
        {
            // Cancelled requests leave the queue at once, so they stop counting against its capacity.
            if (_waiting.Any(w => w.Cancellation.IsCancellationRequested))
            {
                var keep = new Queue<Sequence>();
                foreach (var sequence in _waiting)
                    if (sequence.Cancellation.IsCancellationRequested) Finish(sequence, cancelled: true);
                    else keep.Enqueue(sequence);
                _waiting.Clear();
                foreach (var sequence in keep) _waiting.Enqueue(sequence);
            }
            while (_waiting.Count > 0 && _active.Count < _slots.Length)
            {
                var sequence = _waiting.Dequeue();
                if (sequence.Cancellation.IsCancellationRequested)
                {
                    Finish(sequence, cancelled: true);
                    continue;
                }
                sequence.Slot = BestFreeSlot(sequence.Request.Prompt);
                sequence.Slot.Busy = true;
                var prompt = sequence.Request.Prompt;
                // The last prompt token is always run again: its logits are what the first sample needs.
                int reuse = 0;
                while (reuse < sequence.Slot.Length && reuse < prompt.Count - 1 && sequence.Slot.History[reuse] == prompt[reuse]) reuse++;
                for (int i = reuse; i < prompt.Count; i++) sequence.Slot.History[i] = prompt[i];
                sequence.Slot.Length = reuse;
                _state.Cache.RemoveRange(sequence.Slot.Index, reuse);
                sequence.CachedPromptTokens = reuse;
                _active.Add(sequence);
            }
            Volatile.Write(ref _activeCount, _active.Count);
        }
    }

    private Slot BestFreeSlot(IReadOnlyList<int> prompt)
    {
        Slot? best = null;
        int bestShared = -1;
        foreach (var slot in _slots)
        {
            if (slot.Busy) continue;
            int shared = 0;
            while (shared < slot.Length && shared < prompt.Count && slot.History[shared] == prompt[shared]) shared++;
            if (shared > bestShared)
            {
                best = slot;
                bestShared = shared;
            }
        }
        return best!;
    }

    private void Step()
    {
        // Cancelled requests leave before the pass, so their slots serve the next admission.
        for (int i = _active.Count - 1; i >= 0; i--)
        {
            if (!_active[i].Cancellation.IsCancellationRequested) continue;
            Finish(_active[i], cancelled: true);
            _active.RemoveAt(i);
        }
        Volatile.Write(ref _activeCount, _active.Count);
        if (_active.Count == 0) return;

        _batch.Clear();
        foreach (var sequence in _active)
        {
            sequence.LogitsRow = -1;
            if (sequence.Prefilled)
            {
                var slot = sequence.Slot!;
                sequence.LogitsRow = _batch.Add(slot.History[slot.Length], slot.Length, slot.Index, wantLogits: true);
                slot.Length++;
            }
        }
        foreach (var sequence in _active)
        {
            if (sequence.Prefilled) continue;
            var slot = sequence.Slot!;
            var prompt = sequence.Request.Prompt;
            int room = _batch.Capacity - _batch.Count;
            if (room == 0) break;
            int end = Math.Min(prompt.Count, slot.Length + room);
            for (; slot.Length < end; slot.Length++)
            {
                int row = _batch.Add(prompt[slot.Length], slot.Length, slot.Index, wantLogits: slot.Length == prompt.Count - 1);
                if (row >= 0) sequence.LogitsRow = row;
            }
            sequence.Prefilled = slot.Length == prompt.Count;
        }

        _model.Model.Forward(_state, _batch);

        for (int i = 0; i < _active.Count; i++)
        {
            var sequence = _active[i];
            if (sequence.LogitsRow < 0) continue;
            var result = Advance(sequence, _state.Output(sequence.LogitsRow));
            if (result is not FinishReason reason) continue;
            Finish(sequence, reason: reason);
            _active.RemoveAt(i--);
        }
        Volatile.Write(ref _activeCount, _active.Count);
    }

    /// <summary>Samples the sequence's next token and streams its text; returns why it ended, or null to go on.</summary>
    private FinishReason? Advance(Sequence sequence, ReadOnlySpan<float> logits)
    {
        var slot = sequence.Slot!;
        var options = sequence.Request.Options;
        int token = sequence.Sampler.Sample(Biased(sequence, logits), slot.History.AsSpan(0, slot.Length));
        var tokenizer = _model.Tokenizer;
        if (tokenizer.IsEndOfGeneration(token) && !options.IgnoreEos) return FinishReason.Stop;

        sequence.GeneratedTokens++;
        TokenLogprob? chosen = null;
        TokenLogprob[]? top = null;
        if (sequence.Request.TopLogprobs is int alternatives) (chosen, top) = Logprobs(logits, token, alternatives);
        var (text, stopped) = sequence.Stop.Push(sequence.Decoder.Append(token));
        sequence.Output.Writer.TryWrite(new GeneratedPiece(token, text, sequence.Clock.Elapsed, chosen, top));
        if (stopped) return FinishReason.Stop;

        int limit = options.MaxTokens < 0 ? int.MaxValue : options.MaxTokens;
        if (sequence.GeneratedTokens >= limit || slot.Length == ContextLength) return FinishReason.Length;
        slot.History[slot.Length] = token;
        return null;
    }

    private static ReadOnlySpan<float> Biased(Sequence sequence, ReadOnlySpan<float> logits)
    {
        if (sequence.Request.LogitBias is not { Count: > 0 } bias) return logits;
        sequence.BiasedLogits ??= new float[logits.Length];
        logits.CopyTo(sequence.BiasedLogits);
        foreach (var (id, value) in bias) sequence.BiasedLogits[id] += value;
        return sequence.BiasedLogits;
    }

    private static (TokenLogprob Chosen, TokenLogprob[] Top) Logprobs(ReadOnlySpan<float> logits, int token, int alternatives)
    {
        float max = float.NegativeInfinity;
        foreach (float l in logits) max = MathF.Max(max, l);
        double sum = 0;
        foreach (float l in logits) sum += Math.Exp(l - max);
        float logSum = max + (float)Math.Log(sum);

        alternatives = Math.Min(alternatives, logits.Length);
        // Insertion into a short array sorted by logit, highest first; ties keep the lower id first.
        var top = new TokenLogprob[alternatives];
        int filled = 0;
        for (int id = 0; id < logits.Length && alternatives > 0; id++)
        {
            float value = logits[id];
            if (filled == alternatives && value <= top[filled - 1].Logprob) continue;
            int at = filled < alternatives ? filled++ : alternatives - 1;
            for (; at > 0 && top[at - 1].Logprob < value; at--) top[at] = top[at - 1];
            top[at] = new TokenLogprob(id, value);
        }
        for (int i = 0; i < top.Length; i++) top[i] = top[i] with { Logprob = top[i].Logprob - logSum };
        return (new TokenLogprob(token, logits[token] - logSum), top);
    }

    private void Finish(Sequence sequence, FinishReason reason = FinishReason.Stop, bool cancelled = false, Exception? failure = null)
    {
        if (sequence.Slot is { } slot)
        {
            // The slot keeps its tokens (up to Length, which counts only what the cache holds) for prefix reuse.
            slot.Busy = false;
            sequence.Slot = null;
        }
        if (failure != null)
        {
            sequence.Output.Writer.TryComplete(failure);
            sequence.Done.TrySetException(failure);
            return;
        }
        if (cancelled)
        {
            Interlocked.Increment(ref _cancelledRequests);
            var error = new OperationCanceledException(sequence.Cancellation);
            sequence.Output.Writer.TryComplete(error);
            sequence.Done.TrySetCanceled(sequence.Cancellation);
            return;
        }
        string rest = sequence.Stop.Flush();
        if (rest.Length > 0) sequence.Output.Writer.TryWrite(new GeneratedPiece(-1, rest, sequence.Clock.Elapsed));
        sequence.Output.Writer.TryComplete();
        sequence.Done.TrySetResult(new GenerationSummary(sequence.Request.Prompt.Count, sequence.CachedPromptTokens,
            sequence.GeneratedTokens, reason, sequence.Clock.Elapsed));
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
                while (_waiting.TryDequeue(out var sequence)) Finish(sequence, failure: new ObjectDisposedException(nameof(BatchScheduler)));
        _state.Dispose();
        _wake.Dispose();
    }

    /// <summary>A KV cache region and the tokens it holds.</summary>
    private sealed class Slot(int index, int contextLength)
    {
        public int Index { get; } = index;
        public int[] History { get; } = new int[contextLength];

        /// <summary>Tokens whose keys and values are in the cache, counting those of the pass being built
        /// (the cache's own <see cref="KvCache.Length"/> once the pass has run).</summary>
        public int Length { get; set; }

        public bool Busy { get; set; }
    }

    private sealed class Sequence(GenerationRequest request, Sampler sampler, ITokenizer tokenizer, CancellationToken cancellation)
    {
        public GenerationRequest Request { get; } = request;
        public Sampler Sampler { get; } = sampler;
        public CancellationToken Cancellation { get; } = cancellation;
        public Stopwatch Clock { get; } = Stopwatch.StartNew();
        public Channel<GeneratedPiece> Output { get; } = Channel.CreateUnbounded<GeneratedPiece>(new UnboundedChannelOptions { SingleWriter = true });
        public TaskCompletionSource<GenerationSummary> Done { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);
        public StreamingDecoder Decoder { get; } = new(tokenizer, skipSpecial: true);
        public StopStringMatcher Stop { get; } = new(request.Options.Stop);
        public Slot? Slot { get; set; }
        public bool Prefilled { get; set; }
        public int LogitsRow { get; set; } = -1;
        public int CachedPromptTokens { get; set; }
        public int GeneratedTokens { get; set; }
        public float[]? BiasedLogits { get; set; }
    }
}
