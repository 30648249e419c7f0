using System.Text;
using Velo.Formats;
using Velo.Text;

namespace Velo.Tests.Text;

/// <summary>
/// Byte-level BPE vocabularies that lack some single-byte tokens (issue 18): MPT, StarCoder and Refact have none for
/// 0xC0, Falcon none for 0x03. None of those published vocabularies is available here, so the tests cut the bytes out
/// of GPT-2's vocabulary the way those trainers left them out: the byte's token, every token that holds the byte and
/// every merge that names one. The removed tokens keep their ids under a placeholder text, so the llama.cpp reference
/// ids stay valid.
/// </summary>
/// <remarks>
/// llama.cpp loads such vocabularies without complaint and, in llm_tokenizer_bpe_session::tokenize
/// (src/llama-vocab.cpp), drops a byte that has no token: the symbol has no token, so it is looked up again one UTF-8
/// byte of its text at a time, and none of those lookups succeeds. Velo does the same: no exception, the byte is left
/// out, and its neighbours do not merge across it.
/// </remarks>
public class MissingByteTokenTests
{
    /// <summary>Bytes that valid UTF-8 never holds: missing in MPT, StarCoder and Refact.</summary>
    private static readonly byte[] NotInUtf8 = [0xC0, 0xC1, .. Enumerable.Range(0xF5, 11).Select(b => (byte)b)];

    /// <summary>Falcon's gap as well: 0x03 is a control character that text can hold.</summary>
    private static readonly byte[] NotInUtf8AndEtx = [.. NotInUtf8, 0x03];

    private static TokenizerData Gpt2Data()
    {
        using var file = GgufFile.Open(VocabTestVectors.VocabFile("gpt-2"));
        return GgufTokenizerMetadata.Read(file.Metadata);
    }

    private static string Placeholder(int id) => $"[REMOVED_{id}]";

    /// <summary>GPT-2's vocabulary without the given bytes, and the ids that were removed.</summary>
    private static (TokenizerData Data, HashSet<int> Removed) Without(byte[] bytes)
    {
        var data = Gpt2Data();
        char[] missing = bytes.Select(ByteLevel.Encode).ToArray();
        bool Holds(string text) => text.IndexOfAny(missing) >= 0;
        var tokens = (string[])data.Tokens.Clone();
        var removed = new HashSet<int>();
        for (int id = 0; id < tokens.Length; id++)
        {
            if (!Holds(tokens[id])) continue;
            tokens[id] = Placeholder(id);
            removed.Add(id);
        }
        var merges = data.Merges!.Where(m => !Holds(m.Left) && !Holds(m.Right)).ToArray();
        Assert.True(removed.Count >= bytes.Length);
        return (data with { Tokens = tokens, Merges = merges }, removed);
    }

    public static TheoryData<string> Gaps() => ["not-in-utf8", "not-in-utf8-and-etx"];

    private static byte[] Gap(string name) => name == "not-in-utf8" ? NotInUtf8 : NotInUtf8AndEtx;

    [Theory]
    [MemberData(nameof(Gaps))]
    public void Loads_and_matches_the_llama_cpp_vectors(string gap)
    {
        var (data, removed) = Without(Gap(gap));
        var tokenizer = Tokenizer.FromData(data);
        var vectors = VocabTestVectors.Load("gpt-2");
        // None of the reference texts holds a removed byte, so every one of them must tokenize exactly as before.
        foreach (var (text, ids) in vectors)
        {
            Assert.DoesNotContain(Encoding.UTF8.GetBytes(text), b => Gap(gap).Contains(b));
            Assert.DoesNotContain(ids, removed.Contains);
        }
        Assert.Equal("", VocabTestVectors.Mismatches(text => tokenizer.Encode(text, addSpecial: false), vectors));
        foreach (var (text, _) in vectors) Assert.Equal(text, tokenizer.Decode(tokenizer.Encode(text)));
    }

    [Theory]
    [MemberData(nameof(Gaps))]
    public void Every_remaining_token_decodes_as_in_the_full_vocabulary(string gap)
    {
        var (data, removed) = Without(Gap(gap));
        var tokenizer = Tokenizer.FromData(data);
        var full = Tokenizer.FromGguf(VocabTestVectors.VocabFile("gpt-2"));
        Assert.Equal(full.VocabSize, tokenizer.VocabSize);
        for (int id = 0; id < tokenizer.VocabSize; id++)
        {
            if (removed.Contains(id)) Assert.Equal(Placeholder(id), Encoding.UTF8.GetString(tokenizer.TokenBytes(id)));
            else Assert.True(full.TokenBytes(id).SequenceEqual(tokenizer.TokenBytes(id)), $"token {id}");
        }
    }

    [Theory]
    [InlineData("\u0003", new string[0])]
    [InlineData("a\u0003b", new[] { "a", "b" })]
    [InlineData("\u0003\u0003\u0003", new string[0])]
    // The byte is dropped after merging, as in llama.cpp: the two '!' are never adjacent, so they stay two tokens
    // where the full vocabulary would have merged "!!" had the byte not been there.
    [InlineData("!\u0003!", new[] { "!", "!" })]
    [InlineData("Hello\u0003 world", new[] { "Hello", "Ġworld" })]
    public void A_byte_without_a_token_is_dropped_as_llama_cpp_drops_it(string text, string[] expected)
    {
        var tokenizer = Tokenizer.FromData(Without(NotInUtf8AndEtx).Data);
        int[] ids = tokenizer.Encode(text, addSpecial: false);
        Assert.Equal(expected, ids.Select(tokenizer.TokenText));
        Assert.Equal(text.Replace("\u0003", ""), tokenizer.Decode(ids));
    }

    [Fact]
    public void The_bytes_per_token_bound_holds_unless_text_can_need_a_missing_byte()
    {
        var full = Tokenizer.FromGguf(VocabTestVectors.VocabFile("gpt-2"));
        // Text never holds 0xC0, 0xC1 or 0xF5 to 0xFF, so missing them drops nothing and the bound stays.
        Assert.Equal(full.MaxInputBytesPerToken, Tokenizer.FromData(Without(NotInUtf8).Data).MaxInputBytesPerToken);
        // Without 0x03 a text of any length can encode to no tokens: there is no bound.
        var falconLike = Tokenizer.FromData(Without(NotInUtf8AndEtx).Data);
        Assert.Equal(0, falconLike.MaxInputBytesPerToken);
        Assert.Empty(falconLike.Encode(new string('\u0003', 10_000), addSpecial: false));
    }

    [Fact]
    public void A_vocabulary_with_almost_no_byte_tokens_loads_and_never_throws()
    {
        // Hostile: three tokens and one merge. Every byte but 'a' and 'b' is missing, and nothing throws.
        var tokenizer = Tokenizer.FromData(new TokenizerData
        {
            Kind = TokenizerKind.ByteLevelBpe,
            Tokens = ["a", "b", "ab"],
            Merges = [("a", "b")],
            PreTokenizer = "gpt-2",
        });
        Assert.Equal([2, 0], tokenizer.Encode("abca", addSpecial: false));
        Assert.Empty(tokenizer.Encode("xyz 世界 🚀 \u0000", addSpecial: false));
        Assert.Equal("abab", tokenizer.Decode([2, 0, 1]));
    }
}
