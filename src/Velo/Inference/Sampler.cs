using Velo.Sampling;

namespace Velo.Inference;

/// <summary>
/// The standard <see cref="SamplerChain"/> for a <see cref="SamplerOptions"/>, in llama.cpp's default order: logit
/// bias, penalties, then any constraint stages (a grammar's mask, say), then top-k, top-p and min-p on the softmax of
/// the logits, temperature and a seeded draw; or, when greedy, the most likely token after bias, penalties and
/// constraints. All scratch is allocated once for the vocabulary, so sampling a token allocates nothing. Same seed,
/// same logits, same choices.
/// </summary>
public sealed class Sampler
{
    /// <param name="logitBias">Added to these tokens' logits first (OpenAI's logit_bias).</param>
    /// <param name="constraints">Stages run after bias and penalties and before truncation, so a constraint that drops
    /// tokens is honoured whatever the truncation settings.</param>
    public Sampler(SamplerOptions options, int vocabSize, IReadOnlyDictionary<int, float>? logitBias = null,
        IEnumerable<ISamplingStage>? constraints = null)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(vocabSize, 1);
        Validate(options);
        Options = options;
        Chain = new SamplerChain(vocabSize, Stages(options, vocabSize, logitBias, constraints),
            options.IsGreedy ? new GreedySelector() : new DrawSelector(options.Seed ?? (ulong)Random.Shared.NextInt64()));
    }

    public SamplerOptions Options { get; }
    public SamplerChain Chain { get; }
    public int VocabSize => Chain.VocabSize;

    public static void Validate(SamplerOptions o)
    {
        if (float.IsNaN(o.Temperature)) throw new ArgumentException("temperature must be a number");
        if (o.TopK < 0) throw new ArgumentException($"top-k must be 0 (off) or positive, got {o.TopK}");
        if (!(o.TopP > 0 && o.TopP <= 1)) throw new ArgumentException($"top-p must be in (0, 1], got {o.TopP}");
        if (!(o.MinP >= 0 && o.MinP <= 1)) throw new ArgumentException($"min-p must be in [0, 1], got {o.MinP}");
        if (!(o.RepeatPenalty > 0)) throw new ArgumentException($"repeat penalty must be positive, got {o.RepeatPenalty}");
    }

    private static List<ISamplingStage> Stages(SamplerOptions o, int vocabSize, IReadOnlyDictionary<int, float>? logitBias,
        IEnumerable<ISamplingStage>? constraints)
    {
        var stages = new List<ISamplingStage>();
        if (logitBias is { Count: > 0 }) stages.Add(new LogitBiasStage(logitBias, vocabSize));
        if (o.RepeatPenalty != 1 || o.FrequencyPenalty != 0 || o.PresencePenalty != 0)
            stages.Add(new RepetitionPenaltyStage(o.RepeatPenalty, o.FrequencyPenalty, o.PresencePenalty, o.PenaltyLastN, vocabSize));
        if (constraints != null) stages.AddRange(constraints);
        if (o.IsGreedy) return stages;
        if (o.TopK > 0) stages.Add(new TopKStage(o.TopK));
        if (o.TopP < 1) stages.Add(new TopPStage(o.TopP));
        if (o.MinP > 0) stages.Add(new MinPStage(o.MinP));
        stages.Add(new TemperatureStage(o.Temperature));
        return stages;
    }

    /// <summary>Chooses a token. <paramref name="history"/> is the sequence so far (prompt and generated), for the penalties.</summary>
    public int Sample(ReadOnlySpan<float> logits, ReadOnlySpan<int> history) => Chain.Sample(logits, history);

    /// <summary>The distribution a sample would be drawn from; see <see cref="SamplerChain.Distribution"/>.</summary>
    public Candidates Distribution(ReadOnlySpan<float> logits, ReadOnlySpan<int> history) => Chain.Distribution(logits, history);

    /// <summary>
    /// The log-probability of <paramref name="token"/> and of the <paramref name="alternatives"/> most likely tokens
    /// (ties: lower id first) under the model's raw distribution, <paramref name="logits"/> before bias, penalties and
    /// truncation, as OpenAI's <c>logprobs</c> define them.
    /// </summary>
    public static (TokenLogprob Chosen, TokenLogprob[] Top) Logprobs(ReadOnlySpan<float> logits, int token, int alternatives) =>
        Logprobs(logits, token, alternatives, out _);

    /// <inheritdoc cref="Logprobs(ReadOnlySpan{float}, int, int)"/>
    /// <param name="entropy">The raw distribution's entropy in nats, from the same pass (a router's measure of confidence).</param>
    public static (TokenLogprob Chosen, TokenLogprob[] Top) Logprobs(ReadOnlySpan<float> logits, int token, int alternatives, out float entropy)
    {
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual((uint)token, (uint)logits.Length, nameof(token));
        ArgumentOutOfRangeException.ThrowIfNegative(alternatives);
        float max = float.NegativeInfinity;
        foreach (float l in logits) max = MathF.Max(max, l);
        // H = -sum p_i (l_i - logSum) = ln S - sum e_i (l_i - max) / S, with e_i = exp(l_i - max) and S their sum.
        double sum = 0, weighted = 0;
        foreach (float l in logits)
        {
            double e = Math.Exp(l - max);
            sum += e;
            if (e > 0) weighted += e * (l - max);
        }
        float logSum = max + (float)Math.Log(sum);
        entropy = (float)Math.Max(0, Math.Log(sum) - weighted / sum);

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
}
