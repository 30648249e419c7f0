using System.Text.Json.Nodes;
using Velo.Formats;
using Velo.Inference;
using Velo.Models;
using Velo.Models.HuggingFace;
using Velo.Runtime;
using Velo.Tensors;

namespace Velo.Tests.Formats;

/// <summary>
/// Hugging Face folders written by the tests from a <see cref="SynthSpec"/>'s weights convert to exactly the GGUF file
/// <see cref="ModelSynthesizer"/> writes from the same weights: every tensor's bytes equal, so the logits are equal.
/// The synthesized files' layout is checked against independent reference forward passes elsewhere
/// (ReferenceForwardTests), which makes this a check of the name, permutation and norm mapping as well.
/// </summary>
public sealed class HuggingFaceConversionTests : IDisposable
{
    private readonly string _root = Directory.CreateTempSubdirectory("velo-hf-").FullName;

    public void Dispose() => Directory.Delete(_root, recursive: true);

    private static SynthSpec Spec(string architecture) => architecture switch
    {
        "gemma2" => Base with { Architecture = "gemma2", TiedEmbeddings = true, HeadDim = 32, SlidingWindow = 4, AttentionSoftCap = 50, FinalSoftCap = 30, NormEpsilon = 1e-6f },
        "gemma3" => Base with { Architecture = "gemma3", TiedEmbeddings = true, HeadDim = 32, KvHeads = 1, SlidingWindow = 4, QkNorm = true, RopeBase = 1_000_000, NormEpsilon = 1e-6f },
        "gemma" => Base with { Architecture = "gemma", TiedEmbeddings = true, NormEpsilon = 1e-6f },
        "qwen2" => Base with { Architecture = "qwen2", QkvBias = true, TiedEmbeddings = true },
        "qwen3" => Base with { Architecture = "qwen3", HeadDim = 32, QkNorm = true },
        "phi3" => Base with { Architecture = "phi3", KvHeads = 4, ContextLength = 4096, OriginalContextLength = 512 },
        _ => Base with { Architecture = architecture },
    };

    private static readonly SynthSpec Base = new()
    {
        Dim = 64, Layers = 2, Heads = 4, KvHeads = 2, FfnDim = 96, VocabSize = 288, ContextLength = 256,
        TiedEmbeddings = false, NormJitter = 0.1f, WeightStd = 0.05f, Seed = 7,
    };

    private string Folder(string name) => Path.Combine(_root, name);

    [Theory]
    [InlineData("llama")]
    [InlineData("qwen2")]
    [InlineData("qwen3")]
    [InlineData("gemma")]
    [InlineData("gemma2")]
    [InlineData("gemma3")]
    [InlineData("phi3")]
    public void ConvertedFolderEqualsTheDirectlyBuiltGguf(string architecture)
    {
        var spec = Spec(architecture);
        string folder = Folder(architecture), converted = Path.Combine(_root, $"{architecture}.gguf"), direct = Path.Combine(_root, $"{architecture}-direct.gguf");
        HuggingFaceFolder.Write(folder, spec);
        HuggingFaceConverter.Convert(folder, converted, threads: 2);
        ModelSynthesizer.Write(direct, spec, threads: 2);

        AssertSameTensors(direct, converted);
        using (var file = GgufFile.Open(converted))
        {
            Assert.Equal(architecture, file.Architecture);
            Assert.Equal("{% for m in messages %}<s>{{ m['content'] }}</s>{% endfor %}", file.Metadata.GetString("tokenizer.chat_template"));
            Assert.Equal(spec.VocabSize, file.Metadata.GetStringArray("tokenizer.ggml.tokens")!.Length);
        }
        AssertSameLogits(direct, converted);
    }

