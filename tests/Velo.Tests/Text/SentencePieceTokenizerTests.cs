using Velo.Text;

namespace Velo.Tests.Text;

public class SentencePieceTokenizerTests
{
    [Theory]
    [InlineData("llama-spm")]
    [InlineData("phi-3")]
    public void MatchesLlamaCppVectors(string vocab)
    {
        var tokenizer = Tokenizer.FromGguf(VocabTestVectors.VocabFile(vocab));
        var vectors = VocabTestVectors.Load(vocab);
        Assert.Equal("", VocabTestVectors.Mismatches(text => tokenizer.Encode(text, addSpecial: false), vectors));
    }

    [Theory]
    [InlineData("llama-spm")]
    [InlineData("phi-3")]
    public void DecodeInvertsEncode(string vocab)
    {
        var tokenizer = Tokenizer.FromGguf(VocabTestVectors.VocabFile(vocab));
        foreach (var (text, _) in VocabTestVectors.Load(vocab))
        {
            Assert.Equal(text, tokenizer.Decode(tokenizer.Encode(text, addSpecial: false)));
            Assert.Equal(text, tokenizer.Decode(tokenizer.Encode(text), skipSpecial: true));
        }
    }

    [Fact]
    public void Stories260KPromptMatchesReference()
    {
        var tokenizer = Tokenizer.FromGguf(TestPaths.Stories260K);
        Assert.Equal([1, 403, 407, 261, 378], tokenizer.Encode("Once upon a time"));
        Assert.Equal(1, tokenizer.BosId);
        Assert.Equal(2, tokenizer.EosId);
        Assert.Equal(0, tokenizer.UnknownId);
        Assert.True(tokenizer.AddBos);
        Assert.False(tokenizer.AddEos);
        Assert.True(tokenizer.IsEndOfGeneration(2));
        Assert.False(tokenizer.IsEndOfGeneration(403));
        Assert.Equal("<s> Once upon a time", tokenizer.Decode([1, 403, 407, 261, 378]));
        Assert.Equal("Once upon a time", tokenizer.Decode([1, 403, 407, 261, 378], skipSpecial: true));
    }

    [Fact]
    public void UnknownCharactersFallBackToUtf8ByteTokens()
    {
        var tokenizer = Tokenizer.FromGguf(TestPaths.Stories260K);
        int[] ids = tokenizer.Encode("語", addSpecial: false); // E8 AA 9E, absent from the 512-piece vocabulary
        Assert.Equal(["▁", "<0xE8>", "<0xAA>", "<0x9E>"], ids.Select(tokenizer.TokenText));
        Assert.Equal("語", tokenizer.Decode(ids));
    }

    [Fact]
    public void ControlTokensAreTextUnlessParsingSpecials()
    {
        var tokenizer = Tokenizer.FromGguf(VocabTestVectors.VocabFile("llama-spm"));
        int[] parsed = tokenizer.Encode("<s>hi</s>", addSpecial: false, parseSpecial: true);
        Assert.Equal(1, parsed[0]);
        Assert.Equal(2, parsed[^1]);
        Assert.Equal(["▁hi"], parsed[1..^1].Select(tokenizer.TokenText));
        int[] plain = tokenizer.Encode("<s>hi</s>", addSpecial: false);
        Assert.DoesNotContain(1, plain);
        Assert.DoesNotContain(2, plain);
        Assert.Equal("<s>hi</s>", tokenizer.Decode(plain));
    }

    [Fact]
    public void Phi3ChatMarkersEatFollowingWhitespace()
    {
        var tokenizer = Tokenizer.FromGguf(VocabTestVectors.VocabFile("phi-3"));
        int user = 32010, end = 32007;
        Assert.Equal("<|user|>", tokenizer.TokenText(user));
        int[] ids = tokenizer.Encode("<|user|>\nHi<|end|>\n", addSpecial: false, parseSpecial: true);
        Assert.Equal(user, ids[0]);
        Assert.Equal(end, ids[^1]);
        Assert.Equal(tokenizer.Encode("Hi", addSpecial: false), ids[1..^1]);
        Assert.True(tokenizer.IsEndOfGeneration(end));
        Assert.True(tokenizer.IsEndOfGeneration(tokenizer.EosId));
    }

    [Fact]
    public void PiecesSpanningWordsStillMerge()
    {
        // "a▁b" crosses a word start, so this vocabulary cannot be merged word by word.
        var tokenizer = Tokenizer.FromData(new TokenizerData
        {
            Kind = TokenizerKind.SentencePiece,
            Tokens = ["<unk>", "▁", "a", "b", "a▁", "a▁b"],
            Scores = [0, -1, -1, -1, -2, -3],
            TokenTypes = [TokenType.Unknown, TokenType.Normal, TokenType.Normal, TokenType.Normal, TokenType.Normal, TokenType.Normal],
            UnknownId = 0,
            AddSpacePrefix = true,
        });
        Assert.Equal(["▁", "a▁b"], tokenizer.Encode("a b").Select(tokenizer.TokenText));
        Assert.Equal("a b", tokenizer.Decode(tokenizer.Encode("a b")));
    }
}
