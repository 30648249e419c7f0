using System.Globalization;

namespace Velo.Models;

/// <summary>
/// Blocks <see cref="Start"/> to <see cref="End"/>−1 of a decoder of <see cref="Total"/> blocks: the part one stage of
/// a pipeline split runs. The first stage also looks up the token embeddings, the last also runs the final norm and
/// the output head.
/// </summary>
public readonly record struct LayerRange
{
    public LayerRange(int start, int end, int total)
    {
        if (total < 1 || start < 0 || end <= start || end > total)
            throw new ArgumentOutOfRangeException(nameof(end), $"blocks {start}-{end - 1} are not a range of the model's {total} blocks (0-{total - 1})");
        Start = start;
        End = end;
        Total = total;
    }

    /// <summary>Every block of a model of <paramref name="total"/> blocks.</summary>
    public static LayerRange All(int total) => new(0, total, total);

    /// <summary>Reads <c>a-b</c> (both included, as <c>--layers</c> takes them) for a model of <paramref name="total"/> blocks.</summary>
    public static LayerRange Parse(string text, int total)
    {
        string[] parts = text.Split('-');
        if (parts.Length != 2
            || !int.TryParse(parts[0], NumberStyles.None, CultureInfo.InvariantCulture, out int first)
            || !int.TryParse(parts[1], NumberStyles.None, CultureInfo.InvariantCulture, out int last))
            throw new ArgumentException($"--layers takes the first and last block as a-b (such as 4-7), got '{text}'");
        if (first > last || last >= total)
            throw new ArgumentException($"--layers {text} is not a range of the model's {total} blocks (0-{total - 1})");
        return new LayerRange(first, last + 1, total);
    }

    public int Start { get; }
    public int End { get; }
    public int Total { get; }
    public int Count => End - Start;

    /// <summary>Whether the range starts at block 0, so it takes tokens rather than an earlier stage's hidden states.</summary>
    public bool IsFirst => Start == 0;

    /// <summary>Whether the range ends at the last block, so it writes output rows rather than hidden states.</summary>
    public bool IsLast => End == Total;

    public bool IsAll => IsFirst && IsLast;

    /// <summary>As <c>--layers</c> takes it: <c>a-b</c>, both included.</summary>
    public override string ToString() => $"{Start}-{End - 1}";
}