    /// <summary>
    /// The converted file against reference forward passes fed the Hugging Face tensors as they are, read with Hugging
    /// Face's semantics: Llama's rope rotates each head's halves against each other (the reference's NeoX mode), and
    /// Gemma's norms scale by 1 + w. Nothing of the converter's permutation or +1 is involved on the reference side.
    /// </summary>
    [Theory]
    [InlineData("llama")]
    [InlineData("gemma2")]
    public void ConvertedFileMatchesAForwardPassOverTheHuggingFaceTensors(string architecture)
    {
        var spec = Spec(architecture);
        string folder = Folder(architecture), converted = Path.Combine(_root, $"{architecture}.gguf");
        HuggingFaceFolder.Write(folder, spec);
        HuggingFaceConverter.Convert(folder, converted, threads: 2);
        using var checkpoint = SafetensorsCheckpoint.Open(folder);
        bool gemma = architecture.StartsWith("gemma");
        double[][] HfWeights(string name)
        {
            var t = checkpoint.Require(HuggingFaceFolder.HfName(name, gemma, architecture is "gemma2" or "gemma3", architecture));
            long columns = SafetensorsCheckpoint.RowLength(t), rows = t.ElementCount / columns;
            var row = new float[columns];
            return Enumerable.Range(0, (int)rows).Select(r =>
            {
                checkpoint.ReadRow(t, r, row);
                return row.Select(v => gemma && name.EndsWith("norm.weight") ? 1 + (double)v : v).ToArray();
            }).ToArray();
        }
        int[] tokens = [1, 260, 17, 263, 5, 200, 42];
        double[][] reference = gemma
            ? new Velo.Tests.Models.ReferenceGemma(spec, HfWeights).Logits(tokens)
            : new Velo.Tests.Models.ReferenceLlama(spec with { Architecture = "qwen2" }, HfWeights).Logits(tokens);
        using var model = ModelRegistry.Load(converted);
        var logits = Logits(model, tokens);
        double error = 0, norm = 0;
        for (int i = 0; i < tokens.Length; i++)
            for (int v = 0; v < reference[i].Length; v++)
            {
                error += (logits[i][v] - reference[i][v]) * (logits[i][v] - reference[i][v]);
                norm += reference[i][v] * reference[i][v];
            }
        Assert.True(Math.Sqrt(error / norm) < 1e-4, $"relative RMS logit error {Math.Sqrt(error / norm):E3}");
    }

    [Fact]
    public void MistralConvertsAsLlamaAsLlamaCppWritesIt()
    {
        var spec = Spec("llama");
        string folder = Folder("mistral"), converted = Path.Combine(_root, "mistral.gguf"), direct = Path.Combine(_root, "mistral-direct.gguf");
        HuggingFaceFolder.Write(folder, spec, modelClass: "MistralForCausalLM");
        HuggingFaceConverter.Convert(folder, converted, threads: 2);
        ModelSynthesizer.Write(direct, spec, threads: 2);
        AssertSameTensors(direct, converted);
    }

    [Fact]
    public void ShardedBf16FolderRunsDirectlyAndMatchesTheConvertedFile()
    {
        var spec = Spec("llama") with { WeightType = GgmlType.BF16 };
        string folder = Folder("sharded"), converted = Path.Combine(_root, "sharded.gguf"), direct = Path.Combine(_root, "sharded-direct.gguf");
        HuggingFaceFolder.Write(folder, spec, matrixDType: "BF16", shards: 3);
        HuggingFaceConverter.Convert(folder, converted, threads: 2);
        ModelSynthesizer.Write(direct, spec, threads: 2);
        AssertSameTensors(direct, converted); // BF16 matrices kept BF16, F32 norms kept F32

        // run -m DIR: converted once into the cache, then reused while the folder is unchanged.
        string cache = Path.Combine(_root, "cache");
        string cached = HuggingFaceModelCache.Resolve(folder, cache);
        Assert.StartsWith(cache, cached);
        int conversions = 0;
        void Count(string converting, string _)
        {
            if (converting == Path.GetFullPath(folder)) conversions++;
        }
        HuggingFaceModelCache.ConversionStarted += Count;
        try
        {
            Assert.Equal(cached, HuggingFaceModelCache.Resolve(folder, cache));
        }
        finally
        {
            HuggingFaceModelCache.ConversionStarted -= Count;
        }
        Assert.Equal(0, conversions);
        AssertSameTensors(converted, cached);
        using var model = LanguageModel.Load(converted);
        Assert.Equal("sharded", model.Name);
        AssertSameLogits(converted, folder, cache);
    }

    [Fact]
    public void Q8_0TypeFollowsTheQuantizeRecipe()
    {
        var spec = Spec("qwen3");
        string folder = Folder("q8"), converted = Path.Combine(_root, "q8.gguf"), direct = Path.Combine(_root, "q8-direct.gguf");
        HuggingFaceFolder.Write(folder, spec, matrixDType: "F16");
        HuggingFaceConverter.Convert(folder, converted, ModelFileType.Q8_0, threads: 2);
        // The same weights rounded to F16 first, as the folder holds them, then quantized by the recipe.
        ModelSynthesizer.Write(direct, spec with { WeightType = GgmlType.F16 }, threads: 2);
        string quantized = Path.Combine(_root, "q8-quantized.gguf");
        using (var input = GgufFile.Open(direct)) ModelQuantizer.Quantize(input, quantized, ModelFileType.Q8_0, threads: 2);
        AssertSameTensors(quantized, converted);
        using var file = GgufFile.Open(converted);
        Assert.Equal(file.Tensors.Sum(t => t.ByteSize), HuggingFaceConverter.OutputBytes(folder, ModelFileType.Q8_0));
    }

