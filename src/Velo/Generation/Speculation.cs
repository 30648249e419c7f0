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

    /// <summary>These options with at most <paramref name="draftMax"/> drafts (at least one), where a pass has room for no more.</summary>
    public SpeculationOptions Limited(int draftMax)
    {
        int max = Math.Clamp(draftMax, 1, DraftMax);
        return this with { DraftMax = max, DraftMin = Math.Min(DraftMin, max) };
    }

    public void Validate()
    {
        if (DraftMax < 1) throw new ArgumentException($"--draft-max must be at least 1, got {DraftMax}");
        if (DraftMin < 0 || DraftMin > DraftMax) throw new ArgumentException($"--draft-min must be between 0 and --draft-max ({DraftMax}), got {DraftMin}");
        if (!(DraftPMin >= 0 && DraftPMin <= 1)) throw new ArgumentException($"--draft-p-min must be in [0, 1], got {DraftPMin}");
        if (NGram < 0) throw new ArgumentException($"--spec-ngram must be 0 (off) or positive, got {NGram}");
    }
}

/// <summary>
/// What decoding did over many steps (a scheduler's since it started). A step is one decoding sequence's share of a
/// target pass: its last token and any drafts verified, giving one token and one more per accepted draft.
/// </summary>
public readonly record struct SpeculationCounters(long DecodeSteps, long DecodedTokens, long DraftedTokens, long AcceptedDrafts)
{
    public double AcceptanceRate => DraftedTokens == 0 ? 0 : AcceptedDrafts / (double)DraftedTokens;

    /// <summary>Tokens each decoding sequence got per target pass: 1 without speculation.</summary>
    public double TokensPerStep => DecodeSteps == 0 ? 0 : DecodedTokens / (double)DecodeSteps;

    /// <summary>Two services' decoding together (a server's models, a cascade's two sizes).</summary>
    public static SpeculationCounters operator +(SpeculationCounters a, SpeculationCounters b) => new(a.DecodeSteps + b.DecodeSteps,
        a.DecodedTokens + b.DecodedTokens, a.DraftedTokens + b.DraftedTokens, a.AcceptedDrafts + b.AcceptedDrafts);
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
/// Speculation for the sequences of a batch: one <see cref="ISpeculator"/> per sequence slot (its proposals and their
/// distributions, for the verification of that slot's sequence), and proposals for several sequences at once, which a
/// draft model makes in shared passes.
/// </summary>
public interface ISpeculatorSet : IDisposable
{
    /// <summary>The speculator of the sequence in <paramref name="slot"/>.</summary>
    ISpeculator this[int slot] { get; }

    /// <summary>Drafts for each of <paramref name="sequences"/>: up to <paramref name="budgets"/>[i] guesses of the tokens
    /// after its history, appended to its <see cref="BatchSequence.Drafts"/>; a budget below 1 asks for none.</summary>
    void Propose(IReadOnlyList<BatchSequence> sequences, IReadOnlyList<int> budgets);
}

/// <summary>Builds the speculation a run asks for: a draft model's, else prompt lookup's, else none.</summary>
public static class Speculators
{
    /// <param name="sequences">Sequence slots the set serves, each with a KV sequence of the draft's.</param>
    /// <exception cref="ArgumentException">The draft does not share the target's vocabulary.</exception>
    public static ISpeculatorSet? Create(LanguageModel target, LanguageModel? draft, SpeculationOptions? options, int contextLength,
        int sequences, int batchTokens, WorkerPool pool, KvCacheTypes cacheTypes)
    {
        if (draft != null && options == null) throw new ArgumentException("a draft model needs speculation options", nameof(options));
        if (options == null) return null;
        options.Validate();
        if (draft != null) return new DraftModelSpeculator(target, draft, options, contextLength, sequences, batchTokens, pool, cacheTypes);
        return options.NGram > 0 ? new NGramSpeculators(options.NGram, options.DraftMax, sequences) : null;
    }
}

/// <summary>Prompt lookup for each sequence slot: each sequence looks up its own history.</summary>
public sealed class NGramSpeculators : ISpeculatorSet
{
    private readonly NGramSpeculator[] _slots;

    public NGramSpeculators(int n, int draftMax, int sequences)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(sequences, 1);
        _slots = new NGramSpeculator[sequences];
        for (int i = 0; i < sequences; i++) _slots[i] = new NGramSpeculator(n, draftMax);
    }

    public ISpeculator this[int slot] => _slots[slot];

    public void Propose(IReadOnlyList<BatchSequence> sequences, IReadOnlyList<int> budgets)
    {
        for (int i = 0; i < sequences.Count; i++)
            if (budgets[i] > 0) _slots[sequences[i].Slot].Propose(sequences[i].History, budgets[i], sequences[i].Drafts);
    }

    public void Dispose() { }
}

