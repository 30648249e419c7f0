using System.Threading.Channels;
using Velo.Formats;
using Velo.Generation;
using Velo.Inference;
using Velo.Models;
using Velo.Sampling;
using Velo.Threading;

namespace Velo.Tests.Generation;

/// <summary>
/// Routing between sizes: with forced thresholds the cascade's output is the chosen model's own; the default threshold
/// tells stories260K (sure of itself) from a random-weight model of its vocabulary (unsure of everything); the small
/// model's held-back tokens never reach the stream when it escalates; statistics count each path; cancellation ends
/// the stream. Scripted services make the timing-sensitive cases deterministic.
/// </summary>
public sealed class CascadeGenerationServiceTests : IDisposable
{
    private const int Context = 256;

    /// <summary>The random model's own context: long enough that a stream cancelled after its first piece cannot finish first.</summary>
    private const int LongContext = 16384;
    private readonly string _folder = Directory.CreateTempSubdirectory("velo-cascade-").FullName;
    private readonly LanguageModel _stories = LanguageModel.Load(TestPaths.Stories260K);
    private readonly LanguageModel _random;
    // One pool per scheduler: both models run at once (an escalation starts the large one while the small one's
    // cancelled generation may still be in its pass), and a pool runs one dispatch at a time.
    private readonly WorkerPool _pool = new(2);
    private readonly WorkerPool _randomPool = new(1);
    private readonly BatchScheduler _storiesService;
    private readonly BatchScheduler _randomService;

    public CascadeGenerationServiceTests()
    {
        var spec = new SynthSpec { Name = "random", Dim = 32, Layers = 1, Heads = 2, FfnDim = 64, VocabSize = _stories.Info.VocabSize, ContextLength = LongContext, Seed = 5 };
        string path = Path.Combine(_folder, "random.gguf");
        using (var vocabulary = GgufFile.Open(TestPaths.Stories260K))
            ModelSynthesizer.Write(path, spec, SynthTokenizer.FromGguf(vocabulary.Metadata), threads: 2);
        _random = LanguageModel.Load(path);
        _storiesService = new BatchScheduler(_stories, new BatchSchedulerOptions { Parallel = 2, ContextLength = Context }, _pool);
        _randomService = new BatchScheduler(_random, new BatchSchedulerOptions { Parallel = 2, ContextLength = Context }, _randomPool);
    }

    public void Dispose()
    {
        _storiesService.Dispose();
        _randomService.Dispose();
        _pool.Dispose();
        _randomPool.Dispose();
        _random.Dispose();
        _stories.Dispose();
        Directory.Delete(_folder, recursive: true);
    }

    private GenerationRequest Greedy(string prompt, int maxTokens = 40, int? topLogprobs = null) => new()
    {
        Prompt = _stories.Tokenizer.Encode(prompt),
        Options = new GenerationOptions { MaxTokens = maxTokens, IgnoreEos = true, Sampling = SamplerOptions.Greedy },
        TopLogprobs = topLogprobs,
    };

    private static async Task<List<GeneratedPiece>> Read(GenerationStream stream)
    {
        var pieces = new List<GeneratedPiece>();
        await foreach (var piece in stream.Pieces.ReadAllAsync()) pieces.Add(piece);
        await stream.Completion;
        return pieces;
    }

    private static int[] Tokens(IEnumerable<GeneratedPiece> pieces) => pieces.Where(p => p.TokenId >= 0).Select(p => p.TokenId).ToArray();

    private static string Text(IEnumerable<GeneratedPiece> pieces) => string.Concat(pieces.Select(p => p.Text));

    private CascadeGenerationService Cascade(IGenerationService small, IGenerationService large, double? threshold = null,
        CascadeMeasure measure = CascadeMeasure.MeanLogprob, TimeSpan? largeWithinBudget = null) =>
        new(small, large, new CascadeOptions { Threshold = threshold, Measure = measure, LargeWithinBudget = largeWithinBudget });

