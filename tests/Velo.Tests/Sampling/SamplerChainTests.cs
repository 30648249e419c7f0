using Velo.Inference;
using Velo.Sampling;

namespace Velo.Tests.Sampling;

public class SamplerChainTests
{
    private static readonly float[] Temperatures = [0, -1, 0.1f, 0.8f, 1, 1.5f, 5];
    private static readonly int[] TopKs = [0, 1, 2, 5, 40, 100_000];
    private static readonly float[] TopPs = [1, 0.95f, 0.5f, 0.1f];
    private static readonly float[] MinPs = [0, 0.05f, 0.3f];
    private static readonly float[] RepeatPenalties = [1, 1.1f, 0.9f];
    private static readonly float[] OpenAiPenalties = [0, 0.5f, -0.25f];
    private static readonly int[] LastNs = [-1, 0, 3, 64];

    /// <summary>Logits with the awkward cases mixed in: exact ties, repeated maxima, -inf, large magnitudes.</summary>
    private static float[] RandomLogits(Random rng, int n)
    {
        var logits = new float[n];
        int style = rng.Next(4);
        for (int i = 0; i < n; i++)
            logits[i] = style switch
            {
                0 => (float)(rng.NextDouble() * 8 - 4),
                1 => rng.Next(-3, 4), // many ties
                2 => (float)(rng.NextDouble() * 60 - 30),
                _ => rng.Next(10) == 0 ? float.NegativeInfinity : (float)(rng.NextDouble() * 2),
            };
        if (style == 3 && logits.All(float.IsNegativeInfinity)) logits[0] = 0;
        return logits;
    }

    private static SamplerOptions RandomOptions(Random rng) => new()
    {
        Temperature = Temperatures[rng.Next(Temperatures.Length)],
        TopK = TopKs[rng.Next(TopKs.Length)],
        TopP = TopPs[rng.Next(TopPs.Length)],
        MinP = MinPs[rng.Next(MinPs.Length)],
        RepeatPenalty = RepeatPenalties[rng.Next(RepeatPenalties.Length)],
        FrequencyPenalty = OpenAiPenalties[rng.Next(OpenAiPenalties.Length)],
        PresencePenalty = OpenAiPenalties[rng.Next(OpenAiPenalties.Length)],
        PenaltyLastN = LastNs[rng.Next(LastNs.Length)],
        Seed = (ulong)rng.NextInt64(),
    };

    private static Dictionary<int, float>? RandomBias(Random rng, int vocabSize)
    {
        if (rng.Next(3) != 0) return null;
        var bias = new Dictionary<int, float>();
        for (int i = rng.Next(1, 6); i > 0; i--) bias[rng.Next(vocabSize)] = rng.Next(2) == 0 ? -100 : (float)(rng.NextDouble() * 10 - 5);
        return bias;
    }

    [Fact]
    public void SameSeedSameChoicesAsTheSamplerBeforeTheChain()
    {
        var rng = new Random(20240610);
        int[] vocabSizes = [1, 2, 7, 9, 64, 100, 1000, 4099];
        int compared = 0;
        for (int run = 0; run < 600; run++)
        {
            int vocab = vocabSizes[rng.Next(vocabSizes.Length)];
            var options = RandomOptions(rng);
            var bias = RandomBias(rng, vocab);
            var legacy = new LegacySampler(options, vocab);
            var chain = new Sampler(options, vocab, bias);
            var history = new List<int>();
            for (int i = rng.Next(5); i > 0; i--) history.Add(rng.Next(vocab));
            for (int step = 0; step < 12; step++)
            {
                var logits = RandomLogits(rng, vocab);
                // Before the chain, the scheduler applied logit bias to a copy of the logits.
                var biased = (float[])logits.Clone();
                if (bias != null) foreach (var (id, value) in bias) biased[id] += value;
                int expected = legacy.Sample(biased, history.ToArray());
                int actual = chain.Sample(logits, history.ToArray());
                Assert.True(expected == actual, $"run {run} step {step}: {options}, vocab {vocab}: legacy {expected}, chain {actual}");
                history.Add(actual);
                compared++;
            }
        }
        Assert.Equal(600 * 12, compared);
    }

