using System.Runtime.Intrinsics;

namespace Velo.Sampling;

/// <summary>
/// The tokens still in the running during one sampling step (llama.cpp's <c>llama_token_data_array</c>): parallel
/// ids, logits and probabilities, a count, and what is known about them. Every buffer is allocated once at vocabulary
/// size and reused, so a step allocates nothing. <see cref="Reset"/> starts a step with every token in vocabulary
/// order without writing an id: that layout reads its ids from a table filled at construction, which keeps a greedy
/// step down to one copy and one argmax over the vocabulary.
/// </summary>
public sealed class Candidates
{
    private readonly int[] _vocabularyOrder;
    private int[] _ids;
    private float[] _logits;
    private float[] _probabilities;
    // Heap and gather buffer for KeepTop; it then swaps with _ids, as _probabilities does with _logits.
    private int[] _scratch;

    public Candidates(int vocabSize)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(vocabSize, 1);
        _vocabularyOrder = new int[vocabSize];
        for (int i = 0; i < vocabSize; i++) _vocabularyOrder[i] = i;
        _ids = new int[vocabSize];
        _logits = new float[vocabSize];
        _probabilities = new float[vocabSize];
        _scratch = new int[vocabSize];
    }

    public int VocabSize => _vocabularyOrder.Length;
    public int Count { get; private set; }

    /// <summary>Every token is here and entry i is token i, so a stage may index <see cref="Logits"/> by token id.</summary>
    public bool InVocabularyOrder { get; private set; }

    /// <summary>Highest logit first; equal logits in ascending id order, so the order never depends on the algorithm.</summary>
    public bool Sorted { get; private set; }

    /// <summary><see cref="Probabilities"/> hold the softmax of the logits as they were when it was taken. Truncation keeps
    /// them as they are (they then sum to less than 1); changing logits drops them.</summary>
    public bool HasProbabilities { get; private set; }

    public ReadOnlySpan<int> Ids => (InVocabularyOrder ? _vocabularyOrder : _ids).AsSpan(0, Count);
    public ReadOnlySpan<float> Logits => _logits.AsSpan(0, Count);
    public ReadOnlySpan<float> Probabilities => _probabilities.AsSpan(0, Count);

    /// <summary>Starts a step: every token, in vocabulary order, with these logits.</summary>
    public void Reset(ReadOnlySpan<float> logits)
    {
        if (logits.Length != VocabSize) throw new ArgumentException($"expected {VocabSize} logits, got {logits.Length}");
        logits.CopyTo(_logits);
        Count = VocabSize;
        InVocabularyOrder = true;
        Sorted = false;
        HasProbabilities = false;
    }

    /// <summary>The logits, for a stage to change in place; the order and probabilities no longer hold afterwards.</summary>
    public Span<float> UpdateLogits()
    {
        Sorted = false;
        HasProbabilities = false;
        return _logits.AsSpan(0, Count);
    }

    /// <summary>Keeps the first <paramref name="count"/> entries (the most likely ones, when sorted).</summary>
    public void Truncate(int count)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(count);
        if (count >= Count) return;
        LeaveVocabularyOrder();
        Count = count;
    }

    /// <summary>Drops every token whose entry in <paramref name="allowed"/> (indexed by token id) is false, keeping the
    /// order of the rest: the primitive a grammar or other constraint stage needs.</summary>
    public void Retain(ReadOnlySpan<bool> allowed)
    {
        if (allowed.Length != VocabSize) throw new ArgumentException($"expected {VocabSize} flags, got {allowed.Length}");
        var ids = Ids;
        int kept = 0;
        for (int i = 0; i < ids.Length; i++)
        {
            int id = ids[i];
            if (!allowed[id]) continue;
            _ids[kept] = id; // reads ahead of or at the write position, so compaction in place is safe
            _logits[kept] = _logits[i];
            _probabilities[kept] = _probabilities[i];
            kept++;
        }
        InVocabularyOrder = false;
        Count = kept;
    }

    /// <summary>Drops every token whose bit in <paramref name="allowedBits"/> (bit i of word i/64) is clear, keeping the
    /// order of the rest. In vocabulary order only the set bits are visited, so a narrow mask costs little.</summary>
    public void Retain(ReadOnlySpan<ulong> allowedBits)
    {
        if (allowedBits.Length != (VocabSize + 63) / 64) throw new ArgumentException($"expected {(VocabSize + 63) / 64} mask words, got {allowedBits.Length}");
        int kept = 0;
        if (InVocabularyOrder)
        {
            for (int word = 0; word < allowedBits.Length; word++)
                for (ulong bits = allowedBits[word]; bits != 0; bits &= bits - 1)
                {
                    int id = word * 64 + System.Numerics.BitOperations.TrailingZeroCount(bits);
                    if (id >= Count) break;
                    _ids[kept] = id; // id >= kept, so compaction in place is safe
                    _logits[kept] = _logits[id];
                    _probabilities[kept] = _probabilities[id];
                    kept++;
                }
        }
        else
        {
            var ids = Ids;
            for (int i = 0; i < ids.Length; i++)
            {
                int id = ids[i];
                if ((allowedBits[id >> 6] >> (id & 63) & 1) == 0) continue;
                _ids[kept] = id;
                _logits[kept] = _logits[i];
                _probabilities[kept] = _probabilities[i];
                kept++;
            }
        }
        InVocabularyOrder = false;
        Count = kept;
    }

    /// <summary>Sorts (see <see cref="Sorted"/>) unless already sorted.</summary>
    public void Sort()
    {
        if (!Sorted) KeepTop(Count);
    }

    /// <summary>Keeps the <paramref name="k"/> highest logits, sorted: one pass with a min-heap of the best k, then a heap sort of k.</summary>
    public void KeepTop(int k)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(k, 1);
        k = Math.Min(k, Count);
        if (Sorted)
        {
            Truncate(k);
            return;
        }
        var logits = Logits;
        var ids = Ids;
        var heap = _scratch.AsSpan(0, k);
        if (k == Count)
        {
            for (int i = 0; i < k; i++) heap[i] = i;
            SortDescending(logits, ids, heap);
        }
        else
        {
            SelectTop(logits, ids, heap);
            SortDescending(logits, ids, heap);
        }
        // Gather the winners (heap holds entry indices) into the spare buffers, then swap them in.
        for (int j = 0; j < k; j++)
        {
            int entry = heap[j];
            _probabilities[j] = logits[entry];
            heap[j] = ids[entry];
        }
        (_ids, _scratch) = (_scratch, _ids);
        (_logits, _probabilities) = (_probabilities, _logits);
        Count = k;
        InVocabularyOrder = false;
        Sorted = true;
        HasProbabilities = false;
    }

    /// <summary>Softmax of the logits into <see cref="Probabilities"/>.</summary>
    public void Softmax() => Normalize(ComputeWeights());

    /// <summary>Leaves only the entry at <paramref name="index"/>, with probability 1: the distribution of a greedy choice.</summary>
    public void KeepOnly(int index)
    {
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual((uint)index, (uint)Count, nameof(index));
        int id = Ids[index];
        _ids[0] = id;
        _logits[0] = _logits[index];
        _probabilities[0] = 1;
        Count = 1;
        InVocabularyOrder = false;
        Sorted = true;
        HasProbabilities = true;
    }

    /// <summary>Multiplies every logit by a positive factor (a temperature's inverse); the order holds.</summary>
    internal void Scale(float factor)
    {
        var logits = _logits.AsSpan(0, Count);
        for (int i = 0; i < logits.Length; i++) logits[i] *= factor;
        HasProbabilities = false;
    }

    /// <summary>Writes exp(logit - max) into <see cref="Probabilities"/> and returns their sum; <see cref="Normalize"/> finishes the softmax.
    /// Split so a draw can walk the unnormalized weights, exactly as the sampler always has.</summary>
    internal double ComputeWeights()
    {
        var logits = Logits;
        float max = logits[0];
        if (!Sorted)
            foreach (float l in logits)
                if (l > max) max = l;
        double sum = 0;
        for (int i = 0; i < logits.Length; i++)
        {
            float p = MathF.Exp(logits[i] - max);
            _probabilities[i] = p;
            sum += p;
        }
        HasProbabilities = false;
        return sum;
    }

    internal void Normalize(double sum)
    {
        var probabilities = _probabilities.AsSpan(0, Count);
        for (int i = 0; i < probabilities.Length; i++) probabilities[i] = (float)(probabilities[i] / sum);
        HasProbabilities = true;
    }

    /// <summary>The first entry holding the largest logit; NaN never wins (nor loses to anything when it comes first).</summary>
    public int IndexOfMax()
    {
        var values = Logits;
        if (float.IsNaN(values[0])) return 0;
        // A vector pass for the largest value (NaN lanes masked out), then a vector search for its first entry: the
        // same answer as a scalar scan, at a fraction of its cost over a large vocabulary.
        float max = values[0];
        int i = 0;
        if (Vector256.IsHardwareAccelerated && values.Length >= Vector256<float>.Count)
        {
            var best = Vector256.Create(max);
            for (; i <= values.Length - Vector256<float>.Count; i += Vector256<float>.Count)
            {
                var v = Vector256.Create(values.Slice(i, Vector256<float>.Count));
                best = Vector256.Max(best, Vector256.ConditionalSelect(Vector256.Equals(v, v), v, best));
            }
            for (int lane = 0; lane < Vector256<float>.Count; lane++) max = MathF.Max(max, best[lane]);
        }
        for (; i < values.Length; i++)
            if (values[i] > max) max = values[i];

        i = 0;
        if (Vector256.IsHardwareAccelerated)
        {
            var target = Vector256.Create(max);
            for (; i <= values.Length - Vector256<float>.Count; i += Vector256<float>.Count)
            {
                uint hits = Vector256.Equals(Vector256.Create(values.Slice(i, Vector256<float>.Count)), target).ExtractMostSignificantBits();
                if (hits != 0) return i + System.Numerics.BitOperations.TrailingZeroCount(hits);
            }
        }
        for (; i < values.Length; i++)
            if (values[i] == max) return i;
        return 0; // unreachable: max is one of the values
    }

    /// <summary>Once entries stop being tokens 0..Count-1 in place, their ids must be written out.</summary>
    private void LeaveVocabularyOrder()
    {
        if (!InVocabularyOrder) return;
        _vocabularyOrder.AsSpan(0, Count).CopyTo(_ids);
        InVocabularyOrder = false;
    }

    /// <summary>Fills <paramref name="heap"/> with the entries of the heap.Length highest logits, as a min-heap.</summary>
    private static void SelectTop(ReadOnlySpan<float> logits, ReadOnlySpan<int> ids, Span<int> heap)
    {
        int k = heap.Length;
        for (int i = 0; i < k; i++) heap[i] = i;
        for (int i = k / 2 - 1; i >= 0; i--) SiftDown(logits, ids, heap, i);
        float smallest = logits[heap[0]];
        int next = k;
        if (Vector256.IsHardwareAccelerated)
        {
            // Most of the vocabulary is below the k-th best: skip eight logits at a time while none beats it.
            for (; next <= logits.Length - Vector256<float>.Count; next += Vector256<float>.Count)
            {
                if (!Vector256.GreaterThanAny(Vector256.Create(logits.Slice(next, Vector256<float>.Count)), Vector256.Create(smallest))) continue;
                for (int i = next; i < next + Vector256<float>.Count; i++)
                    if (logits[i] > smallest)
                    {
                        heap[0] = i;
                        SiftDown(logits, ids, heap, 0);
                        smallest = logits[heap[0]];
                    }
            }
        }
        for (int i = next; i < logits.Length; i++)
            if (logits[i] > smallest)
            {
                heap[0] = i;
                SiftDown(logits, ids, heap, 0);
                smallest = logits[heap[0]];
            }
    }

    private static void SiftDown(ReadOnlySpan<float> logits, ReadOnlySpan<int> ids, Span<int> heap, int i)
    {
        while (true)
        {
            int smallest = i, l = 2 * i + 1, r = l + 1;
            if (l < heap.Length && Less(logits, ids, heap[l], heap[smallest])) smallest = l;
            if (r < heap.Length && Less(logits, ids, heap[r], heap[smallest])) smallest = r;
            if (smallest == i) return;
            (heap[i], heap[smallest]) = (heap[smallest], heap[i]);
            i = smallest;
        }
    }

    // Ties broken by id so the order (and so the draw) does not depend on the sort algorithm.
    private static bool Less(ReadOnlySpan<float> logits, ReadOnlySpan<int> ids, int a, int b) =>
        logits[a] < logits[b] || (logits[a] == logits[b] && ids[a] > ids[b]);

    private static void SortDescending(ReadOnlySpan<float> logits, ReadOnlySpan<int> ids, Span<int> entries)
    {
        // Heap sort: in place, no allocation, no comparer delegate.
        for (int i = entries.Length / 2 - 1; i >= 0; i--) SiftDown(logits, ids, entries, i);
        for (int end = entries.Length - 1; end > 0; end--)
        {
            (entries[0], entries[end]) = (entries[end], entries[0]);
            SiftDown(logits, ids, entries[..end], 0);
        }
    }
}
