using Velo.Text;

namespace Velo.Tests.Text;

public class ByteLevelBpeTokenizerTests
{
    [Fact]
    public void Gpt2MatchesLlamaCppVectors()
    {
        var tokenizer = Tokenizer.FromGguf(VocabTestVectors.VocabFile("gpt-2"));
        var vectors = VocabTestVectors.Load("gpt-2");
        Assert.Equal("", VocabTestVectors.Mismatches(text => tokenizer.Encode(text, addSpecial: false), vectors));
        foreach (var (text, _) in vectors) Assert.Equal(text, tokenizer.Decode(tokenizer.Encode(text)));
    }

    public static string HfFolder(string name) => TestPaths.SharedFile("tokenizers", "hf", name);

    [Theory]
    [InlineData("llama3", "llama-bpe")]
    [InlineData("qwen3", "qwen2")]
    public void HuggingFaceTokenizerMatchesLlamaCppVectors(string folder, string vocab)
    {
        var tokenizer = Tokenizer.FromHuggingFace(HfFolder(folder));
        var vectors = VocabTestVectors.Load(vocab);
        Assert.Equal("", VocabTestVectors.Mismatches(text => tokenizer.Encode(text, addSpecial: false), vectors));
        foreach (var (text, _) in vectors) Assert.Equal(text, tokenizer.Decode(tokenizer.Encode(text), skipSpecial: true));
    }
}