    [Fact]
    public void RealTokenizerAndChatTemplateCarryOver()
    {
        string tokenizerFolder = TestPaths.SharedFile("tokenizers", "hf", "qwen3");
        var spec = Spec("qwen3") with { VocabSize = 151936, TiedEmbeddings = true, Dim = 16, Heads = 1, KvHeads = 1, HeadDim = 16, FfnDim = 16, Layers = 1 };
        string folder = Folder("qwen3-real");
        HuggingFaceFolder.Write(folder, spec);
        foreach (string file in (string[])["tokenizer.json", "tokenizer_config.json"])
            File.Copy(Path.Combine(tokenizerFolder, file), Path.Combine(folder, file), overwrite: true);
        File.WriteAllText(Path.Combine(folder, "generation_config.json"), """{"eos_token_id": [151645, 151643], "bos_token_id": 151643}""");
        string converted = Path.Combine(_root, "qwen3-real.gguf");
        HuggingFaceConverter.Convert(folder, converted, threads: 2);

        using var model = LanguageModel.Load(converted);
        var reference = Velo.Text.Tokenizer.FromHuggingFace(tokenizerFolder);
        const string text = "Hello world! <|im_start|> 12345 héllo";
        Assert.Equal(reference.Encode(text), model.Tokenizer.Encode(text));
        string template = HuggingFaceFolder.ReadJson(Path.Combine(tokenizerFolder, "tokenizer_config.json"))["chat_template"]!.GetValue<string>();
        Assert.Equal(template, model.ChatTemplate);
        Assert.Equal("qwen2", model.Metadata.GetString("tokenizer.ggml.pre"));
        Assert.Equal("[PAD151935]", model.Metadata.GetStringArray("tokenizer.ggml.tokens")![^1]);
        Assert.Equal(151645u, model.Metadata.RequireUInt32("tokenizer.ggml.eos_token_id"));
    }

    [Fact]
    public void Llama3RopeScalingBecomesFrequencyFactors()
    {
        var spec = Spec("llama") with { RopeBase = 500000, HeadDim = 64, Heads = 1, KvHeads = 1 };
        string folder = Folder("llama3");
        HuggingFaceFolder.Write(folder, spec);
        var config = HuggingFaceFolder.ReadJson(Path.Combine(folder, "config.json"));
        config["rope_scaling"] = new JsonObject
        {
            ["rope_type"] = "llama3", ["factor"] = 8.0, ["low_freq_factor"] = 1.0, ["high_freq_factor"] = 4.0, ["original_max_position_embeddings"] = 8192,
        };
        File.WriteAllText(Path.Combine(folder, "config.json"), config.ToJsonString());
        string converted = Path.Combine(_root, "llama3.gguf");
        HuggingFaceConverter.Convert(folder, converted, threads: 2);
        using var file = GgufFile.Open(converted);
        var factors = MemoryMarshalFloats(file, "rope_freqs.weight");
        Assert.Equal(32, factors.Length);
        // Wavelengths below 8192/4 keep their frequency, those above 8192 are divided by the factor, between them smoothly.
        for (int i = 0; i < factors.Length; i++)
        {
            double wavelength = 2 * Math.PI * Math.Pow(500000, 2.0 * i / 64);
            if (wavelength < 2048) Assert.Equal(1f, factors[i]);
            else if (wavelength > 8192) Assert.Equal(8f, factors[i]);
            else Assert.InRange(factors[i], 1f, 8f);
        }
        Assert.True(factors.Distinct().Count() > 2, "some factors lie between 1 and 8");
    }

    [Fact]
    public void UnknownArchitectureIsNamed()
    {
        string folder = Folder("unknown");
        HuggingFaceFolder.Write(folder, Spec("llama"), modelClass: "MambaForCausalLM");
        var e = Assert.Throws<NotSupportedException>(() => HuggingFaceConverter.Convert(folder, Path.Combine(_root, "x.gguf")));
        Assert.Contains("'MambaForCausalLM'", e.Message);
        Assert.Contains("LlamaForCausalLM", e.Message);
    }

