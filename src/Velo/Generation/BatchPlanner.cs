using Velo.Models;
using Velo.Runtime;

namespace Velo.Generation;

/// <summary>
/// Plans and runs one forward pass for any number of sequences of one model state. Decoding sequences come first:
/// each runs its last token and then its drafts, every one of them with logits; the room left goes to prompt
/// chunks, in order, the last prompt token with logits. After the pass each sequence finds its logits rows through
/// <see cref="Logits"/>, and <see cref="Settle"/> drops from the memory whatever followed a rejected draft.
/// Not thread-safe: one thread owns a planner and its state.
/// </summary>
public sealed class BatchPlanner
{
    private readonly IModel _model;
    private readonly IModelState _state;
    private readonly ForwardBatch _batch;

    public BatchPlanner(IModel model, IModelState state)
    {
        _model = model;
        _state = state;
        _batch = new ForwardBatch(state.MaxBatch);
    }

    /// <summary>The pass planned last.</summary>
    public ForwardBatch Batch => _batch;

    public KvCache Cache => _state.Cache;

    /// <summary>
    /// Starts <paramref name="sequence"/> on a new prompt, keeping the prefix the memory already holds for it except
    /// the last prompt token, whose logits the first sample needs. Returns how many prompt tokens are reused.
    /// </summary>
    public int Start(BatchSequence sequence, IReadOnlyList<int> prompt)
    {
        if (prompt.Count == 0) throw new ArgumentException("the prompt is empty: it needs at least one token (usually BOS)", nameof(prompt));
        int reuse = Math.Min(sequence.SharedPrefix(prompt), prompt.Count - 1);
        sequence.Restart(prompt, reuse);
        _state.Cache.RemoveRange(sequence.Slot, reuse);
        return reuse;
    }

    /// <summary>Forgets everything the sequence holds, in the memory too (after a failed pass, whose stores are unknown).</summary>
    public void Reset(BatchSequence sequence)
    {
        sequence.Restart([], 0);
        _state.Cache.RemoveRange(sequence.Slot, 0);
    }

    /// <summary>Plans the next pass for <paramref name="sequences"/> and runs it.</summary>
    public void Run(IReadOnlyList<BatchSequence> sequences)
    {
        Plan(sequences);
        if (_batch.Count > 0) _model.Forward(_state, _batch);
    }

    /// <summary>
    /// Fills <see cref="Batch"/>: every decoding sequence's last token, then its drafts as far as the batch and the
    /// output rows leave room (each other sequence keeps a token and a logits row), then prompt chunks. A sequence
    /// counts its planned tokens as <see cref="BatchSequence.Cached"/> from here on.
    /// </summary>
    /// <remarks>Indexed loops: a foreach over the interface would allocate an enumerator every step.</remarks>
    public void Plan(IReadOnlyList<BatchSequence> sequences)
    {
        _batch.Clear();
        int decoding = 0, prefilling = 0;
        for (int i = 0; i < sequences.Count; i++)
        {
            var sequence = sequences[i];
            sequence.FirstLogitsRow = -1;
            sequence.LogitsRows = 0;
            sequence.PlannedDrafts = 0;
            if (sequence.IsDecoding) decoding++;
            else if (sequence.Count > sequence.Cached) prefilling++;
        }
        if (decoding + prefilling > _state.MaxLogitRows)
            throw new InvalidOperationException($"{decoding + prefilling} sequences need logits but the state has {_state.MaxLogitRows} output rows");
        if (decoding > _batch.Capacity)
            throw new InvalidOperationException($"{decoding} sequences decode but a pass holds {_batch.Capacity} tokens");

        int spareTokens = Math.Max(_batch.Capacity - decoding - prefilling, 0);
        int spareRows = _state.MaxLogitRows - decoding - prefilling;
        for (int i = 0; i < sequences.Count; i++)
        {
            var sequence = sequences[i];
            if (!sequence.IsDecoding) continue;
            int drafts = Math.Min(Math.Min(sequence.Drafts.Count, sequence.ContextLength - sequence.Count), Math.Min(spareTokens, spareRows));
            spareTokens -= drafts;
            spareRows -= drafts;
            int position = sequence.Cached;
            sequence.FirstLogitsRow = _batch.Add(sequence.History[position], position, sequence.Slot, wantLogits: true);
            for (int d = 0; d < drafts; d++)
            {
                sequence.PlaceDraft(d, sequence.Drafts[d]);
                _batch.Add(sequence.Drafts[d], position + 1 + d, sequence.Slot, wantLogits: true);
            }
            sequence.Drafts.Clear();
            sequence.PlannedDrafts = drafts;
            sequence.LogitsRows = 1 + drafts;
            sequence.Cached = position + 1 + drafts;
        }
        for (int i = 0; i < sequences.Count; i++)
        {
            var sequence = sequences[i];
            // Decoding sequences were planned above and now count their tokens as cached.
            if (sequence.Count <= sequence.Cached) continue;
            int room = _batch.Capacity - _batch.Count;
            if (room == 0) break;
            var tokens = sequence.History;
            int end = Math.Min(tokens.Length, sequence.Cached + room);
            for (int position = sequence.Cached; position < end; position++)
            {
                int row = _batch.Add(tokens[position], position, sequence.Slot, wantLogits: position == tokens.Length - 1);
                if (row < 0) continue;
                sequence.FirstLogitsRow = row;
                sequence.LogitsRows = 1;
            }
            sequence.Cached = end;
        }
    }

    /// <summary>Logits row <paramref name="row"/> (0 ≤ row &lt; <see cref="BatchSequence.LogitsRows"/>) of a sequence in the last pass.</summary>
    public ReadOnlySpan<float> Logits(BatchSequence sequence, int row)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(row);
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(row, sequence.LogitsRows);
        return _state.Output(sequence.FirstLogitsRow + row);
    }

    /// <summary>
    /// After the sequence's tokens of the last pass were accepted (<see cref="BatchSequence.Append"/>): removes from the
    /// memory the drafts that were not, so it holds exactly the known tokens that a pass has run.
    /// </summary>
    public void Settle(BatchSequence sequence)
    {
        int keep = Math.Min(sequence.Cached, sequence.Count);
        // A rejected draft already lowered Cached; the memory still holds what followed it.
        if (_state.Cache.Length(sequence.Slot) > keep) _state.Cache.RemoveRange(sequence.Slot, keep);
        sequence.Cached = keep;
    }

    /// <summary>
    /// Runs a short prompt and one decode step through sequence 0 and empties it again, so the kernels are compiled
    /// before the first request: without tiering (the CLI and server) the JIT would otherwise delay the first answer
    /// by about half a second on a 1B model. Sequence 0 must hold nothing yet.
    /// </summary>
    public void WarmUp()
    {
        int prompt = Math.Min(Math.Min(9, _batch.Capacity), _state.Cache.ContextLength - 1);
        _batch.Clear();
        for (int i = 0; i < prompt; i++) _batch.Add(i, i, sequence: 0, wantLogits: i == prompt - 1);
        _model.Forward(_state, _batch);
        _batch.Clear();
        _batch.Add(0, prompt, sequence: 0, wantLogits: true);
        _model.Forward(_state, _batch);
        _batch.Clear();
        _state.Cache.RemoveRange(0, 0);
    }
}
