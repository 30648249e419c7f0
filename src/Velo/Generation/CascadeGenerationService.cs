using System.Diagnostics;
using System.Threading.Channels;
using Velo.Inference;
using Velo.Models;
using Velo.Text;
using Velo.Text.ChatTemplates;

namespace Velo.Generation;

/// <summary>What the cascade judges the small model's first tokens by.</summary>
public enum CascadeMeasure
{
    /// <summary>The mean log-probability of the tokens the small model chose, under its raw distribution (OpenAI's
    /// <c>logprobs</c>); the request escalates when it is below the threshold.</summary>
    MeanLogprob,

    /// <summary>The mean entropy in nats of the small model's raw next-token distributions; the request escalates when
    /// it is above the threshold.</summary>
    MeanEntropy,
}

/// <summary>How a request was answered by a <see cref="CascadeGenerationService"/>.</summary>
public enum CascadePath
{
    /// <summary>The small model was confident: its answer was kept.</summary>
    Small,

    /// <summary>The small model was not: its first tokens were discarded and the large model answered.</summary>
    Escalated,

    /// <summary>The request's latency budget allowed the large model: it went there straight away.</summary>
    Large,
}

public sealed record CascadeOptions
{
    public const int DefaultProbeTokens = 8;
    public const double DefaultLogprobThreshold = -1.5;
    public const double DefaultEntropyThreshold = 2.5;

    /// <summary>The name clients ask for the cascade by, its <see cref="IGenerationService.ModelId"/>.</summary>
    public string Name { get; init; } = "auto";

    /// <summary>The small model's first tokens that are held back and judged (K); an answer that ends sooner is judged
    /// on what it has.</summary>
    public int ProbeTokens { get; init; } = DefaultProbeTokens;

    public CascadeMeasure Measure { get; init; } = CascadeMeasure.MeanLogprob;

    /// <summary>The measure's escalation threshold; null takes the measure's default: a mean log-probability below
    /// <see cref="DefaultLogprobThreshold"/> (a geometric-mean token probability under 0.22), or a mean entropy above
    /// <see cref="DefaultEntropyThreshold"/> nats (as unsure as a uniform choice among 12 tokens). Infinities force a
    /// path: for the log-probability +∞ always escalates and -∞ never does (for the entropy, the other way round).</summary>
    public double? Threshold { get; init; }

    /// <summary>A request whose <see cref="GenerationRequest.LatencyBudget"/> is at least this goes straight to the large
    /// model: its caller can wait for the large model's answer, so the small one is not tried first. Set it to the
    /// latency of the large model's answers (<see cref="CascadeStatistics"/> measures it). Null (the default): every
    /// request starts with the small model.</summary>
    public TimeSpan? LargeWithinBudget { get; init; }

    public double EffectiveThreshold => Threshold ?? (Measure == CascadeMeasure.MeanLogprob ? DefaultLogprobThreshold : DefaultEntropyThreshold);

    /// <summary>Throws for options no cascade can run with (the constructor checks them too).</summary>
    public void Validate()
    {
        if (string.IsNullOrWhiteSpace(Name)) throw new ArgumentException("the cascade needs a name", nameof(Name));
        ArgumentOutOfRangeException.ThrowIfLessThan(ProbeTokens, 1, nameof(ProbeTokens));
        ArgumentOutOfRangeException.ThrowIfGreaterThan(ProbeTokens, 1024, nameof(ProbeTokens));
        if (!Enum.IsDefined(Measure)) throw new ArgumentOutOfRangeException(nameof(Measure), Measure, "not a cascade measure");
        if (double.IsNaN(EffectiveThreshold)) throw new ArgumentOutOfRangeException(nameof(Threshold), "the threshold is not a number");
        if (LargeWithinBudget < TimeSpan.Zero) throw new ArgumentOutOfRangeException(nameof(LargeWithinBudget), "a latency cannot be negative");
    }
}

