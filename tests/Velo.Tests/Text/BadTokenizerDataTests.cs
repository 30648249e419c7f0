using Velo.Formats;
using Velo.Text;

namespace Velo.Tests.Text;

public class BadTokenizerDataTests
{
    private static string[] ByteLevelAlphabet() => Enumerable.Range(0, 256).Select(b => ByteLevel.Encode((byte)b).ToString()).ToArray();

    private static TokenizerData SmallBpe(string[] extraTokens, params (string, string)[] merges) => new()
    {
        Kind = TokenizerKind.ByteLevelBpe,
        Tokens = [.. ByteLevelAlphabet(), .. extraTokens],
        Merges = merges,
        PreTokenizer = "gpt-2",
    };

    private static void AssertRejected(TokenizerData data, string messagePart)
    {
        var error = Assert.Throws<InvalidDataException>(() => Tokenizer.FromData(data));
        Assert.Contains(messagePart, error.Message);
    }

    [Fact]
    public void AWellFormedSmallBpeLoadsAndMerges()
    {
        var tokenizer = Tokenizer.FromData(SmallBpe(["ab", "abc"], ("a", "b"), ("ab", "c")));
        Assert.Equal(["abc", "Ġ", "b", "a"], tokenizer.Encode("abc ba").Select(tokenizer.TokenText));
    }

    [Fact]
    public void BpeWithoutMergesIsRejected() => AssertRejected(SmallBpe([]), "no merges");

    [Fact]
    public void MergeNamingAnUnknownTokenIsRejected() => AssertRejected(SmallBpe(["ab"], ("a", "b"), ("ab", "zz")), "'zz'");

    [Fact]
    public void MergeWhoseResultIsNotATokenIsRejected() => AssertRejected(SmallBpe([], ("a", "b")), "'ab'");

    [Fact]
    public void ByteLevelVocabularyMissingAByteLoadsAndDropsThatByte()
    {
        // llama.cpp loads such a vocabulary too (it only warns when "\n" tokenizes to nothing); see MissingByteTokenTests.
        var data = SmallBpe(["ab"], ("a", "b"));
        var tokenizer = Tokenizer.FromData(data with { Tokens = data.Tokens.Where(t => t != "Ċ").ToArray() });
        Assert.Empty(tokenizer.Encode("\n", addSpecial: false));
        Assert.Equal(["ab", "Ġ", "b"], tokenizer.Encode("ab\n b").Select(tokenizer.TokenText));
    }

    [Fact]
    public void SentencePieceWithoutBytePiecesOrUnknownIsRejected() =>
        AssertRejected(new TokenizerData { Kind = TokenizerKind.SentencePiece, Tokens = ["▁a", "b"] }, "no byte piece");

    [Fact]
    public void SentencePieceWithBadByteTokenIsRejected() =>
        AssertRejected(new TokenizerData
        {
            Kind = TokenizerKind.SentencePiece, Tokens = ["<unk>", "<0xZZ>"], UnknownId = 0,
            TokenTypes = [TokenType.Unknown, TokenType.Byte],
        }, "<0xZZ>");

    [Fact]
    public void WordPieceWithoutUnknownTokenIsRejected() =>
        AssertRejected(new TokenizerData { Kind = TokenizerKind.WordPiece, Tokens = ["▁a", "b"] }, "no unknown token");

    [Fact]
    public void WordPieceWithoutWordStartPiecesIsRejected() =>
        AssertRejected(new TokenizerData { Kind = TokenizerKind.WordPiece, Tokens = ["[UNK]", "##a", "b"], UnknownId = 0 }, "word-initial");

    [Fact]
    public void DuplicateTokensAreRejected() =>
        AssertRejected(SmallBpe(["ab", "ab"], ("a", "b")), "'ab' appears twice");

    [Fact]
    public void MismatchedTokenTypesAreRejected()
    {
        var data = SmallBpe(["ab"], ("a", "b"));
        AssertRejected(data with { TokenTypes = [TokenType.Normal] }, "1 token types");
    }