    [Fact]
    public void SameSeedSameChoicesOnALlama3SizedVocabulary()
    {
        const int vocab = 128256;
        var rng = new Random(7);
        foreach (var options in new[]
        {
            new SamplerOptions { Seed = 11 },
            new SamplerOptions { Seed = 12, RepeatPenalty = 1.1f, FrequencyPenalty = 0.2f, PresencePenalty = 0.1f },
            new SamplerOptions { Seed = 13, TopK = 0, TopP = 0.9f, MinP = 0 },
            SamplerOptions.Greedy with { RepeatPenalty = 1.3f },
        })
        {
            var legacy = new LegacySampler(options, vocab);
            var chain = new Sampler(options, vocab);
            var history = new List<int> { 1 };
            for (int step = 0; step < 6; step++)
            {
                var logits = RandomLogits(rng, vocab);
                int expected = legacy.Sample(logits, history.ToArray());
                Assert.Equal(expected, chain.Sample(logits, history.ToArray()));
                history.Add(expected);
            }
        }
    }

    [Fact]
    public void DistributionSumsToOneAndMatchesAReferenceSoftmax()
    {
        var rng = new Random(99);
        int checkedDistributions = 0;
        for (int run = 0; run < 400; run++)
        {
            int vocab = rng.Next(1, 3000);
            var options = RandomOptions(rng) with { Temperature = Temperatures[2 + rng.Next(Temperatures.Length - 2)] };
            var bias = RandomBias(rng, vocab);
            var logits = RandomLogits(rng, vocab);
            int[] history = Enumerable.Range(0, rng.Next(20)).Select(_ => rng.Next(vocab)).ToArray();
            var sampler = new Sampler(options, vocab, bias);
            var distribution = sampler.Distribution(logits, history);

            var (ids, probabilities) = ReferenceDistribution(logits, history, options, bias);
            Assert.Equal(ids, distribution.Ids.ToArray());
            double sum = 0;
            for (int i = 0; i < ids.Length; i++)
            {
                Assert.True(Math.Abs(distribution.Probabilities[i] - probabilities[i]) <= 1e-6,
                    $"run {run}: p({ids[i]}) = {distribution.Probabilities[i]}, reference {probabilities[i]}");
                sum += distribution.Probabilities[i];
            }
            Assert.InRange(sum, 1 - 1e-6, 1 + 1e-6);
            checkedDistributions++;
        }
        Assert.Equal(400, checkedDistributions);
    }

    /// <summary>
    /// The chain's distribution recomputed plainly: bias, penalties, a full sort (ties by id), top-k, then top-p and
    /// min-p on the softmax of what top-k kept, then the softmax of the kept logits / T, in double. The logits stay
    /// float, as the model's are (one scaled by 1/T in double instead would differ by 1e-5 at T = 0.1 and logit 30:
    /// that is the logits' precision, not the softmax's).
    /// </summary>
    private static (int[] Ids, double[] Probabilities) ReferenceDistribution(float[] raw, int[] history, SamplerOptions o,
        Dictionary<int, float>? bias)
    {
        var logits = (float[])raw.Clone();
        if (bias != null) foreach (var (id, value) in bias) logits[id] += value;
        var recent = o.PenaltyLastN < 0 || o.PenaltyLastN > history.Length ? history : history[^o.PenaltyLastN..];
        foreach (var group in recent.GroupBy(t => t))
        {
            float l = logits[group.Key];
            l = l > 0 ? l / o.RepeatPenalty : l * o.RepeatPenalty;
            logits[group.Key] = l - group.Count() * o.FrequencyPenalty - o.PresencePenalty;
        }
        var order = Enumerable.Range(0, logits.Length).OrderByDescending(i => logits[i]).ThenBy(i => i).ToList();
        if (o.TopK > 0) order = order.Take(o.TopK).ToList();
        // Which tokens survive a cut is decided on float probabilities, as the sampler always has: a cut that lands
        // exactly between tied tokens would otherwise depend on the last bit.
        float max = logits[order[0]];
        var e = order.Select(i => MathF.Exp(logits[i] - max)).ToArray();
        double total = e.Sum(x => (double)x);
        var p = e.Select(x => (float)(x / total)).ToArray();
        int kept = order.Count;
        if (o.TopP < 1)
        {
            double cumulative = 0;
            for (int i = 0; i < order.Count; i++)
                if ((cumulative += p[i]) >= o.TopP)
                {
                    kept = i + 1;
                    break;
                }
        }
        if (o.MinP > 0)
        {
            int n = 1;
            while (n < kept && p[n] >= p[0] * o.MinP) n++;
            kept = n;
        }
        var ids = order.Take(kept).ToArray();
        float inverse = 1f / o.Temperature;
        double scaledMax = logits[ids[0]] * inverse;
        var weights = ids.Select(i => Math.Exp((double)(logits[i] * inverse) - scaledMax)).ToArray();
        double sum = weights.Sum();
        return (ids, weights.Select(w => w / sum).ToArray());
    }

