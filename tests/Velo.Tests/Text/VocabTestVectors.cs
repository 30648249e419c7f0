namespace Velo.Tests.Text;

/// <summary>llama.cpp's tokenizer test vectors: <c>NAME.gguf.inp</c> strings and their <c>NAME.gguf.out</c> ids.</summary>
public static class VocabTestVectors
{
    private const string Separator = "\n__ggml_vocab_test__\n";

    public static string VocabFile(string name) => TestPaths.SharedFile("tokenizers", "vocab", $"ggml-vocab-{name}.gguf");

    public static IReadOnlyList<(string Text, int[] Ids)> Load(string name)
    {
        string inp = File.ReadAllText(VocabFile(name) + ".inp");
        string[] texts = inp.Split(Separator);
        Assert.Equal("", texts[^1]); // the file ends with a separator
        string[] lines = File.ReadAllText(VocabFile(name) + ".out").Split('\n');
        if (lines[^1] == "") lines = lines[..^1];
        Assert.Equal(texts.Length - 1, lines.Length);
        return lines.Select((line, i) => (texts[i], line.Split(' ', StringSplitOptions.RemoveEmptyEntries).Select(int.Parse).ToArray())).ToList();
    }

    /// <summary>Describes every string whose encoding differs from the reference, so one failure shows them all.</summary>
    public static string Mismatches(Func<string, int[]> encode, IReadOnlyList<(string Text, int[] Ids)> vectors)
    {
        var report = new System.Text.StringBuilder();
        foreach (var (text, expected) in vectors)
        {
            int[] actual = encode(text);
            if (!actual.AsSpan().SequenceEqual(expected))
                report.AppendLine($"'{Escape(text)}'\n  expected {string.Join(' ', expected)}\n  actual   {string.Join(' ', actual)}");
        }
        return report.ToString();
    }

    public static string Escape(string text) => text.Replace("\n", "\\n").Replace("\t", "\\t").Replace("\r", "\\r");
}
