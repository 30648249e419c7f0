using System.Text;
using Velo.Text;

namespace Velo.Tests.Text;

public class StreamingDecoderTests
{
    private const string Text = "Hello 🚀 (normal) 😶‍🌫️ 世界 Ⅾ ½ Führer — ok\n";

    [Fact]
    public void ByteLevelCharactersSplitAcrossTokensComeOutWhole()
    {
        var tokenizer = Tokenizer.FromGguf(VocabTestVectors.VocabFile("gpt-2"));
        int[] ids = tokenizer.Encode(Text);
        var decoder = new StreamingDecoder(tokenizer);
        var pieces = ids.Select(decoder.Append).ToList();
        pieces.Add(decoder.Flush());
        Assert.Contains("", pieces); // some token ended inside a character
        Assert.All(pieces, p => Assert.True(IsWellFormed(p), $"'{p}' holds half a character"));
        Assert.Equal(Text, string.Concat(pieces));
    }

    [Fact]
    public void ByteFallbackCharactersComeOutWhole()
    {
        var tokenizer = Tokenizer.FromGguf(VocabTestVectors.VocabFile("llama-spm"));
        int[] ids = tokenizer.Encode(Text);
        var decoder = new StreamingDecoder(tokenizer, skipSpecial: true);
        var pieces = ids.Select(decoder.Append).ToList();
        Assert.Contains("", pieces);
        Assert.All(pieces, p => Assert.True(IsWellFormed(p), $"'{p}' holds half a character"));
        // The stream keeps the space SentencePiece puts before the first word; Decode drops it.
        Assert.Equal(" " + Text, string.Concat(pieces) + decoder.Flush());
    }

    [Fact]
    public void FlushEmitsAnUnfinishedCharacterAsReplacement()
    {
        var tokenizer = Tokenizer.FromGguf(VocabTestVectors.VocabFile("llama-spm"));
        var decoder = new StreamingDecoder(tokenizer);
        int lead = tokenizer.Encode("🚀", addSpecial: false).First(id => tokenizer.TokenText(id) == "<0xF0>");
        Assert.Equal("", decoder.Append(lead));
        Assert.Equal("\uFFFD", decoder.Flush());
        Assert.Equal("", decoder.Flush());
    }

    private static bool IsWellFormed(string s)
    {
        for (int i = 0; i < s.Length; i++)
        {
            if (char.IsHighSurrogate(s[i]) && i + 1 < s.Length && char.IsLowSurrogate(s[i + 1])) i++;
            else if (char.IsSurrogate(s[i]) || s[i] == '\uFFFD') return false;
        }
        return true;
    }
}
