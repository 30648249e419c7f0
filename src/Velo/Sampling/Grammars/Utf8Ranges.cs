namespace Velo.Sampling.Grammars;

/// <summary>
/// Turns a set of Unicode scalar values into the UTF-8 byte sequences that encode exactly them: each sequence is a
/// list of byte ranges, one per byte (the construction regular-expression engines use to match classes on bytes).
/// </summary>
internal static class Utf8Ranges
{
    public const int MaxScalar = 0x10FFFF;

    /// <summary>Sorts and merges ranges, drops surrogates, and complements them over all scalar values when asked.</summary>
    public static List<(int Low, int High)> Normalize(IEnumerable<(int Low, int High)> ranges, bool negate)
    {
        var sorted = ranges.Where(r => r.Low <= r.High).OrderBy(r => r.Low).ToList();
        var merged = new List<(int Low, int High)>();
        foreach (var r in sorted)
        {
            if (merged.Count > 0 && r.Low <= merged[^1].High + 1)
                merged[^1] = (merged[^1].Low, Math.Max(merged[^1].High, r.High));
            else
                merged.Add(r);
        }
        if (negate)
        {
            var complement = new List<(int Low, int High)>();
            int next = 0;
            foreach (var r in merged)
            {
                if (r.Low > next) complement.Add((next, r.Low - 1));
                next = r.High + 1;
            }
            if (next <= MaxScalar) complement.Add((next, MaxScalar));
            merged = complement;
        }
        var result = new List<(int Low, int High)>();
        foreach (var r in merged)
        {
            // Surrogate code points are not scalar values and have no UTF-8 encoding.
            if (r.High < 0xD800 || r.Low > 0xDFFF) result.Add(r);
            else
            {
                if (r.Low < 0xD800) result.Add((r.Low, 0xD7FF));
                if (r.High > 0xDFFF) result.Add((0xE000, r.High));
            }
        }
        return result;
    }

    /// <summary>The byte-range sequences of normalized ranges, shortest encodings first.</summary>
    public static List<(byte Low, byte High)[]> Sequences(List<(int Low, int High)> ranges)
    {
        var output = new List<(byte Low, byte High)[]>();
        foreach (var (low, high) in ranges)
        {
            // Split where the encoded length changes: 1, 2, 3 and 4 bytes.
            foreach (var (start, end) in (ReadOnlySpan<(int, int)>)[(0, 0x7F), (0x80, 0x7FF), (0x800, 0xFFFF), (0x10000, MaxScalar)])
            {
                int a = Math.Max(low, start), b = Math.Min(high, end);
                if (a <= b) Split(a, b, output);
            }
        }
        return output;
    }

    private static void Split(int low, int high, List<(byte Low, byte High)[]> output)
    {
        int length = Length(low);
        // Find a byte position at which the range is not a full "rectangle" and split there.
        for (int i = 1; i < length; i++)
        {
            int max = (1 << (6 * i)) - 1;
            if ((low & ~max) == (high & ~max)) continue;
            if ((low & max) != 0)
            {
                Split(low, low | max, output);
                Split((low | max) + 1, high, output);
                return;
            }
            if ((high & max) != max)
            {
                Split(low, (high & ~max) - 1, output);
                Split(high & ~max, high, output);
                return;
            }
        }
        Span<byte> lowBytes = stackalloc byte[4], highBytes = stackalloc byte[4];
        Encode(low, lowBytes);
        Encode(high, highBytes);
        var sequence = new (byte, byte)[length];
        for (int i = 0; i < length; i++) sequence[i] = (lowBytes[i], highBytes[i]);
        output.Add(sequence);
    }

    private static int Length(int scalar) => scalar < 0x80 ? 1 : scalar < 0x800 ? 2 : scalar < 0x10000 ? 3 : 4;

    public static int Encode(int scalar, Span<byte> output) => new System.Text.Rune(scalar).EncodeToUtf8(output);
}
