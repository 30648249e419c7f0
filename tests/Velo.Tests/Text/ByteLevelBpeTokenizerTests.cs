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
    public void ScanningAndQueueMergesAgree()
    {
        // Short words merge by scanning, long ones through a priority queue; both must pick the same pairs.
        var tokenizer = (ByteLevelBpeTokenizer)Tokenizer.FromHuggingFace(HfFolder("qwen3"));
        var random = new Random(7);
        string[] pieces = ["a", "b", "ab", "the", " ", "  ", "世界", "🚀", "é", "0", "\n", "ing", "tion", "ä"];
        for (int i = 0; i < 2000; i++)
        {
            var word = new System.Text.StringBuilder();
            int length = i < 100 ? random.Next(130, 400) : random.Next(1, 40);
            while (word.Length < length) word.Append(pieces[random.Next(pieces.Length)]);
            byte[] bytes = System.Text.Encoding.UTF8.GetBytes(word.ToString());
            var scanned = new List<int>();
            var queued = new List<int>();
            tokenizer.Merge(bytes, scanned, useQueue: false);
            tokenizer.Merge(bytes, queued, useQueue: true);
            Assert.Equal(queued, scanned);
            Assert.Equal(bytes, scanned.SelectMany(id => tokenizer.TokenBytes(id).ToArray()));
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
}
