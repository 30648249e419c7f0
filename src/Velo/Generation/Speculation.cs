using Velo.Inference;
using Velo.Models;
using Velo.Runtime;
using Velo.Sampling;
using Velo.Text;
using Velo.Threading;

namespace Velo.Generation;

/// <summary>Speculative decoding settings, named as llama.cpp names them (its defaults too).</summary>
public sealed record SpeculationOptions
{
    /// <summary>Draft tokens proposed per target pass at most (--draft-max).</summary>
    public int DraftMax { get; init; } = 16;

    /// <summary>Fewer proposals than this are not worth a verification row each and are dropped (--draft-min).</summary>
    public int DraftMin { get; init; }

    /// <summary>The draft model stops proposing at a token it gives less than this probability (--draft-p-min).</summary>
    public float DraftPMin { get; init; } = 0.75f;

    /// <summary>Prompt lookup: the last this many tokens are searched for earlier in the history (--spec-ngram); 0: off.</summary>
    public int NGram { get; init; }

    public void Validate()
    {
        if (DraftMax < 1) throw new ArgumentException($"--draft-max must be at least 1, got {DraftMax}");
        if (DraftMin < 0 || DraftMin > DraftMax) throw new ArgumentException($"--draft-min must be between 0 and --draft-max ({DraftMax}), got {DraftMin}");
        if (!(DraftPMin >= 0 && DraftPMin <= 1)) throw new ArgumentException($"--draft-p-min must be in [0, 1], got {DraftPMin}");
        if (NGram < 0) throw new ArgumentException($"--spec-ngram must be 0 (off) or positive, got {NGram}");
    }
}

/// <summary>
/// Proposes the tokens likely to follow a sequence, for the target model to verify in one pass. Each proposal comes
/// with the distribution it was drawn from (<see cref="Probability"/>), which the accept/reject rule needs for the
/// output to follow the target's own distribution exactly.
/// </summary>
public interface ISpeculator : IDisposable
{
    /// <summary>A new generation starts, sampled with <paramref name="sampling"/>.</summary>
    void Begin(SamplerOptions sampling);

    /// <summary>Appends to <paramref name="drafts"/> up to <paramref name="max"/> guesses of the tokens after <paramref name="history"/>.</summary>
    void Propose(ReadOnlySpan<int> history, int max, List<int> drafts);

    /// <summary>The probability with which proposal <paramref name="index"/> of the last <see cref="Propose"/> would have been <paramref name="token"/>.</summary>
    float Probability(int index, int token);
}

/// <summary>
/// Prompt lookup (draft-free speculation): finds the last <c>n</c> tokens earlier in the history, latest occurrence
/// first, and proposes what followed them there. Deterministic, so each proposal's distribution is a point mass.
/// </summary>
public sealed class NGramSpeculator : ISpeculator
{
    private readonly int _n;
    private readonly int[] _proposed;

    public NGramSpeculator(int n, int draftMax)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(n, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(draftMax, 1);
        _n = n;
        _proposed = new int[draftMax];
    }

    public void Begin(SamplerOptions sampling) { }

    public void Propose(ReadOnlySpan<int> history, int max, List<int> drafts)
    {
        max = Math.Min(max, _proposed.Length);
        if (history.Length <= _n || max < 1) return;
        var key = history[^_n..];
        // The latest occurrence first: recent text predicts the continuation best.
        for (int start = history.Length - _n - 1; start >= 0; start--)
        {
            if (!history.Slice(start, _n).SequenceEqual(key)) continue;
            int from = start + _n;
            int count = Math.Min(max, history.Length - from);
            for (int i = 0; i < count; i++)
            {
                _proposed[i] = history[from + i];
                drafts.Add(history[from + i]);
            }
            return;
        }
    }

    public float Probability(int index, int token) => _proposed[index] == token ? 1 : 0;

    public void Dispose() { }
}

/// <summary>
/// A smaller model of the same vocabulary as the draft: its own state and KV memory with one sequence, which follows
/// the target's history (the common prefix kept, the rest rolled back) and proposes tokens one decode step each, drawn
/// with the generation's own sampler settings (greedy when it is greedy), stopping at a token it is unsure of.
/// </summary>
public sealed class DraftModelSpeculator : ISpeculator
{
    private readonly LanguageModel _draft;
    private readonly SpeculationOptions _options;
    private readonly IModelState _state;
    private readonly BatchPlanner _planner;
    private readonly BatchSequence _sequence;
    private readonly BatchSequence[] _sequences;
    private readonly int[] _proposed;
    // Per proposal, the draft's distribution over the vocabulary; filled only when sampling (greedy is a point mass).
    private readonly float[][] _distributions;
    private Sampler? _sampler;
    private bool _greedy = true;