    [Fact]
    public void UnsupportedDTypeIsNamed()
    {
        string folder = Folder("int8");
        HuggingFaceFolder.Write(folder, Spec("llama"));
        var entries = HuggingFaceFolder.Tensors(Spec("llama"), "F32")
            .Select(e => e.Name == "model.layers.0.self_attn.v_proj.weight" ? e with { DType = "I32" } : e);
        HuggingFaceFolder.WriteSafetensors(Path.Combine(folder, "model.safetensors"), entries);
        var e = Assert.ThrowsAny<FormatException>(() => HuggingFaceConverter.Convert(folder, Path.Combine(_root, "x.gguf")));
        Assert.Contains("'I32'", e.Message);
        Assert.Contains("v_proj", e.Message);
    }

    [Fact]
    public void UnmappedAndMissingTensorsAreRefused()
    {
        string folder = Folder("extra");
        HuggingFaceFolder.Write(folder, Spec("llama"));
        var entries = HuggingFaceFolder.Tensors(Spec("llama"), "F32").ToList();
        HuggingFaceFolder.WriteSafetensors(Path.Combine(folder, "model.safetensors"),
            [.. entries, new SafetensorsEntry("model.layers.0.self_attn.o_proj.bias", "F32", [64], new byte[256])]);
        var e = Assert.Throws<NotSupportedException>(() => HuggingFaceConverter.Convert(folder, Path.Combine(_root, "x.gguf")));
        Assert.Contains("o_proj.bias", e.Message);

        HuggingFaceFolder.WriteSafetensors(Path.Combine(folder, "model.safetensors"), entries.Where(t => !t.Name.Contains("layers.1.mlp.up_proj")));
        var missing = Assert.ThrowsAny<FormatException>(() => HuggingFaceConverter.Convert(folder, Path.Combine(_root, "x.gguf")));
        Assert.Contains("model.layers.1.mlp.up_proj.weight", missing.Message);
        Assert.False(File.Exists(Path.Combine(_root, "x.gguf")));
    }

    [Fact]
    public void AShardIndexCannotLeaveTheFolder()
    {
        string folder = Folder("escape");
        HuggingFaceFolder.Write(folder, Spec("llama"), shards: 2);
        string index = Path.Combine(folder, SafetensorsCheckpoint.IndexFileName);
        var json = HuggingFaceFolder.ReadJson(index);
        json["weight_map"]!["model.norm.weight"] = "../model.safetensors";
        File.WriteAllText(index, json.ToJsonString());
        var e = Assert.ThrowsAny<FormatException>(() => SafetensorsCheckpoint.Open(folder));
        Assert.Contains("not a file name in the folder", e.Message);
    }

    private static float[] MemoryMarshalFloats(GgufFile file, string name)
    {
        var tensor = file.RequireTensor(name);
        return System.Runtime.InteropServices.MemoryMarshal.Cast<byte, float>(file.TensorBytes(tensor)).ToArray();
    }

    private static void AssertSameTensors(string expectedPath, string actualPath)
    {
        using var expected = GgufFile.Open(expectedPath);
        using var actual = GgufFile.Open(actualPath);
        Assert.Equal(expected.Tensors.Select(t => t.Name).Order(), actual.Tensors.Select(t => t.Name).Order());
        foreach (var t in expected.Tensors)
        {
            var other = actual.RequireTensor(t.Name);
            Assert.Equal(t.Shape, other.Shape);
            Assert.True(t.Type == other.Type, $"{t.Name}: {t.Type} expected, {other.Type} converted");
            Assert.True(expected.TensorBytes(t).SequenceEqual(actual.TensorBytes(other)), $"{t.Name}: the bytes differ");
        }
    }

    /// <summary>Both models' logits for the same tokens, compared bit for bit.</summary>
    private static void AssertSameLogits(string expectedPath, string actualPath, string? cache = null)
    {
        using var expected = ModelRegistry.Load(expectedPath);
        using var actual = ModelRegistry.Load(cache != null ? HuggingFaceModelCache.Resolve(actualPath, cache) : actualPath);
        int[] tokens = [1, 260, 17, 263, 5, 200, 42];
        var a = Logits(expected, tokens);
        var b = Logits(actual, tokens);
        Assert.Equal(a.Length, b.Length);
        for (int i = 0; i < a.Length; i++) Assert.Equal(a[i], b[i]);
        Assert.True(a[^1].Max() > a[^1].Min());
    }

    private static float[][] Logits(IModel model, int[] tokens)
    {
        using var state = model.CreateState(contextLength: 16, maxBatch: tokens.Length, maxLogitRows: tokens.Length);
        var batch = new ForwardBatch(tokens.Length);
        for (int i = 0; i < tokens.Length; i++) batch.Add(tokens[i], i, wantLogits: true);
        model.Forward(state, batch);
        return Enumerable.Range(0, tokens.Length).Select(r => state.Output(r).ToArray()).ToArray();
    }
}
