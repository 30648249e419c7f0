namespace Velo.Diagnostics;

/// <summary>
/// Prompts for load tests: plain English words drawn from a fixed list by a seeded generator, so a run is repeatable,
/// every request of it gets its own text (no prefix cache shortens one prompt for a server but not for another), and
/// any server, whatever its tokenizer, reads the same bytes.
/// </summary>
public static class LoadPrompts
{
    private static readonly string[] Words =
    [
        "the", "a", "river", "stone", "house", "quiet", "morning", "light", "garden", "window", "old", "small", "bright",
        "walked", "across", "under", "bridge", "city", "market", "bread", "music", "evening", "winter", "summer", "road",
        "mountain", "forest", "letter", "friend", "story", "ship", "harbor", "wind", "rain", "table", "lamp", "book",
        "children", "played", "near", "long", "after", "before", "because", "while", "slowly", "suddenly", "green",
        "blue", "warm", "cold", "night", "sound", "voice", "door", "field", "horse", "village", "teacher", "learned",
    ];

    /// <summary>Request <paramref name="number"/>'s prompt of run <paramref name="seed"/>: <paramref name="words"/> words,
    /// starting with its number.</summary>
    public static string For(int seed, int number, int words)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(words);
        // System.Random with a seed is the same sequence on every machine and runtime version (its legacy algorithm);
        // HashCode would differ from process to process.
        var random = new Random(unchecked(seed * 1_000_003 + number) & int.MaxValue);
        var text = new System.Text.StringBuilder($"{number}.");
        for (int i = 0; i < words; i++) text.Append(' ').Append(Words[random.Next(Words.Length)]);
        return text.ToString();
    }
}
