using Velo.Formats;
using Velo.Inference;
using Velo.Models;
using Velo.Tensors;

namespace Velo.Tests.Models;

public sealed class SynthesizerTests : IDisposable
{
    private readonly string _folder = Directory.CreateTempSubdirectory("velo-synth-").FullName;

    public void Dispose() => Directory.Delete(_folder, recursive: true);

    private static SynthSpec Small(ModelFileType type) => new()
    {
        Dim = 256, Layers = 8, Heads = 4, KvHeads = 2, FfnDim = 512, VocabSize = 320, FileType = type,
    };

    [Theory]
    [InlineData(ModelFileType.F32)]
    [InlineData(ModelFileType.F16)]
    [InlineData(ModelFileType.BF16)]
    [InlineData(ModelFileType.Q8_0)]
    [InlineData(ModelFileType.Q4_0)]
    [InlineData(ModelFileType.Q4_1)]
    [InlineData(ModelFileType.Q5_0)]
    [InlineData(ModelFileType.Q5_1)]
    [InlineData(ModelFileType.Q4_K_M)]
    [InlineData(ModelFileType.Q5_K_M)]
    [InlineData(ModelFileType.Q6_K)]
    public void EveryFileTypeFollowsTheRecipeAndRuns(ModelFileType type)
    {
        var spec = Small(type);
        string path = Path.Combine(_folder, $"{type}.gguf");
        ModelSynthesizer.Write(path, spec, threads: 2);
        using (var file = GgufFile.Open(path))
        {
            Assert.Equal((uint)type, file.Metadata.RequireUInt32("general.file_type"));
            var recipe = new QuantizationRecipe(type, spec.Layers, hasOutputTensor: false);
            foreach (var t in file.Tensors) Assert.Equal(recipe.TargetType(t.Name, t.Shape) ?? GgmlType.F32, t.Type);
            Assert.Equal(ModelSynthesizer.TensorBytes(spec), file.Tensors.Sum(t => t.ByteSize));
        }
        ModelChecks.AssertFiniteLogits(path);
    }

    [Fact]
    public void Q4FilesKeepTheTiedEmbeddingInQ6K()
    {
        Assert.Equal(GgmlType.Q6_K, Small(ModelFileType.Q4_0).TypeOf("token_embd.weight", [256, 320]));
        Assert.Equal(GgmlType.Q6_K, Small(ModelFileType.Q4_K_M).TypeOf("token_embd.weight", [256, 320]));
        Assert.Equal(GgmlType.Q8_0, Small(ModelFileType.Q8_0).TypeOf("token_embd.weight", [256, 320]));
    }

    [Fact]
    public void WeightsAreNormalWithStd002AndNormsOne()
    {
        var spec = SynthSpec.Llama1B(ModelFileType.F32);
        var row = new float[2048];
        double sum = 0, squares = 0;
        for (int r = 0; r < 64; r++)
        {
            ModelSynthesizer.FillRow(spec, "blk.3.ffn_up.weight", r, row);
            foreach (float v in row) (sum, squares) = (sum + v, squares + (double)v * v);
        }
        int n = 64 * row.Length;
        Assert.InRange(sum / n, -5e-4, 5e-4);
        Assert.InRange(Math.Sqrt(squares / n), 0.0199, 0.0201);
        ModelSynthesizer.FillRow(spec, "blk.3.ffn_norm.weight", 0, row);
        Assert.All(row, v => Assert.Equal(1f, v));
    }

    [Fact]
    public void TheSameSeedWritesTheSameFileAndAnotherSeedAnother()
    {
        var spec = Small(ModelFileType.Q4_K_M);
        string a = Path.Combine(_folder, "a.gguf"), b = Path.Combine(_folder, "b.gguf"), c = Path.Combine(_folder, "c.gguf");
        ModelSynthesizer.Write(a, spec, threads: 2);
        ModelSynthesizer.Write(b, spec, threads: 1);
        ModelSynthesizer.Write(c, spec with { Seed = 2 }, threads: 2);
        Assert.Equal(File.ReadAllBytes(a), File.ReadAllBytes(b));
        Assert.NotEqual(File.ReadAllBytes(a), File.ReadAllBytes(c));
    }

    [Fact]
    public void AVocabularyFileSmallerThanTheModelIsPaddedWithUnusedTokens()
    {
        using var vocab = GgufFile.Open(TestPaths.SharedFile("tokenizers", "vocab", "ggml-vocab-llama-spm.gguf"));
        var spec = new SynthSpec { Dim = 64, Layers = 1, Heads = 2, FfnDim = 128, VocabSize = 32005 };
        string path = Path.Combine(_folder, "spm.gguf");
        ModelSynthesizer.Write(path, spec, SynthTokenizer.FromGguf(vocab.Metadata));
        using (var file = GgufFile.Open(path))
        {
            var tokens = file.Metadata.GetStringArray("tokenizer.ggml.tokens")!;
            Assert.Equal(32005, tokens.Length);
            Assert.Equal(vocab.Metadata.GetStringArray("tokenizer.ggml.tokens"), tokens[..32000]);
            Assert.Equal(32005, file.Metadata.GetInt32Array("tokenizer.ggml.token_type")!.Length);
            Assert.Equal(32005, file.Metadata.GetFloat32Array("tokenizer.ggml.scores")!.Length);
        }
        using var model = LanguageModel.Load(path);
        Assert.Equal([1, 9038, 2501, 263, 931], model.Tokenizer.Encode("Once upon a time"));
    }

    [Fact]
    public void ATokenizerJsonBecomesGgufMetadataThatEncodesTheSame()
    {
        var data = Velo.Text.HuggingFaceTokenizerReader.Read(TestPaths.SharedFile("tokenizers", "hf", "llama3", "tokenizer.json"));
        var spec = new SynthSpec { Dim = 64, Layers = 1, Heads = 2, FfnDim = 128, VocabSize = data.Tokens.Length };
        string path = Path.Combine(_folder, "llama3.gguf");
        ModelSynthesizer.Write(path, spec, SynthTokenizer.FromData(data));
        using var model = LanguageModel.Load(path);
        var direct = Velo.Text.Tokenizer.FromData(data);
        const string text = "Hello world! 3.14159 — naïve café, 日本語.";
        Assert.Equal(direct.Encode(text), model.Tokenizer.Encode(text));
        Assert.Equal(128000, model.Tokenizer.BosId);
    }

    [Theory]
    [InlineData("tiny-110M", 768, 12, 32000)]
    [InlineData("llama-1b", 2048, 16, 128256)]
    public void NamedShapes(string shape, int dim, int layers, int vocab)
    {
        var spec = SynthSpec.ForShape(shape, ModelFileType.Q4_K_M);
        Assert.Equal((dim, layers, vocab, ModelFileType.Q4_K_M), (spec.Dim, spec.Layers, spec.VocabSize, spec.FileType));
        Assert.True(spec.TiedEmbeddings);
        Assert.Throws<ArgumentException>(() => SynthSpec.ForShape("llama-7B", ModelFileType.F16));
    }
}