    /// <exception cref="ArgumentException">The two models do not share a vocabulary.</exception>
    public DraftModelSpeculator(LanguageModel target, LanguageModel draft, SpeculationOptions options, int contextLength, int batchTokens,
        WorkerPool pool, KvCacheTypes cacheTypes = default)
    {
        options.Validate();
        CheckVocabulary(target, draft);
        _draft = draft;
        _options = options;
        _state = draft.Model.CreateState(contextLength, batchTokens, sequences: 1, maxLogitRows: 1, pool: pool, cacheTypes: cacheTypes);
        _planner = new BatchPlanner(draft.Model, _state);
        _sequence = new BatchSequence(0, contextLength);
        _sequences = [_sequence];
        _proposed = new int[options.DraftMax];
        _distributions = new float[options.DraftMax][];
        _planner.WarmUp();
    }

    /// <summary>Refuses a draft whose token ids mean other texts than the target's: its guesses would be of other tokens.</summary>
    public static void CheckVocabulary(LanguageModel target, LanguageModel draft)
    {
        SharedVocabulary.Ensure($"the draft model {draft.Path} and the target {target.Path}", "the draft", draft.Tokenizer, draft.Info.VocabSize,
            "the target", target.Tokenizer, target.Info.VocabSize);
    }

    public void Begin(SamplerOptions sampling)
    {
        _greedy = sampling.IsGreedy;
        // Its own seed, so the draft's draws do not repeat the target's.
        _sampler = new Sampler(sampling with { Seed = sampling.Seed is ulong seed ? seed ^ 0x5851F42D4C957F2D : null }, _draft.Info.VocabSize);
        if (!_greedy)
            for (int i = 0; i < _distributions.Length; i++) _distributions[i] ??= new float[_draft.Info.VocabSize];
    }

    public void Propose(ReadOnlySpan<int> history, int max, List<int> drafts)
    {
        var sampler = _sampler ?? throw new InvalidOperationException("Begin was not called");
        max = Math.Min(Math.Min(max, _proposed.Length), _sequence.ContextLength - history.Length);
        if (max < 1) return;
        Follow(history);
        int count = 0;
        while (true)
        {
            // A prompt longer than a pass takes several; only the last gives logits.
            do _planner.Run(_sequences);
            while (_sequence.Cached < _sequence.Count);
            var logits = _planner.Logits(_sequence, 0);
            int token = sampler.Sample(logits, _sequence.History);
            if (Confidence(logits, token) < _options.DraftPMin) break;
            if (!_greedy)
            {
                // After a draw the chain's candidates hold the distribution it was drawn from.
                var row = _distributions[count];
                Array.Clear(row);
                var candidates = sampler.Chain.Candidates;
                for (int i = 0; i < candidates.Count; i++) row[candidates.Ids[i]] = candidates.Probabilities[i];
            }
            _proposed[count++] = token;
            if (count == max) break;
            _sequence.Append(token);
        }
        if (count < _options.DraftMin) return;
        for (int i = 0; i < count; i++) drafts.Add(_proposed[i]);
    }

    public float Probability(int index, int token) => _greedy ? (_proposed[index] == token ? 1 : 0) : _distributions[index][token];

    /// <summary>Makes the draft's sequence hold <paramref name="history"/>: the common prefix stays in its memory, what
    /// followed it there (rejected proposals) is removed, and at least the last token is left for the next pass.</summary>
    private void Follow(ReadOnlySpan<int> history)
    {
        var known = _sequence.History;
        int shared = 0;
        while (shared < known.Length && shared < history.Length && known[shared] == history[shared]) shared++;
        _sequence.Truncate(Math.Min(shared, history.Length - 1));
        _planner.Settle(_sequence);
        for (int i = _sequence.Count; i < history.Length; i++) _sequence.Append(history[i]);
    }

    /// <summary>The draft's raw probability of <paramref name="token"/> (softmax of its logits), whatever the sampler settings.</summary>
    private static float Confidence(ReadOnlySpan<float> logits, int token)
    {
        float max = float.NegativeInfinity;
        foreach (float l in logits) max = MathF.Max(max, l);
        double sum = 0;
        foreach (float l in logits) sum += MathF.Exp(l - max);
        return (float)(MathF.Exp(logits[token] - max) / sum);
    }

    public void Dispose() => _state.Dispose();
}
