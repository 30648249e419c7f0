using Velo.Text;

namespace Velo.Tests.Text;

public class WordPieceTokenizerTests
{
    [Fact]
    public void BertBgeMatchesLlamaCppVectors()
    {
        var tokenizer = Tokenizer.FromGguf(VocabTestVectors.VocabFile("bert-bge"));
        var vectors = VocabTestVectors.Load("bert-bge");
        Assert.Equal("", VocabTestVectors.Mismatches(text => tokenizer.Encode(text, addSpecial: false), vectors));
    }

    [Fact]
    public void DecodeGivesTheNormalizedText()
    {
        var tokenizer = (WordPieceTokenizer)Tokenizer.FromGguf(VocabTestVectors.VocabFile("bert-bge"));
        Assert.Equal("hello , world ! apfel", tokenizer.Normalize(" Hello,\tWORLD!  Äpfel"));
        foreach (var (text, _) in VocabTestVectors.Load("bert-bge"))
        {
            int[] ids = tokenizer.Encode(text);
            if (ids.Contains(tokenizer.UnknownId)) continue;
            Assert.Equal(tokenizer.Normalize(text), tokenizer.Decode(ids, skipSpecial: true));
        }
    }

    [Fact]
    public void AddsClsAndSep()
    {
        var tokenizer = Tokenizer.FromGguf(VocabTestVectors.VocabFile("bert-bge"));
        Assert.Equal([101, 7592, 2088, 102], tokenizer.Encode("Hello world"));
        Assert.Equal(101, tokenizer.ClsId);
        Assert.Equal(102, tokenizer.SepId);
        Assert.Equal("[CLS] hello world[SEP]", tokenizer.Decode([101, 7592, 2088, 102]));
    }

    [Fact]
    public void HuggingFaceFilesGiveTheSameIdsAsGguf()
    {
        // MiniLM and BGE share the uncased BERT vocabulary.
        var fromJson = Tokenizer.FromHuggingFace(TestPaths.SharedFile("tokenizers", "hf", "minilm-l6-v2"));
        var fromGguf = Tokenizer.FromGguf(VocabTestVectors.VocabFile("bert-bge"));
        foreach (var (text, expected) in VocabTestVectors.Load("bert-bge"))
        {
            Assert.Equal(expected, fromJson.Encode(text, addSpecial: false));
            Assert.Equal(fromGguf.Encode(text), fromJson.Encode(text));
        }
    }

    [Fact]
    public void OverlongWordsAreUnknownWhenTheConfigSaysSo()
    {
        var tokenizer = Tokenizer.FromHuggingFace(TestPaths.SharedFile("tokenizers", "hf", "minilm-l6-v2"));
        Assert.Equal([tokenizer.UnknownId], tokenizer.Encode(new string('a', 101), addSpecial: false));
        Assert.NotEqual([tokenizer.UnknownId], tokenizer.Encode(new string('a', 100), addSpecial: false));
    }
}