    [Theory]
    [InlineData(CascadeMeasure.MeanLogprob, double.PositiveInfinity)]
    [InlineData(CascadeMeasure.MeanEntropy, double.NegativeInfinity)]
    public async Task Always_escalating_answers_with_the_large_models_own_output(CascadeMeasure measure, double threshold)
    {
        // stories260K as the small model, so its held-back tokens are text the large (random) model would not write.
        var cascade = Cascade(_storiesService, _randomService, threshold, measure);
        var request = Greedy("Once upon a time");
        var expected = await Read(_randomService.Submit(request));
        var smallOwn = await Read(_storiesService.Submit(request));
        Assert.NotEqual(Tokens(smallOwn).Take(8), Tokens(expected).Take(8));

        var answer = await Read(cascade.Submit(request));
        Assert.Equal(Tokens(expected), Tokens(answer));
        Assert.Equal(Text(expected), Text(answer));
        Assert.All(answer, piece => Assert.Null(piece.Logprob));
        Assert.Equal(1, cascade.Statistics[CascadePath.Escalated].Requests);
        Assert.Equal(0, cascade.Statistics[CascadePath.Small].Requests);
    }

    [Theory]
    [InlineData(null)]
    [InlineData(3)]
    public async Task Never_escalating_answers_with_the_small_models_own_output_and_logprobs_only_when_asked(int? topLogprobs)
    {
        var cascade = Cascade(_randomService, _storiesService, double.NegativeInfinity);
        var request = Greedy("Lily and Ben", topLogprobs: topLogprobs);
        var expected = await Read(_randomService.Submit(request));
        var answer = cascade.Submit(request);
        var pieces = await Read(answer);
        Assert.Equal(Tokens(expected), Tokens(pieces));
        Assert.Equal(Text(expected), Text(pieces));
        Assert.Equal(expected.Select(p => p.Logprob), pieces.Select(p => p.Logprob));
        Assert.Equal(expected.Select(p => p.TopLogprobs?.Length), pieces.Select(p => p.TopLogprobs?.Length));
        var summary = await answer.Completion;
        Assert.Equal(40, summary.GeneratedTokens);
        Assert.Equal(1, cascade.Statistics[CascadePath.Small].Requests);
        Assert.Equal(0, cascade.Statistics[CascadePath.Escalated].Requests);
    }

    [Theory]
    [InlineData(CascadeMeasure.MeanLogprob)]
    [InlineData(CascadeMeasure.MeanEntropy)]
    public async Task The_default_threshold_keeps_a_sure_small_model_and_escalates_an_unsure_one(CascadeMeasure measure)
    {
        string[] prompts = ["Once upon a time", "Lily and Ben went to the park", "The cat sat"];
        var sure = Cascade(_storiesService, _randomService, measure: measure);
        var unsure = Cascade(_randomService, _storiesService, measure: measure);
        foreach (string prompt in prompts)
        {
            var request = Greedy(prompt, 24);
            Assert.Equal(Tokens(await Read(_storiesService.Submit(request))), Tokens(await Read(sure.Submit(request))));
            Assert.Equal(Tokens(await Read(_storiesService.Submit(request))), Tokens(await Read(unsure.Submit(request))));
        }

        var kept = sure.Statistics[CascadePath.Small];
        var escalated = unsure.Statistics[CascadePath.Escalated];
        Assert.Equal((3, 0, 0), (kept.Requests, sure.Statistics[CascadePath.Escalated].Requests, sure.Statistics[CascadePath.Large].Requests));
        Assert.Equal((0, 3, 0), (unsure.Statistics[CascadePath.Small].Requests, escalated.Requests, unsure.Statistics[CascadePath.Large].Requests));
        Assert.True(kept.MeanLatency > TimeSpan.Zero && escalated.MeanLatency > TimeSpan.Zero);
        // The measures on either side of the threshold, as the statistics report them.
        double threshold = sure.Options.EffectiveThreshold;
        if (measure == CascadeMeasure.MeanLogprob) Assert.True(kept.MeanConfidence > threshold && escalated.MeanConfidence < threshold);
        else Assert.True(kept.MeanConfidence < threshold && escalated.MeanConfidence > threshold);
    }

