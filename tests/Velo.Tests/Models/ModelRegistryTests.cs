using Velo.Formats;
using Velo.Inference;
using Velo.Models;
using Velo.Models.Llama;
using Velo.Runtime;
using Velo.Tests.Formats;

namespace Velo.Tests.Models;

public sealed class ModelRegistryTests : IDisposable
{
    private readonly string _folder = Directory.CreateTempSubdirectory("velo-registry-").FullName;

    public void Dispose() => Directory.Delete(_folder, recursive: true);

    [Fact]
    public void AnUnknownArchitectureIsNamedWithTheSupportedOnes()
    {
        using var file = HostileGguf.Rewrite(TestPaths.Stories260K, w => w.Set("general.architecture", "mamba"));

        var load = Assert.Throws<NotSupportedException>(() => ModelRegistry.Load(file.Path).Dispose());
        var languageModel = Assert.Throws<NotSupportedException>(() => LanguageModel.Load(file.Path).Dispose());
        using var gguf = GgufFile.Open(file.Path);
        var info = Assert.Throws<NotSupportedException>(() => ModelRegistry.ReadInfo(gguf));

        foreach (var error in new[] { load, languageModel, info })
        {
            Assert.Contains("'mamba'", error.Message);
            foreach (string supported in new[] { "llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3" })
                Assert.Contains(supported, error.Message);
        }
    }

    [Theory]
    [InlineData("llama")]
    [InlineData("mistral")]
    [InlineData("qwen2")]
    [InlineData("qwen3")]
    public void LlamaFamilyArchitecturesLoadAsLlamaModels(string architecture)
    {
        string path = Path.Combine(_folder, $"{architecture}.gguf");
        ModelSynthesizer.Write(path, new SynthSpec
        {
            Architecture = architecture, Dim = 64, Layers = 3, Heads = 4, KvHeads = 2, FfnDim = 96, VocabSize = 300, ContextLength = 128,
        });

        using var model = ModelRegistry.Load(path);

        Assert.IsType<LlamaModel>(model);
        Assert.True(ModelRegistry.IsSupported(architecture));
        var info = model.Info;
        Assert.Equal(architecture, info.Architecture);
        Assert.Equal((300, 128, 64, ModelOutput.Logits, 300), (info.VocabSize, info.ContextLength, info.EmbeddingLength, info.Output, info.OutputWidth));
        Assert.Equal(Enumerable.Repeat(new KvLayerShape(KvHeads: 2, HeadDim: 16), 3), info.Layers);
        using var gguf = GgufFile.Open(path);
        Assert.Equal(info.Layers, ModelRegistry.ReadInfo(gguf).Layers);
    }

    [Fact]
    public void AStateOfTheWrongFamilyIsRefused()
    {
        using var model = ModelRegistry.Load(TestPaths.Stories260K);
        var batch = new ForwardBatch(1);
        batch.Add(1, 0, wantLogits: true);

        var error = Assert.Throws<ArgumentException>(() => model.Forward(new ForeignState(), batch));

        Assert.Contains("Llama", error.Message);
    }

    private sealed class ForeignState : IModelState
    {
        public int MaxBatch => 1;
        public int MaxLogitRows => 1;
        public KvCache Cache => throw new NotSupportedException();
        public long ScratchBytes => 0;
        public ReadOnlySpan<float> Output(int row) => [];
        public void Dispose() { }
    }
}
