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

    [Fact]
    public void LongWordsRoundTrip()
    {
        // Long words exercise the merge queue's stale-pair handling far more than the vectors do.
        var tokenizer = Tokenizer.FromHuggingFace(HfFolder("qwen3"));
        var random = new Random(7);
        string[] pieces = ["a", "b", "ab", "the", "世界", "🚀", "é", "ing", "tion", "ä", "ー"];
        for (int i = 0; i < 200; i++)
        {
            var word = new System.Text.StringBuilder();
            int length = random.Next(100, 2000);
            while (word.Length < length) word.Append(pieces[random.Next(pieces.Length)]);
            string text = word.ToString();
            Assert.Equal(text, tokenizer.Decode(tokenizer.Encode(text)));
        }
    }

    [Fact]
    public void LoadAcceptsGgufFilesTokenizerJsonFilesAndFolders()
    {
        Assert.IsType<ByteLevelBpeTokenizer>(Tokenizer.Load(VocabTestVectors.VocabFile("gpt-2")));
        Assert.IsType<WordPieceTokenizer>(Tokenizer.Load(TestPaths.SharedFile("tokenizers", "hf", "minilm-l6-v2", "tokenizer.json")));
        Assert.IsType<WordPieceTokenizer>(Tokenizer.Load(TestPaths.SharedFile("tokenizers", "hf", "minilm-l6-v2")));
        Assert.Throws<FileNotFoundException>(() => Tokenizer.Load(TestPaths.SharedFile("tokenizers", "no-such-tokenizer")));
    }

    [Fact]
    public void ConcurrentEncodingGivesTheSameIds()
    {
        // Separate instances, so that the concurrent one starts with an empty word cache and fills it concurrently.
        var concurrent = Tokenizer.FromGguf(VocabTestVectors.VocabFile("gpt-2"));
        var reference = Tokenizer.FromGguf(VocabTestVectors.VocabFile("gpt-2"));
        var vectors = VocabTestVectors.Load("gpt-2");
        var texts = Enumerable.Range(0, 400).Select(i => vectors[i % vectors.Count].Text + " " + i).ToArray();
        var parallel = new int[texts.Length][];
        Parallel.For(0, texts.Length, new ParallelOptions { MaxDegreeOfParallelism = 4 }, i => parallel[i] = concurrent.Encode(texts[i]));
        int[][] sequential = texts.Select(t => reference.Encode(t)).ToArray();
        Assert.Equal(sequential, parallel);
    }
}
