namespace Velo.Sampling;

/// <summary>Keeps the K highest logits, sorted.</summary>
public sealed class TopKStage : ISamplingStage
{
    private readonly int _k;

    public TopKStage(int k)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(k, 1);
        _k = k;
    }

    public void Apply(Candidates candidates, in SamplingContext context) => candidates.KeepTop(_k);
}

/// <summary>Nucleus sampling: keeps the smallest set of most likely tokens whose probabilities reach P.</summary>
public sealed class TopPStage : ISamplingStage
{
    private readonly float _p;

    public TopPStage(float p)
    {
        if (!(p > 0 && p <= 1)) throw new ArgumentException($"top-p must be in (0, 1], got {p}");
        _p = p;
    }

    public void Apply(Candidates candidates, in SamplingContext context)
    {
        candidates.Sort();
        if (!candidates.HasProbabilities) candidates.Softmax();
        var probabilities = candidates.Probabilities;
        double cumulative = 0;
        for (int i = 0; i < probabilities.Length; i++)
        {
            cumulative += probabilities[i];
            if (cumulative >= _p)
            {
                candidates.Truncate(i + 1);
                return;
            }
        }
    }
}

/// <summary>Drops tokens less likely than P times the most likely one.</summary>
public sealed class MinPStage : ISamplingStage
{
    private readonly float _p;

    public MinPStage(float p)
    {
        if (!(p >= 0 && p <= 1)) throw new ArgumentException($"min-p must be in [0, 1], got {p}");
        _p = p;
    }

    public void Apply(Candidates candidates, in SamplingContext context)
    {
        candidates.Sort();
        // After top-p these are still the probabilities before its cut: the threshold is relative, so that is what counts.
        if (!candidates.HasProbabilities) candidates.Softmax();
        var probabilities = candidates.Probabilities;
        float threshold = probabilities[0] * _p;
        int kept = 1;
        while (kept < probabilities.Length && probabilities[kept] >= threshold) kept++;
        candidates.Truncate(kept);
    }
}

/// <summary>Divides the logits by the temperature: below 1 sharpens the distribution, above 1 flattens it.</summary>
public sealed class TemperatureStage : ISamplingStage
{
    private readonly float _inverse;

    public TemperatureStage(float temperature)
    {
        if (!(temperature > 0)) throw new ArgumentException($"temperature must be positive here (0 or less means greedy), got {temperature}");
        _inverse = 1f / temperature;
    }

    public void Apply(Candidates candidates, in SamplingContext context)
    {
        // Sorted first, by the untempered logits: scaling can make near-equal logits equal, and the order a draw
        // walks must not change with the temperature, or a seed would no longer reproduce the same text.
        candidates.Sort();
        candidates.Scale(_inverse);
    }
}
