namespace Velo.Inference;

/// <summary>Token sampling settings, with llama.cpp's defaults. A temperature of 0 or less means greedy.</summary>
public sealed record SamplerOptions
{
    public float Temperature { get; init; } = 0.8f;

    /// <summary>Keep only the K most likely tokens; 0 disables.</summary>
    public int TopK { get; init; } = 40;

    /// <summary>Keep the smallest set of tokens whose probabilities add up to P; 1 disables.</summary>
    public float TopP { get; init; } = 0.95f;

    /// <summary>Drop tokens less likely than MinP times the most likely one; 0 disables.</summary>
    public float MinP { get; init; } = 0.05f;

    /// <summary>Divides positive (multiplies negative) logits of recently seen tokens; 1 disables.</summary>
    public float RepeatPenalty { get; init; } = 1.0f;

    /// <summary>OpenAI-style penalties: subtract count × frequency and, once seen, presence.</summary>
    public float FrequencyPenalty { get; init; }
    public float PresencePenalty { get; init; }

    /// <summary>How many recent tokens the penalties look at; -1 means the whole context.</summary>
    public int PenaltyLastN { get; init; } = 64;

    public ulong? Seed { get; init; }

    public static SamplerOptions Greedy { get; } = new() { Temperature = 0 };

    public bool IsGreedy => Temperature <= 0;
}