/// <summary>
/// Routing between sizes: answers with a small model and escalates to a large one (of the same vocabulary and chat
/// template) when the small one is unsure of its first <see cref="CascadeOptions.ProbeTokens"/> tokens. Those tokens
/// are held back while they are judged, so a stream shows either the small model's answer, from its first token, or
/// the large model's, never a mix. A request whose latency budget allows the large model goes to it directly.
/// The two services run at the same time (an escalation starts the large model while the small one's abandoned pass
/// may still run), so two <see cref="BatchScheduler"/>s under a cascade need a <see cref="Velo.Threading.WorkerPool"/> each.
/// </summary>
public sealed class CascadeGenerationService : IGenerationService
{
    private readonly IGenerationService _small;
    private readonly IGenerationService _large;
    private long _cancelledRequests;

    /// <exception cref="ArgumentException">The models do not share a vocabulary or render chats differently.</exception>
    public CascadeGenerationService(IGenerationService small, IGenerationService large, CascadeOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(small);
        ArgumentNullException.ThrowIfNull(large);
        Options = options ?? new CascadeOptions();
        Options.Validate();
        string subject = $"the cascade's small model {small.ModelId} and large model {large.ModelId}";
        SharedVocabulary.Ensure(subject, "the small one", small.Tokenizer, small.ModelInfo.VocabSize, "the large one", large.Tokenizer, large.ModelInfo.VocabSize);
        EnsureSameChatHandling(subject, small.Chat, large.Chat);
        _small = small;
        _large = large;
    }

    public CascadeOptions Options { get; }
    public CascadeStatistics Statistics { get; } = new();
    public IGenerationService Small => _small;
    public IGenerationService Large => _large;

    public string ModelId => Options.Name;
    public ModelInfo ModelInfo => _small.ModelInfo;
    public TokenizerBase Tokenizer => _small.Tokenizer;
    public ChatPromptFormatter Chat => _small.Chat;

    /// <summary>The shorter of the two models' contexts, so that a request fits either.</summary>
    public int ContextLength => Math.Min(_small.ContextLength, _large.ContextLength);

    /// <summary>The two models' sequences together (as are the queue and active sequences).</summary>
    public int Parallel => _small.Parallel + _large.Parallel;

    public int QueueLength => _small.QueueLength + _large.QueueLength;
    public int ActiveSequences => _small.ActiveSequences + _large.ActiveSequences;

    /// <summary>The two models' decoding together.</summary>
    public SpeculationCounters Speculation => _small.Speculation + _large.Speculation;

    /// <summary>Cascade requests their callers cancelled (the small model's abandoned probes are not counted).</summary>
    public long CancelledRequests => Interlocked.Read(ref _cancelledRequests);

    /// <summary>The same conversation must become the same prompt for either model, since the request carries only its
    /// tokens: a probe conversation renders alike with both templates, and tool calls are written alike.</summary>
    private static void EnsureSameChatHandling(string subject, ChatPromptFormatter small, ChatPromptFormatter large)
    {
        ChatMessage[] probe = [new("user", "Hello"), new("assistant", "Hi, how can I help?"), new("user", "Tell me a story.")];
        // A template may refuse a conversation (raise_exception); two that refuse it alike are alike.
        static string Rendered(ChatPromptFormatter chat, ChatMessage[] messages)
        {
            try
            {
                return chat.Render(messages);
            }
            catch (ChatTemplateException e)
            {
                return $"refused: {e.Message}";
            }
        }
        if (Rendered(small, probe) != Rendered(large, probe) || small.ToolFormat != large.ToolFormat || !small.StopStrings.SequenceEqual(large.StopStrings))
            throw new ArgumentException($"{subject} render chats differently (their chat templates differ): a prompt made for one would not suit the other");
    }

