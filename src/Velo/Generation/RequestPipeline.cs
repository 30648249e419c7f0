using Velo.Sampling;
using Velo.Sampling.Grammars;
using System.Diagnostics;
using Velo.Inference;
using Velo.Text;

namespace Velo.Generation;

/// <summary>
/// Everything one request does with the logits its sequence gets: sample a token, decode its text, hold back and
/// detect stop strings, count, and hand each piece to the output (a channel for the scheduler, a queue for the
/// synchronous generator). It knows nothing of batches or threads.
/// </summary>
public sealed class RequestPipeline
{
    private readonly Sampler _sampler;
    private readonly GrammarMatcher? _grammar;
    private readonly TokenizerBase _tokenizer;
    private readonly StreamingDecoder _decoder;
    private readonly StopStringMatcher _stop;
    private readonly Action<GeneratedPiece> _emit;
    private readonly int _maxTokens;
    private ISpeculator? _speculator;
    private UniformRandom _random;

    /// <summary>Validates the request (<see cref="Validate"/>) and prepares its sampler; the clock starts now, so
    /// each piece's <see cref="GeneratedPiece.Elapsed"/> counts queueing too.</summary>
    public RequestPipeline(GenerationRequest request, TokenizerBase tokenizer, int vocabSize, int contextLength, Action<GeneratedPiece> emit)
    {
        Validate(request, vocabSize, contextLength);
        Request = request;
        _grammar = request.Options.Grammar is { } grammar ? new GrammarMatcher(grammar, tokenizer, vocabSize) : null;
        _sampler = new Sampler(request.Options.Sampling, vocabSize, request.LogitBias, _grammar is null ? null : [new GrammarStage(_grammar)]);
        _tokenizer = tokenizer;
        var shown = request.Options.ShownControlTokens.Select(text => tokenizer.TokenId(text)).Where(id => id >= 0).ToHashSet();
        _decoder = new StreamingDecoder(tokenizer, skipSpecial: true, shown.Count > 0 ? shown : null);
        _stop = new StopStringMatcher(request.Options.Stop);
        _emit = emit;
        _maxTokens = request.Options.MaxTokens < 0 ? int.MaxValue : request.Options.MaxTokens;
    }

    public GenerationRequest Request { get; }
    public Stopwatch Clock { get; } = Stopwatch.StartNew();
    public int GeneratedTokens { get; private set; }

    /// <summary>Where the drafts the sequence's passes verify come from, for the accept/reject rule; null when they are
    /// not speculated (then a draft is kept only when the token sampled at its row is that draft).</summary>
    public ISpeculator? Speculator
    {
        get => _speculator;
        set
        {
            _speculator = value;
            _speculator?.Begin(Request.Options.Sampling);
            _random = new UniformRandom(Request.Options.Sampling.Seed is ulong seed ? seed ^ 0x2545F4914F6CDD1D : (ulong)Random.Shared.NextInt64());
        }
    }

    /// <summary>Drafts verified and kept so far.</summary>
    public int AcceptedDrafts { get; private set; }

    /// <summary>Prompt tokens whose keys and values were already in the memory when the request started.</summary>
    public int CachedPromptTokens { get; set; }

    /// <summary>Refuses a request no model of this size and context could run: <see cref="PromptTooLongException"/> when
    /// the prompt leaves no room to generate, <see cref="ArgumentException"/> for ids outside the vocabulary or bad logprob
    /// settings. Sampling options and logit bias are checked by the sampler the constructor builds.</summary>
    public static void Validate(GenerationRequest request, int vocabSize, int contextLength)
    {
        ArgumentNullException.ThrowIfNull(request);
        if (request.Prompt.Count == 0) throw new ArgumentException("the prompt is empty: it needs at least one token (usually BOS)");
        if (request.Prompt.Count >= contextLength) throw new PromptTooLongException(request.Prompt.Count, contextLength);
        foreach (int token in request.Prompt)
            if ((uint)token >= (uint)vocabSize)
                throw new ArgumentException($"token id {token} is outside the vocabulary of {vocabSize}");
        if (request.TopLogprobs is < 0 or > GenerationRequest.MaxTopLogprobs)
            throw new ArgumentException($"top logprobs must be between 0 and {GenerationRequest.MaxTopLogprobs}");
    }

    /// <summary>
    /// Takes the sequence's logits rows of the last pass in order: samples each, emits it and appends it, going on to
    /// the next row only while the token agrees with the draft the pass ran there. Then settles the sequence's memory.
    /// Returns why the generation ended, or null when it goes on.
    /// </summary>
    public FinishReason? Advance(BatchPlanner planner, BatchSequence sequence)
    {
        FinishReason? end = null;
        for (int row = 0; row < sequence.LogitsRows; row++)
        {
            end = Next(planner.Logits(sequence, row), sequence, row, out int token);
            if (end != null || !sequence.Append(token)) break;
        }
        planner.Settle(sequence);
        return end;
    }