/// <summary>
/// A smaller model of the same vocabulary as the draft: one state of its own with one KV sequence per slot, each of
/// which follows its target sequence's history (the common prefix kept, the rest rolled back). Proposals come one
/// decode step at a time, every drafting sequence in the same pass, each drawn with its own generation's sampler
/// settings (greedy when it is greedy); a sequence stops at a token it is unsure of or at its budget.
/// </summary>
public sealed class DraftModelSpeculator : ISpeculatorSet
{
    private readonly LanguageModel _draft;
    private readonly SpeculationOptions _options;
    private readonly IModelState _state;
    private readonly BatchPlanner _planner;
    private readonly BatchSequence[] _sequences;
    private readonly Slot[] _slots;
    // Draft sequences still proposing in the current round; reused so that a step allocates nothing.
    private readonly List<BatchSequence> _drafting = [];

    /// <exception cref="ArgumentException">The two models do not share a vocabulary.</exception>
    public DraftModelSpeculator(LanguageModel target, LanguageModel draft, SpeculationOptions options, int contextLength, int sequences,
        int batchTokens, WorkerPool pool, KvCacheTypes cacheTypes = default)
    {
        options.Validate();
        ArgumentOutOfRangeException.ThrowIfLessThan(sequences, 1);
        CheckVocabulary(target, draft);
        _draft = draft;
        _options = options;
        // Every drafting sequence decodes one token per pass; a prompt being caught up takes what is left.
        _state = draft.Model.CreateState(contextLength, Math.Max(batchTokens, sequences + 1), sequences: sequences, maxLogitRows: sequences,
            pool: pool, cacheTypes: cacheTypes);
        _planner = new BatchPlanner(draft.Model, _state);
        _sequences = new BatchSequence[sequences];
        _slots = new Slot[sequences];
        for (int i = 0; i < sequences; i++)
        {
            _sequences[i] = new BatchSequence(i, contextLength);
            _slots[i] = new Slot(this, i);
        }
        _planner.WarmUp();
    }

    /// <summary>Refuses a draft whose token ids mean other texts than the target's: its guesses would be of other tokens.</summary>
    public static void CheckVocabulary(LanguageModel target, LanguageModel draft)
    {
        SharedVocabulary.Ensure($"the draft model {draft.Path} and the target {target.Path}", "the draft", draft.Tokenizer, draft.Info.VocabSize,
            "the target", target.Tokenizer, target.Info.VocabSize);
    }

    public ISpeculator this[int slot] => _slots[slot];

    public void Propose(IReadOnlyList<BatchSequence> sequences, IReadOnlyList<int> budgets)
    {
        _drafting.Clear();
        for (int i = 0; i < sequences.Count; i++) Prepare(sequences[i].Slot, sequences[i].History, budgets[i]);
        Draft();
        for (int i = 0; i < sequences.Count; i++) _slots[sequences[i].Slot].Emit(sequences[i].Drafts);
    }

    /// <summary>Lines up slot <paramref name="slot"/> to propose up to <paramref name="budget"/> tokens after <paramref name="history"/>.</summary>
    private void Prepare(int slot, ReadOnlySpan<int> history, int budget)
    {
        var state = _slots[slot];
        var sequence = _sequences[slot];
        state.Count = 0;
        state.Budget = Math.Min(Math.Min(budget, _options.DraftMax), sequence.ContextLength - history.Length);
        if (state.Budget < 1) return;
        if (state.Sampler == null) throw new InvalidOperationException($"Begin was not called for slot {slot}");
        Follow(sequence, history);
        _drafting.Add(sequence);
    }

