namespace Velo.Sampling;

/// <summary>
/// Penalizes tokens seen among the last N of the sequence: the repeat penalty divides a positive logit (multiplies a
/// negative one), as llama.cpp does, then OpenAI's frequency penalty subtracts count × frequency and its presence
/// penalty subtracts presence once. Each distinct token is penalized once however often it was seen.
/// </summary>
public sealed class RepetitionPenaltyStage : ISamplingStage
{
    private readonly float _repeat;
    private readonly float _frequency;
    private readonly float _presence;
    private readonly int _lastN;
    private readonly int[] _counts;

    /// <param name="lastN">How many recent tokens count; -1 means the whole sequence.</param>
    public RepetitionPenaltyStage(float repeat, float frequency, float presence, int lastN, int vocabSize)
    {
        if (!(repeat > 0)) throw new ArgumentException($"repeat penalty must be positive, got {repeat}");
        _repeat = repeat;
        _frequency = frequency;
        _presence = presence;
        _lastN = lastN;
        _counts = new int[vocabSize];
    }

    public void Apply(Candidates candidates, in SamplingContext context)
    {
        if (_repeat == 1 && _frequency == 0 && _presence == 0) return;
        var history = context.History;
        var recent = _lastN < 0 || _lastN > history.Length ? history : history[^_lastN..];
        foreach (int t in recent)
            if ((uint)t < (uint)_counts.Length) _counts[t]++;

        bool byId = candidates.InVocabularyOrder;
        var ids = candidates.Ids;
        var logits = candidates.UpdateLogits();
        if (byId)
        {
            // Walk the history, not the vocabulary: a few dozen tokens instead of a hundred thousand.
            foreach (int t in recent)
            {
                if ((uint)t >= (uint)_counts.Length || _counts[t] == 0) continue;
                logits[t] = Penalize(logits[t], _counts[t]);
                _counts[t] = 0; // applied once per distinct token
            }
            return;
        }
        for (int i = 0; i < ids.Length; i++)
            if (_counts[ids[i]] > 0) logits[i] = Penalize(logits[i], _counts[ids[i]]);
        foreach (int t in recent)
            if ((uint)t < (uint)_counts.Length) _counts[t] = 0;
    }

    private float Penalize(float logit, int count)
    {
        logit = logit > 0 ? logit / _repeat : logit * _repeat;
        return logit - count * _frequency - _presence;
    }
}
