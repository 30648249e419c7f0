using Velo.Inference;

namespace Velo.Tests.Inference;

public class SamplerTests
{
    private static float[] RandomLogits(int n, int seed)
    {
        var rng = new Random(seed);
        return Enumerable.Range(0, n).Select(_ => (float)(rng.NextDouble() * 8 - 4)).ToArray();
    }

    [Fact]
    public void GreedyPicksTheLargestLogit()
    {
        var logits = RandomLogits(1000, 1);
        int expected = Array.IndexOf(logits, logits.Max());
        Assert.Equal(expected, new Sampler(SamplerOptions.Greedy, 1000).Sample(logits, []));
    }

    [Fact]
    public void TopKOfOneIsGreedy()
    {
        var logits = RandomLogits(500, 2);
        var sampler = new Sampler(new SamplerOptions { Temperature = 5, TopK = 1, Seed = 3 }, 500);
        for (int i = 0; i < 20; i++) Assert.Equal(Array.IndexOf(logits, logits.Max()), sampler.Sample(logits, []));
    }

    [Fact]
    public void SameSeedSameChoicesDifferentSeedDifferentChoices()
    {
        var logits = RandomLogits(300, 4);
        int[] Run(ulong seed)
        {
            var s = new Sampler(new SamplerOptions { Temperature = 1.5f, TopK = 0, TopP = 1, MinP = 0, Seed = seed }, 300);
            return Enumerable.Range(0, 50).Select(_ => s.Sample(logits, [])).ToArray();
        }
        Assert.Equal(Run(42), Run(42));
        Assert.NotEqual(Run(42), Run(43));
    }

    [Fact]
    public void DrawsFollowTheSoftmaxDistribution()
    {
        float[] logits = [0f, 1f, 2f, -1f];
        double[] p = logits.Select(l => Math.Exp(l)).ToArray();
        double sum = p.Sum();
        var sampler = new Sampler(new SamplerOptions { Temperature = 1, TopK = 0, TopP = 1, MinP = 0, Seed = 7 }, 4);
        var counts = new int[4];
        const int draws = 40000;
        for (int i = 0; i < draws; i++) counts[sampler.Sample(logits, [])]++;
        for (int t = 0; t < 4; t++)
            Assert.InRange(counts[t] / (double)draws, p[t] / sum - 0.01, p[t] / sum + 0.01);
    }

    [Fact]
    public void TemperatureSharpensTheDistribution()
    {
        float[] logits = [0f, 1f];
        var cold = new Sampler(new SamplerOptions { Temperature = 0.25f, TopK = 0, TopP = 1, MinP = 0, Seed = 1 }, 2);
        int ones = Enumerable.Range(0, 4000).Count(_ => cold.Sample(logits, []) == 1);
        double expected = 1 / (1 + Math.Exp(-4.0)); // softmax of logits / 0.25
        Assert.InRange(ones / 4000.0, expected - 0.015, expected + 0.015);
    }

    [Fact]
    public void TopPKeepsTheSmallestSetReachingP()
    {
        // Probabilities ≈ 0.64, 0.24, 0.09, 0.03: top-p 0.8 keeps the first two only.
        float[] logits = [3f, 2f, 1f, 0f];
        var s = new Sampler(new SamplerOptions { Temperature = 1, TopK = 0, TopP = 0.8f, MinP = 0, Seed = 9 }, 4);
        var seen = Enumerable.Range(0, 2000).Select(_ => s.Sample(logits, [])).ToHashSet();
        Assert.Equal(new HashSet<int> { 0, 1 }, seen);
    }

    [Fact]
    public void MinPDropsUnlikelyTokens()
    {
        float[] logits = [3f, 2f, 1f, 0f]; // relative to the best: 1, 0.37, 0.14, 0.05
        var s = new Sampler(new SamplerOptions { Temperature = 1, TopK = 0, TopP = 1, MinP = 0.2f, Seed = 9 }, 4);
        var seen = Enumerable.Range(0, 2000).Select(_ => s.Sample(logits, [])).ToHashSet();
        Assert.Equal(new HashSet<int> { 0, 1 }, seen);
    }

    [Fact]
    public void RepeatPenaltyFollowsLlamaCppRule()
    {
        float[] logits = [2f, 1.9f, -1f, -1.1f];
        var s = new Sampler(SamplerOptions.Greedy with { RepeatPenalty = 1.1f }, 4);
        Assert.Equal(1, s.Sample(logits, [0])); // 2 / 1.1 < 1.9
        logits = [-1f, -1.05f, -5f, -5f];
        Assert.Equal(0, s.Sample(logits, [])); // nothing seen
        Assert.Equal(1, s.Sample(logits, [0, 0, 0])); // -1 × 1.1 < -1.05, applied once however often seen
    }

    [Fact]
    public void FrequencyAndPresencePenaltiesCountOccurrences()
    {
        float[] logits = [5f, 4f, 0f];
        var s = new Sampler(SamplerOptions.Greedy with { FrequencyPenalty = 0.4f, PresencePenalty = 0.3f }, 3);
        Assert.Equal(0, s.Sample(logits, [0])); // 5 - 0.4 - 0.3 = 4.3 > 4
        Assert.Equal(1, s.Sample(logits, [0, 0])); // 5 - 0.8 - 0.3 = 3.9 < 4
    }

    [Fact]
    public void RejectsBadOptions()
    {
        Assert.Throws<ArgumentException>(() => new Sampler(new SamplerOptions { TopP = 0 }, 4));
        Assert.Throws<ArgumentException>(() => new Sampler(new SamplerOptions { TopK = -1 }, 4));
        Assert.Throws<ArgumentException>(() => new Sampler(new SamplerOptions { MinP = 2 }, 4));
        Assert.Throws<ArgumentException>(() => new Sampler(new SamplerOptions { RepeatPenalty = 0 }, 4));
        Assert.Throws<ArgumentException>(() => new Sampler(SamplerOptions.Greedy, 4).Sample(new float[5], []));
    }

    [Fact]
    public void SamplingAllocatesNothing()
    {
        var logits = RandomLogits(32000, 5);
        int[] history = [1, 2, 3, 4, 5];
        var s = new Sampler(new SamplerOptions { Seed = 1, RepeatPenalty = 1.1f }, 32000);
        s.Sample(logits, history);
        long before = GC.GetAllocatedBytesForCurrentThread();
        for (int i = 0; i < 20; i++) s.Sample(logits, history);
        Assert.Equal(0, GC.GetAllocatedBytesForCurrentThread() - before);
    }
}