    public GenerationStream Submit(GenerationRequest request, CancellationToken cancellation = default)
    {
        // Checked against both now, so an escalation cannot be refused later for what was known at the start.
        RequestPipeline.Validate(request, ModelInfo.VocabSize, ContextLength);
        var clock = Stopwatch.StartNew();
        var output = Channel.CreateUnbounded<GeneratedPiece>(new UnboundedChannelOptions { SingleWriter = true });
        if (request.LatencyBudget >= Options.LargeWithinBudget)
        {
            var large = _large.Submit(request, cancellation);
            return new GenerationStream(output.Reader, Run(CascadePath.Large, () => Forward(large, output.Writer, clock, keepLogprobs: true), output.Writer, clock, cancellation));
        }
        // The probe asks for log-probabilities (and so entropies); they are shown only if the caller asked for them.
        var probe = CancellationTokenSource.CreateLinkedTokenSource(cancellation);
        GenerationStream small;
        try
        {
            small = _small.Submit(request with { TopLogprobs = request.TopLogprobs ?? 0 }, probe.Token);
        }
        catch
        {
            probe.Dispose();
            throw;
        }
        var path = CascadePath.Small;
        double confidence = double.NaN;
        var done = Run(() => path, () => confidence, async () =>
        {
            var (held, measured) = await Probe(small.Pieces);
            confidence = measured;
            if (Escalates(measured))
            {
                GenerationStream? large = null;
                try
                {
                    large = _large.Submit(request, cancellation);
                }
                catch (SchedulerBusyException)
                {
                    // The large model's queue is full: the small model's answer is better than none.
                    Statistics.CountBusyLarge();
                }
                if (large != null)
                {
                    path = CascadePath.Escalated;
                    probe.Cancel();
                    return await Forward(large, output.Writer, clock, keepLogprobs: true);
                }
            }
            bool keepLogprobs = request.TopLogprobs != null;
            foreach (var piece in held) output.Writer.TryWrite(Shown(piece, clock, keepLogprobs));
            return await Forward(small, output.Writer, clock, keepLogprobs);
        }, output.Writer, clock, cancellation);
        // Disposed once both the small model and the answer are done with it (an escalation cancels it), and the
        // abandoned probe's outcome observed.
        Task.WhenAll(small.Completion, done).ContinueWith(both =>
        {
            _ = both.Exception;
            _ = small.Completion.Exception;
            probe.Dispose();
        }, CancellationToken.None, TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);
        return new GenerationStream(output.Reader, done);
    }

    /// <summary>Reads the small model's pieces until it has generated <see cref="CascadeOptions.ProbeTokens"/> tokens or
    /// ended, and measures them. An answer that ends before any token counts as sure of itself (0 for either measure):
    /// the small model chose to stop.</summary>
    private async Task<(List<GeneratedPiece> Held, double Measured)> Probe(ChannelReader<GeneratedPiece> pieces)
    {
        var held = new List<GeneratedPiece>(Options.ProbeTokens);
        int tokens = 0, measured = 0;
        double sum = 0;
        while (tokens < Options.ProbeTokens && await pieces.WaitToReadAsync())
            while (tokens < Options.ProbeTokens && pieces.TryRead(out var piece))
            {
                held.Add(piece);
                // Text released at the end by the stop-string matcher is no token.
                if (piece.TokenId < 0) continue;
                tokens++;
                float? value = Options.Measure == CascadeMeasure.MeanLogprob ? piece.Logprob?.Logprob : piece.Entropy;
                if (value is not float v) continue;
                sum += v;
                measured++;
            }
        return (held, measured == 0 ? 0 : sum / measured);
    }

    private bool Escalates(double measured) => Options.Measure == CascadeMeasure.MeanLogprob
        ? measured < Options.EffectiveThreshold
        : measured > Options.EffectiveThreshold;

    /// <summary>Passes a stream's pieces on and returns its summary, timed from the cascade's submission.</summary>
    private static async Task<GenerationSummary> Forward(GenerationStream source, ChannelWriter<GeneratedPiece> output, Stopwatch clock, bool keepLogprobs)
    {
        await foreach (var piece in source.Pieces.ReadAllAsync()) output.TryWrite(Shown(piece, clock, keepLogprobs));
        var summary = await source.Completion;
        return summary with { Duration = clock.Elapsed };
    }

