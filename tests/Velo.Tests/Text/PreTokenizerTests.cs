using System.Globalization;
using System.Text;
using Velo.Text;

namespace Velo.Tests.Text;

public class PreTokenizerTests
{
    private static string[] Words(PreTokenizer pre, string text)
    {
        var words = new List<(int Start, int Length)>();
        pre.Split(text, words);
        return words.Select(w => text.Substring(w.Start, w.Length)).ToArray();
    }

    // Characters that exercise every branch of the patterns: contractions in both cases, letters and digits inside
    // and outside the BMP, every kind of whitespace, symbols, emoji and combining marks.
    private static readonly string[] Alphabet =
    [
        "a", "Z", "é", "ß", "ж", "世", "𝕏", "𐐀", "'", "'s", "'S", "'re", "'LL", "'d", "'ve", "'m", "'t",
        "1", "٣", "½", "Ⅻ", "𝟘", " ", " ", "  ", "\t", "\n", "\r\n", "\u00A0", "\u3000", "\u2028",
        ".", ",", "!", "?", "-", "(", "$", "+", "<", "|", "`", "~", "…", "。", "🚀", "😶‍🌫️", "\u0301", "\u200D",
    ];

    private static string RandomText(Random random)
    {
        var text = new StringBuilder();
        int count = random.Next(1, 24);
        for (int i = 0; i < count; i++) text.Append(Alphabet[random.Next(Alphabet.Length)]);
        return text.ToString();
    }

    [Theory]
    [InlineData(PreTokenizer.Gpt2Pattern)]
    [InlineData(PreTokenizer.Llama3Pattern)]
    [InlineData(PreTokenizer.Qwen2Pattern)]
    public void HandWrittenSplittersAgreeWithTheirRegex(string pattern)
    {
        var fast = PreTokenizer.FromPatterns([pattern]);
        var regex = new RegexPreTokenizer([pattern]);
        Assert.IsNotType<RegexPreTokenizer>(fast);
        var random = new Random(1234);
        for (int i = 0; i < 20000; i++)
        {
            string text = RandomText(random);
            Assert.Equal(Words(regex, text), Words(fast, text));
        }
    }

    [Fact]
    public void EveryNamedPreTokenizerCoversItsInput()
    {
        var random = new Random(99);
        var samples = Enumerable.Range(0, 200).Select(_ => RandomText(random)).ToList();
        foreach (string name in PreTokenizer.KnownNames)
        {
            var pre = PreTokenizer.ForName(name);
            foreach (string text in samples)
                Assert.Equal(text, string.Concat(Words(pre, text)));
        }
    }

    [Theory]
    [InlineData("gpt-2", "Hello world's  12345 'S\tx", "Hello| world|'s| | 12345| '|S|\t|x")]
    [InlineData("llama-bpe", "Hello world'S  12345\n\n x", "Hello| world|'S| | |123|45|\n\n| x")]
    [InlineData("qwen2", "ab 12", "ab| |1|2")]
    [InlineData("deepseek-coder", "Hello 123 世界!", "Hello| |1|2|3| |世界|!")]
    [InlineData("falcon", "Hello, world 12345", "Hello|,| world| |123|45")]
    [InlineData("starcoder", "a 12", "a| |1|2")]
    [InlineData("command-r", "x=42", "x|=|4|2")]
    [InlineData("mpt", "x=42", "x|=|42")]
    [InlineData("deepseek-llm", "Hi 2024年\n", "Hi| |2024|年|\n")]
    public void NamedPreTokenizersSplitLikeLlamaCpp(string name, string text, string expected)
    {
        Assert.Equal(expected.Split('|'), Words(PreTokenizer.ForName(name), text));
    }

    [Fact]
    public void SupplementaryCharactersKeepTheirCategory()
    {
        // A double-struck letter and digit lie outside the BMP; .NET's regex alone would see two surrogates each.
        var pre = new RegexPreTokenizer([@"\p{L}+|\p{N}{1,3}"]);
        Assert.Equal(["a𝕏b", "𝟘𝟙𝟚", "𝟛"], Words(pre, "a𝕏b𝟘𝟙𝟚𝟛"));
        foreach (UnicodeCategory category in Enum.GetValues<UnicodeCategory>())
        {
            if (category is UnicodeCategory.Surrogate or UnicodeCategory.Control or UnicodeCategory.SpaceSeparator
                or UnicodeCategory.LineSeparator or UnicodeCategory.ParagraphSeparator)
                continue; // no supplementary character has these
            char standIn = RegexPreTokenizer.StandIn(category);
            Assert.Equal(category, CharUnicodeInfo.GetUnicodeCategory(standIn));
            Assert.True(standIn > 0x7F, $"stand-in for {category} is ASCII");
        }
    }

    [Fact]
    public void UnknownNamesFallBackToDefault()
    {
        Assert.Equal(Words(PreTokenizer.ForName("default"), "Hello, world 1234"), Words(PreTokenizer.ForName("no-such-model"), "Hello, world 1234"));
    }
}
