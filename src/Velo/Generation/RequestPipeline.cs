using Velo.Sampling;
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
    private readonly TokenizerBase _tokenizer;
    private readonly StreamingDecoder _decoder;
    private readonly StopStringMatcher _stop;
    private readonly Action<GeneratedPiece> _emit;
    private readonly int _maxTokens;

    /// <summary>Validates the request (<see cref="Validate"/>) and prepares its sampler; the clock starts now, so
    /// each piece's <see cref="GeneratedPiece.Elapsed"/> counts queueing too.</summary>
    public RequestPipeline(GenerationRequest request, TokenizerBase tokenizer, int vocabSize, int contextLength, Action<GeneratedPiece> emit)
    {
        Validate(request, vocabSize, contextLength);
        Request = request;
        _sampler = new Sampler(request.Options.Sampling, vocabSize, request.LogitBias);
        _tokenizer = tokenizer;
        _decoder = new StreamingDecoder(tokenizer, skipSpecial: true);
        _stop = new StopStringMatcher(request.Options.Stop);
        _emit = emit;
        _maxTokens = request.Options.MaxTokens < 0 ? int.MaxValue : request.Options.MaxTokens;
    }

    public GenerationRequest Request { get; }
    public Stopwatch Clock { get; } = Stopwatch.StartNew();
    public int GeneratedTokens { get; private set; }

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
            end = Next(planner.Logits(sequence, row), sequence, out int token);
            if (end != null || !sequence.Append(token)) break;
        }
        planner.Settle(sequence);
        return end;
    }

    /// <summary>Samples and emits one token; null when it is to be appended and generation goes on.</summary>
    private FinishReason? Next(ReadOnlySpan<float> logits, BatchSequence sequence, out int token)
    {
        var sampled = SampleNext(logits, sequence.History);
        token = sampled.Id;
        if (_tokenizer.IsEndOfGeneration(sampled.Id) && !Request.Options.IgnoreEos) return FinishReason.Stop;

        GeneratedTokens++;
        var (text, stopped) = _stop.Push(_decoder.Append(sampled.Id));
        _emit(new GeneratedPiece(sampled.Id, text, Clock.Elapsed, sampled.Logprob, sampled.TopLogprobs));
        if (stopped) return FinishReason.Stop;
        if (GeneratedTokens >= _maxTokens || sequence.IsFull) return FinishReason.Length;
        return null;
    }

    // ---- Sampling: the one place a token is chosen from logits (the sampler chain, log-probabilities). ----

    private readonly record struct SampledToken(int Id, TokenLogprob? Logprob, TokenLogprob[]? TopLogprobs);

    /// <summary>Chooses the token after <paramref name="history"/>, with its log-probabilities when the request wants them.</summary>
    private SampledToken SampleNext(ReadOnlySpan<float> logits, ReadOnlySpan<int> history)
    {
        int token = _sampler.Sample(logits, history);
        if (Request.TopLogprobs is not int alternatives || _tokenizer.IsEndOfGeneration(token) && !Request.Options.IgnoreEos)
            return new SampledToken(token, null, null);
        var (chosen, top) = Sampler.Logprobs(logits, token, alternatives);
        return new SampledToken(token, chosen, top);
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
