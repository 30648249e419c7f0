using BenchmarkDotNet.Attributes;
using Velo.Text;

namespace Velo.Benchmarks;

/// <summary>Encoding 64 KB of English with the Llama 3 and Qwen3 tokenizers from ../shared.</summary>
public class TokenizerBenchmarks
{
    private ITokenizer _tokenizer = null!;
    private string _text = "";

    [Params("llama3", "qwen3")]
    public string Vocabulary { get; set; } = "";

    [GlobalSetup]
    public void Setup()
    {
        string folder = Path.Combine(FindShared(), "tokenizers", "hf", Vocabulary);
        _tokenizer = Tokenizer.Load(folder);
        _text = TokenizerBenchmark.EnglishText(64 * 1024, seed: 1);
    }

    [Benchmark]
    public int Encode() => _tokenizer.Encode(_text, addSpecial: false).Length;

    private static string FindShared()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir != null; dir = dir.Parent)
            if (Directory.Exists(Path.Combine(dir.FullName, "shared", "tokenizers"))) return Path.Combine(dir.FullName, "shared");
        throw new DirectoryNotFoundException("../shared not found above " + AppContext.BaseDirectory);
    }
}
