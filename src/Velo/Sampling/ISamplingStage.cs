namespace Velo.Sampling;

/// <summary>
/// One step of a <see cref="SamplerChain"/>: narrows or reshapes the candidates (penalties, bias, truncation,
/// temperature, a grammar's mask). A stage keeps whatever state it needs across steps itself and must not allocate
/// in <see cref="Apply"/>: it runs once per generated token.
/// </summary>
public interface ISamplingStage
{
    void Apply(Candidates candidates, in SamplingContext context);
}

/// <summary>What a stage may know about the sequence being sampled.</summary>
public readonly ref struct SamplingContext(ReadOnlySpan<int> history)
{
    /// <summary>The sequence so far: prompt and generated tokens.</summary>
    public ReadOnlySpan<int> History { get; } = history;
}
