namespace Velo.Sampling;

/// <summary>
/// Sampling as a chain of stages over one reusable <see cref="Candidates"/> array, ended by a selector (llama.cpp's
/// <c>llama_sampler_chain</c>). Each step resets the candidates to the logits, lets every stage narrow or reshape them
/// in order, then either picks a token (<see cref="Sample"/>) or returns the distribution it would pick from
/// (<see cref="Distribution"/>), which is what speculative decoding verifies drafts against. New behaviour (a grammar
/// mask, say) is a new <see cref="ISamplingStage"/> in the list; no other stage changes. Nothing here allocates per step.
/// </summary>
public sealed class SamplerChain
{
    private readonly ISamplingStage[] _stages;

    public SamplerChain(int vocabSize, IEnumerable<ISamplingStage> stages, ITokenSelector selector)
    {
        ArgumentNullException.ThrowIfNull(stages);
        ArgumentNullException.ThrowIfNull(selector);
        Candidates = new Candidates(vocabSize);
        _stages = stages.ToArray();
        Selector = selector;
    }

    public int VocabSize => Candidates.VocabSize;
    public IReadOnlyList<ISamplingStage> Stages => _stages;
    public ITokenSelector Selector { get; }

    /// <summary>The candidates as the last step left them (after <see cref="Distribution"/>, the final distribution).
    /// Overwritten by the next step.</summary>
    public Candidates Candidates { get; }

    /// <summary>Chooses a token. <paramref name="history"/> is the sequence so far (prompt and generated), for the penalties.</summary>
    public int Sample(ReadOnlySpan<float> logits, ReadOnlySpan<int> history)
    {
        RunStages(logits, history);
        return Selector.Select(Candidates);
    }

    /// <summary>The distribution <see cref="Sample"/> would draw from: the tokens every stage kept, with probabilities
    /// (after truncation and temperature) summing to 1, most likely first. Draws nothing, so the seed does not advance.</summary>
    public Candidates Distribution(ReadOnlySpan<float> logits, ReadOnlySpan<int> history)
    {
        RunStages(logits, history);
        Selector.Distribution(Candidates);
        return Candidates;
    }

    private void RunStages(ReadOnlySpan<float> logits, ReadOnlySpan<int> history)
    {
        Candidates.Reset(logits);
        var context = new SamplingContext(history);
        foreach (var stage in _stages) stage.Apply(Candidates, in context);
    }
}
