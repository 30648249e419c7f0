using System.Runtime.Intrinsics;
using Velo.Inference;

namespace Velo.Tests.Sampling;

/// <summary>
/// FROZEN REFERENCE: the sampler exactly as it was before the sampling chain (commit 11a409f), kept so tests can prove
/// the chain makes the same choices for the same seed. Do not change it; logit bias was applied by the scheduler then,
/// to a copy of the logits, before this class saw them.
///
/// Picks the next token from logits: penalties, then top-k, top-p and min-p on the softmax of the logits, then
/// temperature, then a draw (llama.cpp's default order). All scratch is allocated once for the vocabulary, so
/// sampling a token allocates nothing. Same seed, same logits, same choices.
/// </summary>
public sealed class LegacySampler
{
    private readonly float[] _logits;
    private readonly int[] _order;
    private readonly float[] _probs;
    private readonly int[] _counts;
    private ulong _rngState;

    public LegacySampler(SamplerOptions options, int vocabSize)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(vocabSize, 1);
        Validate(options);
        Options = options;
        VocabSize = vocabSize;
        _logits = new float[vocabSize];
        _order = new int[vocabSize];
        _probs = new float[vocabSize];
        _counts = new int[vocabSize];
        _rngState = options.Seed ?? (ulong)Random.Shared.NextInt64();
    }

    public SamplerOptions Options { get; }
    public int VocabSize { get; }

    public static void Validate(SamplerOptions o)
    {
        if (float.IsNaN(o.Temperature)) throw new ArgumentException("temperature must be a number");
        if (o.TopK < 0) throw new ArgumentException($"top-k must be 0 (off) or positive, got {o.TopK}");
        if (!(o.TopP > 0 && o.TopP <= 1)) throw new ArgumentException($"top-p must be in (0, 1], got {o.TopP}");
        if (!(o.MinP >= 0 && o.MinP <= 1)) throw new ArgumentException($"min-p must be in [0, 1], got {o.MinP}");
        if (!(o.RepeatPenalty > 0)) throw new ArgumentException($"repeat penalty must be positive, got {o.RepeatPenalty}");
    }

    /// <summary>Chooses a token. <paramref name="history"/> is the sequence so far (prompt and generated), for the penalties.</summary>
    public int Sample(ReadOnlySpan<float> logits, ReadOnlySpan<int> history)
    {
        if (logits.Length != VocabSize) throw new ArgumentException($"expected {VocabSize} logits, got {logits.Length}");
        var work = _logits.AsSpan();
        logits.CopyTo(work);
        ApplyPenalties(work, history);

        if (Options.IsGreedy) return ArgMax(work);

        int n = TopK(work);
        n = SoftmaxAndTopP(work, n);
        n = MinP(n);
        return Draw(work, n);
    }

    private void ApplyPenalties(Span<float> logits, ReadOnlySpan<int> history)
    {
        var o = Options;
        if (o.RepeatPenalty == 1 && o.FrequencyPenalty == 0 && o.PresencePenalty == 0) return;
        var recent = o.PenaltyLastN < 0 || o.PenaltyLastN > history.Length ? history : history[^o.PenaltyLastN..];
        foreach (int t in recent)
            if ((uint)t < (uint)VocabSize) _counts[t]++;
        foreach (int t in recent)
        {
            if ((uint)t >= (uint)VocabSize || _counts[t] == 0) continue;
            float l = logits[t];
            l = l > 0 ? l / o.RepeatPenalty : l * o.RepeatPenalty;
            logits[t] = l - _counts[t] * o.FrequencyPenalty - o.PresencePenalty;
            _counts[t] = 0; // applied once per distinct token
        }
    }

    /// <summary>The first index of the largest value; NaN never wins (nor loses to anything when it comes first).</summary>
    private static int ArgMax(ReadOnlySpan<float> values)
    {
        if (float.IsNaN(values[0])) return 0;
        // Vector pass for the largest value (NaN lanes masked out), then the first index holding it: the same
        // answer as a scalar scan, at a fraction of its cost over a large vocabulary.
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
        return values.IndexOf(max);
    }

    /// <summary>Puts the candidates in <see cref="_order"/> sorted by logit, keeping the top K; returns how many.</summary>
    private int TopK(ReadOnlySpan<float> logits)
    {
        int k = Options.TopK <= 0 || Options.TopK > VocabSize ? VocabSize : Options.TopK;
        if (k == VocabSize)
        {
            for (int i = 0; i < VocabSize; i++) _order[i] = i;
            SortByLogitDescending(logits, _order.AsSpan(0, VocabSize));
            return VocabSize;
        }
        // A min-heap of the best k seen so far: one pass over the vocabulary, then sort k.
        var heap = _order.AsSpan(0, k);
        for (int i = 0; i < k; i++) heap[i] = i;
        for (int i = k / 2 - 1; i >= 0; i--) SiftDown(logits, heap, i);
        float smallest = logits[heap[0]];
        int next = k;
        if (Vector256.IsHardwareAccelerated)
        {
            // Most of the vocabulary is below the k-th best: skip eight logits at a time while none beats it.
            for (; next <= VocabSize - Vector256<float>.Count; next += Vector256<float>.Count)
            {
                if (!Vector256.GreaterThanAny(Vector256.Create(logits.Slice(next, Vector256<float>.Count)), Vector256.Create(smallest))) continue;
                for (int i = next; i < next + Vector256<float>.Count; i++)
                    if (logits[i] > smallest)
                    {
                        heap[0] = i;
                        SiftDown(logits, heap, 0);
                        smallest = logits[heap[0]];
                    }
            }
        }
        for (int i = next; i < VocabSize; i++)
            if (logits[i] > smallest)
            {
                heap[0] = i;
                SiftDown(logits, heap, 0);
                smallest = logits[heap[0]];
            }
        SortByLogitDescending(logits, heap);
        return k;
    }

    private static void SiftDown(ReadOnlySpan<float> logits, Span<int> heap, int i)
    {
        while (true)
        {
            int smallest = i, l = 2 * i + 1, r = l + 1;
            if (l < heap.Length && Less(logits, heap[l], heap[smallest])) smallest = l;
            if (r < heap.Length && Less(logits, heap[r], heap[smallest])) smallest = r;
            if (smallest == i) return;
            (heap[i], heap[smallest]) = (heap[smallest], heap[i]);
            i = smallest;
        }
    }

    // Ties broken by id so the order (and so the draw) does not depend on the sort algorithm.
    private static bool Less(ReadOnlySpan<float> logits, int a, int b) => logits[a] < logits[b] || (logits[a] == logits[b] && a > b);

    private static void SortByLogitDescending(ReadOnlySpan<float> logits, Span<int> ids)
    {
        // Heap sort: in place, no allocation, no comparer delegate.
        for (int i = ids.Length / 2 - 1; i >= 0; i--) SiftDown(logits, ids, i);
        for (int end = ids.Length - 1; end > 0; end--)
        {
            (ids[0], ids[end]) = (ids[end], ids[0]);
            SiftDown(logits, ids[..end], 0);
        }
    }

    /// <summary>Softmax over the n candidates into <see cref="_probs"/>, then the top-p cut; returns the new count.</summary>
    private int SoftmaxAndTopP(ReadOnlySpan<float> logits, int n)
    {
        float max = logits[_order[0]];
        double sum = 0;
        for (int i = 0; i < n; i++)
        {
            float p = MathF.Exp(logits[_order[i]] - max);
            _probs[i] = p;
            sum += p;
        }
        for (int i = 0; i < n; i++) _probs[i] = (float)(_probs[i] / sum);
        if (Options.TopP >= 1) return n;
        double cumulative = 0;
        for (int i = 0; i < n; i++)
        {
            cumulative += _probs[i];
            if (cumulative >= Options.TopP) return i + 1;
        }
        return n;
    }

    private int MinP(int n)
    {
        if (Options.MinP <= 0) return n;
        float threshold = _probs[0] * Options.MinP;
        int kept = 1;
        while (kept < n && _probs[kept] >= threshold) kept++;
        return kept;
    }

    private int Draw(ReadOnlySpan<float> logits, int n)
    {
        float invTemperature = 1f / Options.Temperature;
        float max = logits[_order[0]] * invTemperature;
        double sum = 0;
        for (int i = 0; i < n; i++)
        {
            float p = MathF.Exp(logits[_order[i]] * invTemperature - max);
            _probs[i] = p;
            sum += p;
        }
        double target = NextUniform() * sum;
        double cumulative = 0;
        for (int i = 0; i < n; i++)
        {
            cumulative += _probs[i];
            if (target < cumulative) return _order[i];
        }
        return _order[n - 1];
    }

    /// <summary>SplitMix64: tiny, fast and identical on every runtime, so seeds reproduce everywhere.</summary>
    private double NextUniform()
    {
        ulong z = _rngState += 0x9E3779B97F4A7C15;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EB;
        z ^= z >> 31;
        return (z >> 11) * (1.0 / (1UL << 53));
    }
}
