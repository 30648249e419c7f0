using Velo.Inference;
using Velo.Sampling.Grammars;

namespace Velo.Generation;

public sealed record GenerationOptions
{
    /// <summary>Tokens to generate at most; -1 means until the context is full.</summary>
    public int MaxTokens { get; init; } = 128;

    public SamplerOptions Sampling { get; init; } = new();

    /// <summary>Keep generating past end-of-generation tokens.</summary>
    public bool IgnoreEos { get; init; }

    /// <summary>Generation ends when the text produced contains one of these (the stop string itself is not output).</summary>
    public IReadOnlyList<string> Stop { get; init; } = [];

    /// <summary>When set, the output is constrained to this grammar: each sequence decodes under its own grammar state,
    /// end-of-generation comes only once the output is complete, and generation stops when nothing more can follow.
    /// Output cut short by <see cref="MaxTokens"/> ends with <see cref="FinishReason.Length"/>.</summary>
    public Grammar? Grammar { get; init; }

    /// <summary>Control tokens, by their text, that the output shows although it skips the others: the markers a
    /// tool-call format starts calls with (<c>&lt;|python_tag|&gt;</c>, <c>[TOOL_CALLS]</c>). Texts the vocabulary
    /// lacks are ignored.</summary>
    public IReadOnlyList<string> ShownControlTokens { get; init; } = [];
}

/// <summary>Why generation ended, in OpenAI's terms.</summary>
public enum FinishReason
{
    Stop,
    Length,
}

/// <summary>Counts and timings of one generation.</summary>
public sealed class GenerationStats
{
    public int PromptTokens { get; internal set; }
    public TimeSpan PromptTime { get; internal set; }
    public int GeneratedTokens { get; internal set; }
    public TimeSpan GenerationTime { get; internal set; }
    public FinishReason FinishReason { get; internal set; }

    /// <summary>Target passes after the prompt's, each verifying the drafts it ran and sampling one more token.</summary>
    public int DecodePasses { get; internal set; }

    /// <summary>Speculated tokens the target's passes verified, and how many of them it kept.</summary>
    public int DraftedTokens { get; internal set; }
    public int AcceptedDrafts { get; internal set; }

    public double AcceptanceRate => AcceptedDrafts / (double)Math.Max(DraftedTokens, 1);

    /// <summary>Generated tokens per target pass after the prompt's (1 without speculation).</summary>
    public double TokensPerPass => Math.Max(GeneratedTokens - 1, 0) / (double)Math.Max(DecodePasses, 1);

    public double PromptTokensPerSecond => PromptTokens / Math.Max(PromptTime.TotalSeconds, 1e-9);

    /// <summary>Generated tokens per second after the first (whose time is the prompt's).</summary>
    public double GenerationTokensPerSecond => Math.Max(GeneratedTokens - 1, 0) / Math.Max(GenerationTime.TotalSeconds, 1e-9);
}
