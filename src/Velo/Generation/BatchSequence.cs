namespace Velo.Generation;

/// <summary>
/// One sequence of the KV memory as the <see cref="BatchPlanner"/> sees it: the tokens it knows (prompt, then
/// accepted output), how many of them the memory already holds, and guesses of the tokens that follow (drafts) to
/// verify in the next pass. Tokens not yet in the memory are the next pass's work: a prompt chunk while prefilling,
/// or the one token sampled last while decoding. The sequence outlives its requests: what the memory still holds
/// serves the next prompt that shares its prefix.
/// </summary>
public sealed class BatchSequence
{
    private readonly int[] _tokens;

    /// <param name="slot">Its sequence index in the KV memory.</param>
    /// <param name="contextLength">Positions it may hold at most.</param>
    public BatchSequence(int slot, int contextLength)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(slot);
        ArgumentOutOfRangeException.ThrowIfLessThan(contextLength, 1);
        Slot = slot;
        _tokens = new int[contextLength];
    }

    public int Slot { get; }
    public int ContextLength => _tokens.Length;

    /// <summary>Tokens known: the prompt, then every token accepted after it.</summary>
    public int Count { get; private set; }

    /// <summary>Leading tokens whose keys and values the memory holds, counting those of the pass being planned;
    /// after <see cref="BatchPlanner.Settle"/> never more than <see cref="Count"/>.</summary>
    public int Cached { get; internal set; }

    public ReadOnlySpan<int> History => _tokens.AsSpan(0, Count);

    /// <summary>Only the last known token is missing from the memory: the next pass decodes it (and any drafts).</summary>
    public bool IsDecoding => Count - Cached == 1;

    /// <summary>No position is left for another token.</summary>
    public bool IsFull => Count == _tokens.Length;

    /// <summary>
    /// Guesses of the tokens that follow <see cref="History"/>, for the next pass to verify: a decoding sequence runs
    /// them after its last token, each with logits, as far as the batch has room. Consumed by the pass.
    /// </summary>
    public List<int> Drafts { get; } = [];

    /// <summary>The first of this sequence's logits rows in the last pass, or -1 when it got none.</summary>
    public int FirstLogitsRow { get; internal set; } = -1;

    /// <summary>Logits rows the last pass produced for it: row j predicts the token after <see cref="History"/>
    /// extended by the first j drafts it ran (<see cref="PlannedDrafts"/>).</summary>
    public int LogitsRows { get; internal set; }

    /// <summary>Drafts the last pass ran (those beyond the batch's room were dropped).</summary>
    public int PlannedDrafts { get; internal set; }

    /// <summary>The longest prefix of <paramref name="prompt"/> the memory holds for this sequence.</summary>
    public int SharedPrefix(IReadOnlyList<int> prompt)
    {
        int shared = 0;
        while (shared < Cached && shared < prompt.Count && _tokens[shared] == prompt[shared]) shared++;
        return shared;
    }

    /// <summary>Replaces the known tokens with a prompt whose first <paramref name="cached"/> are already in the memory.</summary>
    internal void Restart(IReadOnlyList<int> prompt, int cached)
    {
        if (prompt.Count > _tokens.Length)
            throw new ArgumentException($"the prompt has {prompt.Count} tokens but the sequence holds {_tokens.Length}", nameof(prompt));
        for (int i = cached; i < prompt.Count; i++) _tokens[i] = prompt[i];
        Count = prompt.Count;
        Cached = cached;
        Drafts.Clear();
    }

    /// <summary>Forgets the known tokens from <paramref name="count"/> on; <see cref="BatchPlanner.Settle"/> then drops them from the memory.</summary>
    internal void Truncate(int count)
    {
        ArgumentOutOfRangeException.ThrowIfGreaterThan((uint)count, (uint)Count, nameof(count));
        Count = count;
        Cached = Math.Min(Cached, count);
        Drafts.Clear();
    }

    /// <summary>The draft the last pass ran right after <see cref="History"/>, or -1 when it ran none there.</summary>
    public int PendingDraft => Count < Cached ? _tokens[Count] : -1;

    /// <summary>Writes a planned draft at its position, right after the known tokens.</summary>
    internal void PlaceDraft(int index, int token) => _tokens[Count + index] = token;

    /// <summary>
    /// Appends the token chosen after <see cref="History"/>. Returns false when the pass ran a different draft at its
    /// position: the memory from there on, and the logits rows after this one, followed the draft, not this token.
    /// </summary>
    public bool Append(int token)
    {
        if (IsFull) throw new InvalidOperationException($"sequence {Slot} is full ({_tokens.Length} tokens)");
        bool agrees = Count >= Cached || _tokens[Count] == token;
        if (!agrees) Cached = Count;
        _tokens[Count++] = token;
        return agrees;
    }
}