    /// <summary>A piece as the caller sees it: timed from the cascade's submission (held tokens are released late, and
    /// an escalated request started earlier than the large model's part of it), without the probe's log-probabilities.</summary>
    private static GeneratedPiece Shown(GeneratedPiece piece, Stopwatch clock, bool keepLogprobs) => keepLogprobs
        ? piece with { Elapsed = clock.Elapsed }
        : piece with { Elapsed = clock.Elapsed, Logprob = null, TopLogprobs = null, Entropy = null };

    private Task<GenerationSummary> Run(CascadePath path, Func<Task<GenerationSummary>> answer, ChannelWriter<GeneratedPiece> output,
        Stopwatch clock, CancellationToken cancellation) => Run(() => path, () => double.NaN, answer, output, clock, cancellation);

    /// <summary>Completes the caller's channel as the scheduler completes its own: empty on success, with an
    /// <see cref="OperationCanceledException"/> when the caller cancelled, with the failure otherwise; and counts the answer.</summary>
    private async Task<GenerationSummary> Run(Func<CascadePath> path, Func<double> confidence, Func<Task<GenerationSummary>> answer,
        ChannelWriter<GeneratedPiece> output, Stopwatch clock, CancellationToken cancellation)
    {
        try
        {
            var summary = await answer();
            Statistics.Count(path(), clock.Elapsed, confidence());
            output.TryComplete();
            return summary;
        }
        catch (OperationCanceledException) when (cancellation.IsCancellationRequested)
        {
            Interlocked.Increment(ref _cancelledRequests);
            var cancelled = new OperationCanceledException(cancellation);
            output.TryComplete(cancelled);
            throw cancelled;
        }
        catch (Exception failure)
        {
            output.TryComplete(failure);
            throw;
        }
    }
}

/// <summary>
/// Per path of a <see cref="CascadeGenerationService"/> (<see cref="CascadePath"/>): the requests answered that way,
/// their total latency (submission to the end of the answer) and the small model's mean confidence over them, for
/// <c>/metrics</c> (a Prometheus counter and a <c>_sum</c> per path) and for tuning the threshold: the latency the
/// small path saves against the confidence it accepts. Cancelled and failed requests are not counted.
/// </summary>
public sealed class CascadeStatistics
{
    private readonly object _gate = new();
    private readonly long[] _requests = new long[3];
    private readonly TimeSpan[] _latency = new TimeSpan[3];
    private readonly double[] _confidence = new double[3];
    private long _busyLarge;

    /// <summary>Escalations the large model's full queue refused: those requests kept the small model's answer
    /// (and are counted under <see cref="CascadePath.Small"/>).</summary>
    public long BusyLarge => Interlocked.Read(ref _busyLarge);

    public CascadePathStatistics this[CascadePath path]
    {
        get
        {
            lock (_gate) return new CascadePathStatistics(_requests[(int)path], _latency[(int)path], _confidence[(int)path]);
        }
    }

    internal void Count(CascadePath path, TimeSpan latency, double confidence)
    {
        lock (_gate)
        {
            _requests[(int)path]++;
            _latency[(int)path] += latency;
            if (!double.IsNaN(confidence)) _confidence[(int)path] += confidence;
        }
    }

    internal void CountBusyLarge() => Interlocked.Increment(ref _busyLarge);
}

/// <param name="Requests">Requests answered by this path.</param>
/// <param name="TotalLatency">Their latencies added up, from submission to the end of the answer.</param>
/// <param name="ConfidenceSum">The small model's measure over their first tokens, added up (0 for <see cref="CascadePath.Large"/>, never measured).</param>
public readonly record struct CascadePathStatistics(long Requests, TimeSpan TotalLatency, double ConfidenceSum)
{
    public TimeSpan MeanLatency => Requests == 0 ? TimeSpan.Zero : TotalLatency / Requests;
    public double MeanConfidence => Requests == 0 ? double.NaN : ConfidenceSum / Requests;
}
