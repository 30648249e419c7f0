namespace Velo.Sampling;

/// <summary>The last link of a <see cref="SamplerChain"/>: picks one token from the candidates the stages left.</summary>
public interface ITokenSelector
{
    /// <summary>Chooses a token id.</summary>
    int Select(Candidates candidates);

    /// <summary>Turns the candidates into the distribution <see cref="Select"/> would choose from, without choosing.</summary>
    void Distribution(Candidates candidates);
}

/// <summary>The most likely token (the lowest id among equals): a distribution with all its mass on one token.</summary>
public sealed class GreedySelector : ITokenSelector
{
    public int Select(Candidates candidates) => candidates.Ids[candidates.IndexOfMax()];

    public void Distribution(Candidates candidates) => candidates.KeepOnly(candidates.IndexOfMax());
}

/// <summary>A random draw from the softmax of the candidates, walked highest logit first; afterwards the candidates
/// hold that softmax.</summary>
public sealed class DrawSelector(ulong seed) : ITokenSelector
{
    private UniformRandom _random = new(seed);

    public int Select(Candidates candidates)
    {
        candidates.Sort();
        double sum = candidates.ComputeWeights();
        var weights = candidates.Probabilities;
        // The unnormalized weights against a target scaled by their sum: the arithmetic the sampler has always used,
        // so a seed keeps producing the same text.
        double target = _random.Next() * sum;
        double cumulative = 0;
        int chosen = weights.Length - 1;
        for (int i = 0; i < weights.Length; i++)
        {
            cumulative += weights[i];
            if (target < cumulative)
            {
                chosen = i;
                break;
            }
        }
        int id = candidates.Ids[chosen];
        candidates.Normalize(sum);
        return id;
    }

    public void Distribution(Candidates candidates)
    {
        candidates.Sort();
        candidates.Softmax();
    }
}

/// <summary>Uniform doubles in [0, 1) from SplitMix64: tiny, fast and identical on every runtime, so seeds reproduce
/// everywhere.</summary>
public struct UniformRandom(ulong seed)
{
    private ulong _state = seed;

    public double Next()
    {
        ulong z = _state += 0x9E3779B97F4A7C15;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EB;
        z ^= z >> 31;
        return (z >> 11) * (1.0 / (1UL << 53));
    }
}