    /// <summary>Samples and emits one token; null when it is to be appended and generation goes on.</summary>
    private FinishReason? Next(ReadOnlySpan<float> logits, BatchSequence sequence, int row, out int token)
    {
        // A grammar no token can continue (its next bytes are in no token, and the model has no end-of-generation
        // token) ends the generation rather than leaving nothing to sample.
        if (_grammar != null && _grammar.NextTokens().IndexOfAnyExcept(0UL) < 0)
        {
            token = -1;
            return FinishReason.Stop;
        }
        var sampled = SampleNext(logits, sequence.History, sequence.PendingDraft, row);
        token = sampled.Id;
        if (_tokenizer.IsEndOfGeneration(sampled.Id) && !Request.Options.IgnoreEos) return FinishReason.Stop;
        _grammar?.Accept(sampled.Id);
        if (_grammar is { Ended: true }) return FinishReason.Stop;

        GeneratedTokens++;
        var (text, stopped) = _stop.Push(_decoder.Append(sampled.Id));
        _emit(new GeneratedPiece(sampled.Id, text, Clock.Elapsed, sampled.Logprob, sampled.TopLogprobs, sampled.Entropy));
        if (stopped || _grammar is { IsComplete: true }) return FinishReason.Stop;
        if (GeneratedTokens >= _maxTokens || sequence.IsFull) return FinishReason.Length;
        return null;
    }

    // ---- Sampling: the one place a token is chosen from logits (the sampler chain, log-probabilities). ----

    private readonly record struct SampledToken(int Id, TokenLogprob? Logprob, TokenLogprob[]? TopLogprobs, float? Entropy = null);

    /// <summary>Chooses the token after <paramref name="history"/>, with its log-probabilities when the request wants them.
    /// <paramref name="draft"/> is the speculated token the pass ran next (proposal <paramref name="index"/>), or -1.</summary>
    private SampledToken SampleNext(ReadOnlySpan<float> logits, ReadOnlySpan<int> history, int draft, int index)
    {
        int token = draft >= 0 && _speculator != null ? Verify(logits, history, draft, index) : _sampler.Sample(logits, history);
        if (Request.TopLogprobs is not int alternatives || _tokenizer.IsEndOfGeneration(token) && !Request.Options.IgnoreEos)
            return new SampledToken(token, null, null);
        var (chosen, top) = Sampler.Logprobs(logits, token, alternatives, out float entropy);
        return new SampledToken(token, chosen, top, entropy);
    }

    /// <summary>
    /// Speculative sampling (Leviathan et al. 2023, Chen et al. 2023): keeps the draft x with probability
    /// min(1, p(x)/q(x)), p the target's sampling distribution and q the one x was proposed from; otherwise draws from
    /// normalize(max(0, p - q)). Either way the token follows p exactly. Greedy, p is a point mass and this keeps x
    /// exactly when it is the target's choice, and otherwise returns that choice.
    /// </summary>
    private int Verify(ReadOnlySpan<float> logits, ReadOnlySpan<int> history, int draft, int index)
    {
        var speculator = _speculator!;
        var p = _sampler.Distribution(logits, history);
        var ids = p.Ids;
        var probabilities = p.Probabilities;
        float target = 0;
        for (int i = 0; i < ids.Length; i++)
        {
            if (ids[i] != draft) continue;
            target = probabilities[i];
            break;
        }
        if (_random.Next() * speculator.Probability(index, draft) < target)
        {
            AcceptedDrafts++;
            return draft;
        }
        double residual = 0;
        for (int i = 0; i < ids.Length; i++) residual += Math.Max(0f, probabilities[i] - speculator.Probability(index, ids[i]));
        // A rejection needs p(x) < q(x), and as both sum to 1, p then exceeds q elsewhere: only rounding can leave no
        // residual mass, and then p itself is the right distribution.
        bool useTarget = residual <= 0;
        double point = _random.Next() * (useTarget ? 1 : residual), cumulative = 0;
        int chosen = ids[0];
        for (int i = 0; i < ids.Length; i++)
        {
            float weight = useTarget ? probabilities[i] : Math.Max(0f, probabilities[i] - speculator.Probability(index, ids[i]));
            if (weight <= 0) continue;
            chosen = ids[i];
            cumulative += weight;
            if (point < cumulative) break;
        }
        return chosen;
    }

    // ---- End of sampling. ----

    /// <summary>Releases the text held back for stop strings and returns what the generation did.</summary>
    public GenerationSummary Finish(FinishReason reason)
    {
        string rest = _stop.Flush();
        if (rest.Length > 0) _emit(new GeneratedPiece(-1, rest, Clock.Elapsed));
        return new GenerationSummary(Request.Prompt.Count, CachedPromptTokens, GeneratedTokens, reason, Clock.Elapsed);
    }
}