    [Fact]
    public void SpecialIdOutsideTheVocabularyIsRejected()
    {
        var data = SmallBpe(["ab"], ("a", "b"));
        AssertRejected(data with { EosId = 5000 }, "EOS token id 5000");
    }

    [Fact]
    public void GgufBpeWithoutMergesIsRejectedAtLoad()
    {
        string path = Path.Combine(Path.GetTempPath(), $"velo-bad-tokenizer-{Guid.NewGuid():N}.gguf");
        try
        {
            new GgufWriter()
                .Set("tokenizer.ggml.model", "gpt2")
                .Set("tokenizer.ggml.tokens", ByteLevelAlphabet())
                .Write(path);
            var error = Assert.Throws<InvalidDataException>(() => Tokenizer.FromGguf(path));
            Assert.Contains("tokenizer.ggml.merges is missing", error.Message);
        }
        finally
        {
            File.Delete(path);
        }
    }

    /// <summary>A byte-level BPE tokenizer.json with the given merges and normalizer, in a fresh folder.</summary>
    private static string WriteTokenizerJson(string merges, string normalizer = "null")
    {
        string folder = Path.Combine(Path.GetTempPath(), $"velo-bad-tokenizer-{Guid.NewGuid():N}");
        Directory.CreateDirectory(folder);
        var vocab = ByteLevelAlphabet().Select((t, i) => $"\"{(t == "\"" || t == "\\" ? "\\" + t : t)}\": {i}");
        File.WriteAllText(Path.Combine(folder, "tokenizer.json"), $$"""
            {
              "added_tokens": [],
              "normalizer": {{normalizer}},
              "pre_tokenizer": { "type": "ByteLevel", "add_prefix_space": false, "use_regex": true },
              "decoder": { "type": "ByteLevel" },
              "model": { "type": "BPE", "vocab": { {{string.Join(", ", vocab)}} }, "merges": {{merges}} }
            }
            """);
        return folder;
    }

    [Theory]
    [InlineData("[\"a b\"]", "null", "merge 0 'a b' needs 'ab'")]
    [InlineData("[]", "null", "has no merges")]
    public void BadTokenizerJsonIsRejectedAtLoad(string merges, string normalizer, string messagePart)
    {
        string folder = WriteTokenizerJson(merges, normalizer);
        try
        {
            var error = Assert.Throws<InvalidDataException>(() => Tokenizer.FromHuggingFace(folder));
            Assert.Contains(messagePart, error.Message);
        }
        finally
        {
            Directory.Delete(folder, recursive: true);
        }
    }

    [Fact]
    public void MalformedTokenizerJsonIsInvalidData()
    {
        string folder = WriteTokenizerJson("[\"Ġ Ġ\"");
        try
        {
            Assert.Contains("tokenizer.json", Assert.Throws<InvalidDataException>(() => Tokenizer.FromHuggingFace(folder)).Message);
        }
        finally
        {
            Directory.Delete(folder, recursive: true);
        }
    }

    [Fact]
    public void UnsupportedNormalizerIsNamed()
    {
        string folder = WriteTokenizerJson("[\"Ġ Ġ\"]", """{ "type": "Lowercase" }""");
        try
        {
            Assert.Contains("'Lowercase'", Assert.Throws<NotSupportedException>(() => Tokenizer.FromHuggingFace(folder)).Message);
        }
        finally
        {
            Directory.Delete(folder, recursive: true);
        }
    }

    [Fact]
    public void UnsupportedGgufTokenizerModelIsNamed()
    {
        var metadataPath = Path.Combine(Path.GetTempPath(), $"velo-bad-tokenizer-{Guid.NewGuid():N}.gguf");
        try
        {
            new GgufWriter().Set("tokenizer.ggml.model", "rwkv").Set("tokenizer.ggml.tokens", (string[])["a"]).Write(metadataPath);
            var error = Assert.Throws<NotSupportedException>(() => Tokenizer.FromGguf(metadataPath));
            Assert.Contains("'rwkv'", error.Message);
        }
        finally
        {
            File.Delete(metadataPath);
        }
    }
}