    /// <summary>Runs draft passes until every lined-up sequence has stopped proposing.</summary>
    private void Draft()
    {
        try
        {
            while (_drafting.Count > 0)
            {
                _planner.Run(_drafting);
                for (int i = _drafting.Count - 1; i >= 0; i--)
                {
                    var sequence = _drafting[i];
                    // A prompt longer than a pass takes several; only the pass with its last token gives logits.
                    if (sequence.LogitsRows == 0) continue;
                    if (!_slots[sequence.Slot].Next(_planner.Logits(sequence, 0), sequence)) _drafting.RemoveAt(i);
                }
            }
        }
        catch
        {
            // What the failed pass stored is unknown: the next proposals start the draft's sequences afresh.
            foreach (var sequence in _sequences) _planner.Reset(sequence);
            _drafting.Clear();
            throw;
        }
    }

    /// <summary>Makes the draft's sequence hold <paramref name="history"/>: the common prefix stays in its memory, what
    /// followed it there (rejected proposals) is removed, and at least the last token is left for the next pass.</summary>
    private void Follow(BatchSequence sequence, ReadOnlySpan<int> history)
    {
        var known = sequence.History;
        int shared = 0;
        while (shared < known.Length && shared < history.Length && known[shared] == history[shared]) shared++;
        sequence.Truncate(Math.Min(shared, history.Length - 1));
        _planner.Settle(sequence);
        for (int i = sequence.Count; i < history.Length; i++) sequence.Append(history[i]);
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

    /// <summary>One slot's generation: its sampler and the proposals of its last round with their distributions.</summary>
    private sealed class Slot(DraftModelSpeculator owner, int slot) : ISpeculator
    {
        private readonly int[] _proposed = new int[owner._options.DraftMax];
        // Per proposal, the draft's distribution over the vocabulary; filled only when sampling (greedy is a point mass).
        private readonly float[]?[] _distributions = new float[owner._options.DraftMax][];
        private bool _greedy = true;

        public Sampler? Sampler { get; private set; }
        public int Count { get; set; }
        public int Budget { get; set; }

        public void Begin(SamplerOptions sampling)
        {
            _greedy = sampling.IsGreedy;
            // Its own seed, so the draft's draws do not repeat the target's.
            Sampler = new Sampler(sampling with { Seed = sampling.Seed is ulong seed ? seed ^ 0x5851F42D4C957F2D : null }, owner._draft.Info.VocabSize);
        }

        public void Propose(ReadOnlySpan<int> history, int max, List<int> drafts)
        {
            owner._drafting.Clear();
            owner.Prepare(slot, history, max);
            owner.Draft();
            Emit(drafts);
        }

        /// <summary>Takes the draft's logits after <paramref name="sequence"/>'s history; returns whether to propose another token.</summary>
        public bool Next(ReadOnlySpan<float> logits, BatchSequence sequence)
        {
            var sampler = Sampler!;
            int token = sampler.Sample(logits, sequence.History);
            if (Confidence(logits, token) < owner._options.DraftPMin) return false;
            if (!_greedy)
            {
                // After a draw the chain's candidates hold the distribution it was drawn from.
                var row = _distributions[Count] ??= new float[owner._draft.Info.VocabSize];
                Array.Clear(row);
                var candidates = sampler.Chain.Candidates;
                for (int i = 0; i < candidates.Count; i++) row[candidates.Ids[i]] = candidates.Probabilities[i];
            }
            _proposed[Count++] = token;
            if (Count == Budget) return false;
            sequence.Append(token);
            return true;
        }

        /// <summary>Hands over the round's proposals, unless there are too few to be worth verifying.</summary>
        public void Emit(List<int> drafts)
        {
            if (Count < owner._options.DraftMin) return;
            for (int i = 0; i < Count; i++) drafts.Add(_proposed[i]);
        }

        public float Probability(int index, int token) => _greedy ? (_proposed[index] == token ? 1 : 0) : _distributions[index]![token];

        public void Dispose() { }
    }
}