    [Fact]
    public async Task A_request_whose_latency_budget_allows_goes_straight_to_the_large_model()
    {
        var cascade = Cascade(_storiesService, _randomService, double.NegativeInfinity, largeWithinBudget: TimeSpan.FromSeconds(10));
        var request = Greedy("The sun was hot");
        var large = Tokens(await Read(_randomService.Submit(request)));
        var small = Tokens(await Read(_storiesService.Submit(request)));

        Assert.Equal(large, Tokens(await Read(cascade.Submit(request with { LatencyBudget = TimeSpan.FromSeconds(30) }))));
        Assert.Equal(small, Tokens(await Read(cascade.Submit(request with { LatencyBudget = TimeSpan.FromSeconds(2) }))));
        Assert.Equal(small, Tokens(await Read(cascade.Submit(request))));
        Assert.Equal(1, cascade.Statistics[CascadePath.Large].Requests);
        Assert.Equal(2, cascade.Statistics[CascadePath.Small].Requests);
        Assert.Equal(0, cascade.Statistics[CascadePath.Large].ConfidenceSum);
    }

    [Fact]
    public async Task Cancelling_mid_stream_ends_the_stream_and_frees_the_models_sequence()
    {
        using var longService = new BatchScheduler(_random, new BatchSchedulerOptions { Parallel = 1, ContextLength = LongContext }, _randomPool);
        var cascade = Cascade(longService, _storiesService, double.NegativeInfinity);
        using var cancel = new CancellationTokenSource();
        var request = Greedy("Once upon a time", maxTokens: -1);
        var stream = cascade.Submit(request, cancel.Token);
        Assert.True(await stream.Pieces.WaitToReadAsync());
        cancel.Cancel();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(async () => { await foreach (var _ in stream.Pieces.ReadAllAsync()) { } });
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => stream.Completion);
        Assert.True(stream.Completion.IsCanceled);
        Assert.Equal(1, cascade.CancelledRequests);
        Assert.Equal(0, cascade.Statistics[CascadePath.Small].Requests);
        Assert.Equal(1, longService.CancelledRequests);
        // The small model's only sequence was given back: a next request runs as before.
        Assert.Equal(Tokens(await Read(longService.Submit(Greedy("Tom had a red ball")))), Tokens(await Read(cascade.Submit(Greedy("Tom had a red ball")))));
    }

    [Fact]
    public void Models_of_different_vocabularies_are_refused()
    {
        var spec = new SynthSpec { Name = "other", Dim = 32, Layers = 1, Heads = 2, FfnDim = 64, VocabSize = _stories.Info.VocabSize, ContextLength = Context };
        string path = Path.Combine(_folder, "other.gguf");
        ModelSynthesizer.Write(path, spec, null, threads: 2);
        using var other = LanguageModel.Load(path);
        using var service = new BatchScheduler(other, new BatchSchedulerOptions { Parallel = 1, ContextLength = Context }, _randomPool);
        var error = Assert.Throws<ArgumentException>(() => new CascadeGenerationService(_storiesService, service));
        Assert.Contains("do not share a vocabulary", error.Message);
    }

    [Fact]
    public void Models_whose_chat_templates_render_differently_are_refused()
    {
        var own = new ScriptedService(_randomService, new ChatPromptFormatter(_stories.Tokenizer, "{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}"));
        var error = Assert.Throws<ArgumentException>(() => new CascadeGenerationService(_storiesService, own));
        Assert.Contains("render chats differently", error.Message);
        // No template on either side (ChatML for both) is the same handling.
        _ = new CascadeGenerationService(_storiesService, new ScriptedService(_randomService, new ChatPromptFormatter(_stories.Tokenizer, null)));
    }

    [Fact]
    public void Bad_options_are_refused()
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => new CascadeGenerationService(_storiesService, _randomService, new CascadeOptions { ProbeTokens = 0 }));
        Assert.Throws<ArgumentOutOfRangeException>(() => new CascadeGenerationService(_storiesService, _randomService, new CascadeOptions { Threshold = double.NaN }));
    }

    // ---- Scripted models: the test decides when each piece arrives. ----

    /// <summary>A service over a real model's tokenizer and template whose streams the test writes by hand.</summary>
    private sealed class ScriptedService(BatchScheduler real, ChatPromptFormatter? chat = null) : IGenerationService
    {
        public List<(GenerationRequest Request, CancellationToken Cancellation, Channel<GeneratedPiece> Output, TaskCompletionSource<GenerationSummary> Done)> Submitted { get; } = [];
        public string ModelId => real.ModelId;
        public ModelInfo ModelInfo => real.ModelInfo;
        public Velo.Text.TokenizerBase Tokenizer => real.Tokenizer;
        public ChatPromptFormatter Chat => chat ?? real.Chat;
        public int ContextLength => real.ContextLength;
        public int Parallel => 1;
        public int QueueLength => 0;
        public int ActiveSequences => 0;
        public long CancelledRequests => 0;
        public SpeculationCounters Speculation => default;

        /// <summary>Refuses every request as a full queue does.</summary>
        public bool Busy { get; init; }

        public GenerationStream Submit(GenerationRequest request, CancellationToken cancellation = default)
        {
            if (Busy) throw new SchedulerBusyException(0);
            var output = Channel.CreateUnbounded<GeneratedPiece>();
            var done = new TaskCompletionSource<GenerationSummary>(TaskCreationOptions.RunContinuationsAsynchronously);
            cancellation.Register(() =>
            {
                output.Writer.TryComplete(new OperationCanceledException(cancellation));
                done.TrySetCanceled(cancellation);
            });
            Submitted.Add((request, cancellation, output, done));
            return new GenerationStream(output.Reader, done.Task);
        }

        public static GeneratedPiece Piece(int token, float logprob) => new(token, $"<{token}>", TimeSpan.Zero, new TokenLogprob(token, logprob), [], 1f);

        public void Finish(int index, int tokens)
        {
            Submitted[index].Output.Writer.TryComplete();
            Submitted[index].Done.TrySetResult(new GenerationSummary(3, 0, tokens, FinishReason.Length, TimeSpan.Zero));
        }
    }

    [Fact]
    public async Task Held_back_tokens_never_reach_the_stream_when_the_small_model_escalates()
    {
        var small = new ScriptedService(_storiesService);
        var large = new ScriptedService(_randomService);
        var cascade = new CascadeGenerationService(small, large, new CascadeOptions { ProbeTokens = 4, Threshold = -1.0 });
        var stream = cascade.Submit(Greedy("Once upon a time"));
        var probe = Assert.Single(small.Submitted);
        Assert.Equal(0, probe.Request.TopLogprobs);   // asked for, to be judged
        for (int i = 0; i < 3; i++) probe.Output.Writer.TryWrite(ScriptedService.Piece(100 + i, -3f));
        await Task.Delay(50);
        Assert.False(stream.Pieces.TryPeek(out _));
        Assert.Empty(large.Submitted);

        probe.Output.Writer.TryWrite(ScriptedService.Piece(103, -3f));
        await WaitFor(() => large.Submitted.Count == 1);
        Assert.True(probe.Cancellation.IsCancellationRequested, "the abandoned small generation was not stopped");
        var answer = large.Submitted[0];
        Assert.Null(answer.Request.TopLogprobs);
        answer.Output.Writer.TryWrite(ScriptedService.Piece(7, -0.1f));
        answer.Output.Writer.TryWrite(ScriptedService.Piece(8, -0.1f));
        large.Finish(0, 2);
        var pieces = await Read(stream);
        Assert.Equal([7, 8], Tokens(pieces));
        Assert.Equal(1, cascade.Statistics[CascadePath.Escalated].Requests);
        Assert.Equal(-3.0, cascade.Statistics[CascadePath.Escalated].MeanConfidence, 5);
    }

    [Fact]
    public async Task A_confident_small_model_releases_its_held_tokens_then_streams_on()
    {
        var small = new ScriptedService(_storiesService);
        var large = new ScriptedService(_randomService);
        var cascade = new CascadeGenerationService(small, large, new CascadeOptions { ProbeTokens = 2, Threshold = -1.0 });
        var stream = cascade.Submit(Greedy("Once upon a time"));
        var probe = small.Submitted[0];
        probe.Output.Writer.TryWrite(ScriptedService.Piece(1, -0.5f));
        await Task.Delay(50);
        Assert.False(stream.Pieces.TryPeek(out _));
        probe.Output.Writer.TryWrite(ScriptedService.Piece(2, -0.2f));
        Assert.Equal(1, (await stream.Pieces.ReadAsync()).TokenId);
        Assert.Equal(2, (await stream.Pieces.ReadAsync()).TokenId);
        probe.Output.Writer.TryWrite(ScriptedService.Piece(3, -9f));   // past the probe: no longer judged
        Assert.Equal(3, (await stream.Pieces.ReadAsync()).TokenId);
        small.Finish(0, 3);
        await stream.Completion;
        Assert.Empty(large.Submitted);
        Assert.Equal(1, cascade.Statistics[CascadePath.Small].Requests);
    }

    [Fact]
    public async Task An_escalation_the_large_models_full_queue_refuses_keeps_the_small_models_answer()
    {
        var small = new ScriptedService(_storiesService);
        var cascade = new CascadeGenerationService(small, new ScriptedService(_randomService) { Busy = true }, new CascadeOptions { ProbeTokens = 2 });
        var stream = cascade.Submit(Greedy("Once upon a time"));
        var probe = small.Submitted[0];
        probe.Output.Writer.TryWrite(ScriptedService.Piece(1, -5f));
        probe.Output.Writer.TryWrite(ScriptedService.Piece(2, -5f));
        small.Finish(0, 2);
        var answer = Tokens(await Read(stream));
        Assert.Equal([1, 2], answer);
        Assert.False(probe.Cancellation.IsCancellationRequested);
        Assert.Equal((1L, 0L, 1L), (cascade.Statistics[CascadePath.Small].Requests, cascade.Statistics[CascadePath.Escalated].Requests, cascade.Statistics.BusyLarge));
    }

    [Fact]
    public async Task Cancelling_while_the_small_model_is_judged_cancels_its_generation()
    {
        var small = new ScriptedService(_storiesService);
        var cascade = new CascadeGenerationService(small, new ScriptedService(_randomService), new CascadeOptions { ProbeTokens = 4 });
        using var cancel = new CancellationTokenSource();
        var stream = cascade.Submit(Greedy("Once upon a time"), cancel.Token);
        small.Submitted[0].Output.Writer.TryWrite(ScriptedService.Piece(1, -0.1f));
        cancel.Cancel();
        Assert.True(small.Submitted[0].Cancellation.IsCancellationRequested);
        await Assert.ThrowsAnyAsync<OperationCanceledException>(async () => { await foreach (var _ in stream.Pieces.ReadAllAsync()) { } });
        Assert.True((await Task.WhenAny(stream.Completion)).IsCanceled);
        Assert.Equal(1, cascade.CancelledRequests);
    }

    private static async Task WaitFor(Func<bool> condition)
    {
        for (int i = 0; i < 500 && !condition(); i++) await Task.Delay(10);
        Assert.True(condition());
    }
}
