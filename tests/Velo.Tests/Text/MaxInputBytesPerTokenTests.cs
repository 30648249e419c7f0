using System.Text;
using Velo.Text;

namespace Velo.Tests.Text;

/// <summary><see cref="ITokenizer.MaxInputBytesPerToken"/> is a true bound: no text encodes to fewer tokens than its bytes allow.</summary>
public class MaxInputBytesPerTokenTests
{
    [Theory]
    [InlineData("llama-spm")]
    [InlineData("phi-3")]
    [InlineData("gpt-2")]
    public void No_test_string_encodes_to_fewer_tokens_than_its_bytes_allow(string vocab)
    {
        var tokenizer = Tokenizer.FromGguf(VocabTestVectors.VocabFile(vocab));
        int bound = tokenizer.MaxInputBytesPerToken;
        Assert.True(bound >= 4);
        for (int id = 0; id < tokenizer.VocabSize; id++) Assert.True(tokenizer.TokenBytes(id).Length <= bound, $"token {id}");
        foreach (var (text, _) in VocabTestVectors.Load(vocab))
            Assert.True(tokenizer.Encode(text, addSpecial: false, parseSpecial: true).Length * bound >= Encoding.UTF8.GetByteCount(text), text);
    }

    [Fact]
    public void A_typed_space_mark_counts_with_its_three_bytes()
    {
        // SentencePiece reads a typed ▁ (3 bytes) as a space (1 byte): "▁▁▁▁" can be one token covering 12 bytes.
        var tokenizer = Tokenizer.FromGguf(VocabTestVectors.VocabFile("llama-spm"));
        int longest = Enumerable.Range(0, tokenizer.VocabSize).Where(id => tokenizer.TokenText(id).All(c => c == '▁'))
            .Max(id => tokenizer.TokenText(id).Length);
        string marks = new('▁', longest * 8);
        Assert.True(tokenizer.Encode(marks, addSpecial: false).Length * tokenizer.MaxInputBytesPerToken >= Encoding.UTF8.GetByteCount(marks));
    }

    [Fact]
    public void WordPiece_has_no_bound_because_its_normalizer_drops_text()
    {
        Assert.Equal(0, Tokenizer.FromGguf(VocabTestVectors.VocabFile("bert-bge")).MaxInputBytesPerToken);
    }
}