    [Fact]
    public void GreedyDistributionIsAllOnTheChosenToken()
    {
        var logits = RandomLogits(new Random(3), 5000);
        var sampler = new Sampler(SamplerOptions.Greedy with { RepeatPenalty = 1.2f }, 5000);
        int chosen = sampler.Sample(logits, [1, 2, 3]);
        var distribution = sampler.Distribution(logits, [1, 2, 3]);
        Assert.Equal([chosen], distribution.Ids.ToArray());
        Assert.Equal([1f], distribution.Probabilities.ToArray());
    }

    [Fact]
    public void DistributionDrawsNothingSoTheSeedDoesNotAdvance()
    {
        var logits = RandomLogits(new Random(4), 800);
        var options = new SamplerOptions { Seed = 5, TopK = 0, TopP = 1, MinP = 0, Temperature = 2 };
        var plain = new Sampler(options, 800);
        var asked = new Sampler(options, 800);
        for (int i = 0; i < 50; i++)
        {
            asked.Distribution(logits, []);
            Assert.Equal(plain.Sample(logits, []), asked.Sample(logits, []));
        }
    }

    [Fact]
    public void DrawLeavesTheDistributionItDrewFrom()
    {
        var logits = RandomLogits(new Random(6), 3000);
        var sampler = new Sampler(new SamplerOptions { Seed = 8 }, 3000);
        var expected = new Sampler(new SamplerOptions { Seed = 8 }, 3000).Distribution(logits, []);
        int chosen = sampler.Sample(logits, []);
        var left = sampler.Chain.Candidates;
        Assert.Equal(expected.Ids.ToArray(), left.Ids.ToArray());
        Assert.Equal(expected.Probabilities.ToArray(), left.Probabilities.ToArray());
        Assert.Contains(chosen, left.Ids.ToArray());
    }

    /// <summary>A grammar-like constraint: only even token ids may follow.</summary>
    private sealed class EvenTokensOnly : ISamplingStage
    {
        private readonly bool[] _allowed;

        public EvenTokensOnly(int vocabSize) => _allowed = Enumerable.Range(0, vocabSize).Select(id => id % 2 == 0).ToArray();

        public void Apply(Candidates candidates, in SamplingContext context) => candidates.Retain(_allowed);
    }

    [Theory]
    [InlineData(0f)]
    [InlineData(0.8f)]
    [InlineData(3f)]
    public void AConstraintStagePlugsInWithoutTouchingTheOthers(float temperature)
    {
        const int vocab = 2000;
        var rng = new Random(12);
        var sampler = new Sampler(new SamplerOptions { Temperature = temperature, Seed = 1, RepeatPenalty = 1.1f, TopK = 5 }, vocab,
            new Dictionary<int, float> { [1] = 50 }, [new EvenTokensOnly(vocab)]);
        for (int i = 0; i < 200; i++)
        {
            var logits = RandomLogits(rng, vocab);
            Assert.Equal(0, sampler.Sample(logits, [1, 3]) % 2);
            var distribution = sampler.Distribution(logits, [1, 3]);
            Assert.All(distribution.Ids.ToArray(), id => Assert.Equal(0, id % 2));
            Assert.InRange(distribution.Probabilities.ToArray().Sum(p => (double)p), 1 - 1e-6, 1 + 1e-6);
        }
    }

