namespace Velo.Sampling;

/// <summary>Adds a fixed amount to the logits of chosen tokens (OpenAI's <c>logit_bias</c>; -100 effectively bans one).</summary>
public sealed class LogitBiasStage : ISamplingStage
{
    // Sorted by id: a dictionary would allocate an enumerator on every step and cannot be binary-searched.
    private readonly int[] _ids;
    private readonly float[] _biases;

    public LogitBiasStage(IReadOnlyDictionary<int, float> bias, int vocabSize)
    {
        ArgumentNullException.ThrowIfNull(bias);
        if (bias.Keys.Any(id => (uint)id >= (uint)vocabSize))
            throw new ArgumentException($"logit bias names a token outside the vocabulary of {vocabSize}");
        _ids = bias.Keys.Order().ToArray();
        _biases = _ids.Select(id => bias[id]).ToArray();
    }

    public void Apply(Candidates candidates, in SamplingContext context)
    {
        bool byId = candidates.InVocabularyOrder;
        var ids = candidates.Ids;
        var logits = candidates.UpdateLogits();
        if (byId)
        {
            for (int i = 0; i < _ids.Length; i++) logits[_ids[i]] += _biases[i];
            return;
        }
        for (int i = 0; i < ids.Length; i++)
        {
            int at = Array.BinarySearch(_ids, ids[i]);
            if (at >= 0) logits[i] += _biases[at];
        }
    }
}