    [Fact]
    public void BiasAndPenaltiesWorkOnCandidatesAlreadyNarrowed()
    {
        // Stages after top-k see sorted, truncated candidates rather than the whole vocabulary in order.
        float[] logits = [1f, 5f, 4f, 3f, 2f, 0f];
        var chain = new SamplerChain(6, [new TopKStage(3), new LogitBiasStage(new Dictionary<int, float> { [3] = 10, [5] = 100 }, 6),
            new RepetitionPenaltyStage(2f, 0, 0, -1, 6)], new GreedySelector());
        // Top-3 keeps 1, 2, 3 (5 is gone, so its bias is moot); 3 gets 13, halved by the repeat penalty to 6.5 > 5.
        Assert.Equal(3, chain.Sample(logits, [3]));
        Assert.Equal([3], chain.Distribution(logits, []).Ids.ToArray());
        var harsher = new SamplerChain(6, [new TopKStage(3), new LogitBiasStage(new Dictionary<int, float> { [3] = 10 }, 6),
            new RepetitionPenaltyStage(4f, 0, 0, -1, 6)], new GreedySelector());
        Assert.Equal(1, harsher.Sample(logits, [3, 3])); // 13 / 4 = 3.25 < 5, penalized once however often seen
        Assert.Equal(2, harsher.Sample(logits, [3, 1])); // 5 / 4 < 4
    }

    [Fact]
    public void LogprobsAreTheRawLogSoftmax()
    {
        var rng = new Random(21);
        var logits = RandomLogits(rng, 1000);
        logits[17] = logits[18] = 9; // a tie at the top: the lower id comes first
        double max = logits.Max();
        double logSum = max + Math.Log(logits.Sum(l => Math.Exp(l - max)));
        var (chosen, top) = Sampler.Logprobs(logits, 500, 5);
        Assert.Equal(500, chosen.Id);
        Assert.Equal(logits[500] - logSum, chosen.Logprob, 1e-5);
        var expected = Enumerable.Range(0, 1000).OrderByDescending(i => logits[i]).ThenBy(i => i).Take(5).ToArray();
        Assert.Equal(expected, top.Select(t => t.Id).ToArray());
        for (int i = 0; i < 5; i++) Assert.Equal(logits[expected[i]] - logSum, top[i].Logprob, 1e-5);
        Assert.Empty(Sampler.Logprobs(logits, 0, 0).Top);
    }

    [Fact]
    public void TheEntropyBesideTheLogprobsIsTheRawDistributions()
    {
        var logits = RandomLogits(new Random(22), 1000);
        double max = logits.Max();
        double logSum = max + Math.Log(logits.Sum(l => Math.Exp(l - max)));
        double expected = -logits.Sum(l => Math.Exp(l - logSum) * (l - logSum));
        Sampler.Logprobs(logits, 3, 0, out float entropy);
        Assert.Equal(expected, entropy, 1e-4);
        Sampler.Logprobs(new float[64], 3, 0, out float uniform);
        Assert.Equal(Math.Log(64), uniform, 1e-5);
        float[] certain = new float[64];
        certain[5] = 1000;
        certain[6] = float.NegativeInfinity;
        Sampler.Logprobs(certain, 5, 0, out float none);
        Assert.Equal(0, none, 1e-6);
    }

    [Fact]
    public void SamplingWithBiasAndDistributionsAllocatesNothing()
    {
        var logits = RandomLogits(new Random(5), 32000);
        int[] history = [1, 2, 3, 4, 5];
        var bias = new Dictionary<int, float> { [7] = 2, [9] = -100 };
        var sampler = new Sampler(new SamplerOptions { Seed = 1, RepeatPenalty = 1.1f }, 32000, bias);
        var greedy = new Sampler(SamplerOptions.Greedy with { FrequencyPenalty = 0.5f }, 32000, bias);
        sampler.Sample(logits, history);
        sampler.Distribution(logits, history);
        greedy.Sample(logits, history);
        greedy.Distribution(logits, history);
        long before = GC.GetAllocatedBytesForCurrentThread();
        for (int i = 0; i < 20; i++)
        {
            sampler.Sample(logits, history);
            sampler.Distribution(logits, history);
            greedy.Sample(logits, history);
            greedy.Distribution(logits, history);
        }
        Assert.Equal(0, GC.GetAllocatedBytesForCurrentThread() - before);
    }
}
