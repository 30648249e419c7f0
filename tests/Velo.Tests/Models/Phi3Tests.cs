using Velo.Formats;
using Velo.Models;
using Velo.Models.Phi3;
using Velo.Runtime;
using Velo.Tensors;
using static Velo.Tests.Models.ReferenceForwardTests;

namespace Velo.Tests.Models;

/// <summary>
/// Random-weight Phi-3 models (fused QKV and gate-up matrices, LongRoPE) written as GGUF, loaded back and run through
/// Velo; logits over a 32-token sequence are compared with <see cref="ReferencePhi3"/> within the bounds of
/// <see cref="ReferenceForwardTests"/>: the path has the same 15 matrix products (Q, K, V, output, gate, up and down
/// per layer and the classifier).
/// </summary>
public sealed class Phi3Tests : IDisposable
{
    private const int SequenceLength = 32;
    private readonly string _folder = Directory.CreateTempSubdirectory("velo-phi3-").FullName;

    public void Dispose() => Directory.Delete(_folder, recursive: true);

    public static SynthSpec Variant(string name) => name switch
    {
        // Phi-3-mini-128k / Phi-4-mini style: LongRoPE from 256 to 4096 tokens (attention factor √1.5), grouped-query
        // attention, rope over three quarters of each head, untied output.
        "phi3-longrope" => new SynthSpec
        {
            Architecture = "phi3", Dim = 256, Layers = 2, Heads = 4, KvHeads = 2, RopeDims = 48, FfnDim = 512, VocabSize = 300,
            ContextLength = 4096, OriginalContextLength = 256, TiedEmbeddings = false, WeightStd = 0.05f, NormJitter = 0.1f, Seed = 4,
        },
        // Phi-3-mini-4k style: no rope scaling, every head its own keys, tied embeddings.
        "phi3-plain" => new SynthSpec
        {
            Architecture = "phi3", Dim = 256, Layers = 2, Heads = 4, FfnDim = 512, VocabSize = 300, ContextLength = 256,
            TiedEmbeddings = true, WeightStd = 0.05f, NormJitter = 0.1f, Seed = 5,
        },
        _ => throw new ArgumentException(name),
    };

    /// <summary>Variant, weight type and the context the state is created with (512: beyond the original 256, so the long factors).</summary>
    public static TheoryData<string, GgmlType, int> Cases()
    {
        var data = new TheoryData<string, GgmlType, int>();
        foreach (var t in new[] { GgmlType.F32, GgmlType.Q8_0, GgmlType.Q4_K })
        {
            data.Add("phi3-longrope", t, 64);
            data.Add("phi3-longrope", t, 512);
            data.Add("phi3-plain", t, 64);
        }
        return data;
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void LogitsMatchTheDoublePrecisionReference(string variant, GgmlType type, int contextLength)
    {
        var spec = Variant(variant) with { WeightType = type };
        string path = Write(spec, $"{variant}-{type}.gguf");
        int[] tokens = Tokens(spec, SequenceLength);
        double[][] velo = Logits(path, tokens, contextLength);

        var original = new ReferencePhi3(spec, name => OriginalWeights(spec, name), contextLength).Logits(tokens);
        double errorOriginal = type == GgmlType.F32 ? RelativeError(velo, original) : RelativeRmsError(velo, original);
        Assert.True(errorOriginal <= ToleranceAgainstOriginal(type),
            $"{variant} {type} ctx {contextLength}: relative logit error {errorOriginal:E3} against the original weights exceeds {ToleranceAgainstOriginal(type):E1}");

        if (type != GgmlType.F32)
        {
            // Against the weights as stored only the kernels' own rounding of activations to 8 bits remains (see
            // ReferenceForwardTests).
            using var file = GgufFile.Open(path);
            var stored = new ReferencePhi3(spec, name => StoredWeights(file, name), contextLength).Logits(tokens);
            double errorStored = RelativeRmsError(velo, stored);
            Assert.True(errorStored <= 5e-2, $"{variant} {type} ctx {contextLength}: relative RMS logit error {errorStored:E3} against the stored weights exceeds 5E-2");
        }
    }

    /// <summary>
    /// The short and long factors must both matter: a reference that used the wrong set would be far off. Each
    /// context's logits match its own reference (above) and differ from the other's well beyond the F32 bound.
    /// </summary>
    [Fact]
    public void TheContextLengthChoosesTheShortOrLongRopeFactors()
    {
        var spec = Variant("phi3-longrope");
        string path = Write(spec, "choice.gguf");
        int[] tokens = Tokens(spec, SequenceLength);
        var shortLogits = Logits(path, tokens, contextLength: 256);
        var longLogits = Logits(path, tokens, contextLength: 257);
        var longReference = new ReferencePhi3(spec, name => OriginalWeights(spec, name), contextLength: 257).Logits(tokens);

        Assert.True(RelativeError(longLogits, longReference) <= ToleranceAgainstOriginal(GgmlType.F32));
        Assert.True(RelativeError(shortLogits, longReference) > 100 * ToleranceAgainstOriginal(GgmlType.F32));
    }

    [Fact]
    public void DecodingOneTokenAtATimeMatchesPrefill()
    {
        var spec = Variant("phi3-longrope");
        string path = Write(spec, "decode.gguf");
        int[] tokens = Tokens(spec, 12);
        var prefill = Logits(path, tokens, contextLength: 512);
        using var model = ModelRegistry.Load(path);
        using var state = model.CreateState(contextLength: 512, maxBatch: 1);
        var batch = new ForwardBatch(1);
        for (int i = 0; i < tokens.Length; i++)
        {
            batch.Clear();
            batch.Add(tokens[i], i, wantLogits: true);
            model.Forward(state, batch);
            var decoded = state.Output(0).ToArray().Select(f => (double)f).ToArray();
            Assert.True(RelativeError([decoded], [prefill[i]]) < 1e-5, $"position {i}");
        }
    }

    /// <summary>Decoding with the fused matrices' row views and the long factors allocates nothing, as the Llama family's does.</summary>
    [Fact]
    public void DecodingAllocatesNothing()
    {
        string path = Write(Variant("phi3-longrope") with { WeightType = GgmlType.Q8_0 }, "alloc.gguf");
        using var model = ModelRegistry.Load(path);
        using var pool = new Velo.Threading.WorkerPool(2);
        using var state = model.CreateState(contextLength: 512, maxBatch: 1, pool: pool);
        var batch = new ForwardBatch(1);

        void Step(int position)
        {
            batch.Clear();
            batch.Add((position * 7 + 3) % 300, position, wantLogits: true);
            model.Forward(state, batch);
        }

        for (int pos = 0; pos < 4; pos++) Step(pos); // warm-up: JIT
        int position = 4;
        AllocationCheck.SomeWindowAllocatesNothing(() => Step(position++), stepsPerWindow: 15);
    }

    [Fact]
    public void Phi3LoadsThroughTheRegistryWithItsHyperparameters()
    {
        var spec = Variant("phi3-longrope");
        string path = Write(spec, "registry.gguf");

        using var model = ModelRegistry.Load(path);

        Assert.IsType<Phi3Model>(model);
        Assert.Contains("phi3", ModelRegistry.SupportedArchitectures);
        var info = model.Info;
        Assert.Equal(("phi3", 300, 4096, 256), (info.Architecture, info.VocabSize, info.ContextLength, info.EmbeddingLength));
        Assert.Equal(Enumerable.Repeat(new KvLayerShape(KvHeads: 2, HeadDim: 64), 2), info.Layers);
        var properties = info.Properties.ToDictionary();
        Assert.Equal("4096 (original 256)", properties["context length"]);
        Assert.Contains("48 dims, NeoX halves, LongRoPE factors (long beyond 256 tokens), attention factor 1.2247", properties["rope"]);
        using var gguf = GgufFile.Open(path);
        Assert.Equal(info.Layers, ModelRegistry.ReadInfo(gguf).Layers);
    }

    /// <summary>
    /// llama.cpp runs every Phi-3 with full attention whatever window the file declares (the converter writes 2047
    /// for Phi-3-mini-4k), so Velo does too: the logits are those of the file without the key.
    /// </summary>
    [Fact]
    public void ADeclaredSlidingWindowIsNotApplied()
    {
        var spec = Variant("phi3-plain");
        string path = Write(spec, "window.gguf");
        int[] tokens = Tokens(spec, SequenceLength);
        using var windowed = Formats.HostileGguf.Rewrite(path, w => w.Set("phi3.attention.sliding_window", 8u));

        Assert.Equal(Logits(path, tokens, 64), Logits(windowed.Path, tokens, 64));
        using var model = ModelRegistry.Load(windowed.Path);
        Assert.Contains("sliding window 8 declared but not applied", model.Info.Properties.ToDictionary()["attention"]);
    }

    [Theory]
    [InlineData("blk.1.attn_qkv.weight")]
    [InlineData("blk.0.ffn_up.weight")]
    [InlineData("output_norm.weight")]
    public void AMissingTensorIsNamed(string tensor)
    {
        string path = Rewrite(Write(Variant("phi3-longrope"), "full.gguf"), dropTensor: tensor);
        var error = Assert.Throws<GgufFormatException>(() => ModelRegistry.Load(path).Dispose());
        Assert.Contains($"tensor '{tensor}' is missing", error.Message);
    }

    [Theory]
    [InlineData("phi3.attention.layer_norm_rms_epsilon")]
    [InlineData("phi3.context_length")]
    [InlineData("phi3.feed_forward_length")]
    public void AMissingKeyIsNamed(string key)
    {
        string path = Rewrite(Write(Variant("phi3-longrope"), "full.gguf"), dropKey: key);
        var error = Assert.Throws<GgufFormatException>(() => ModelRegistry.Load(path).Dispose());
        Assert.Contains($"'{key}' is missing", error.Message);
    }

    [Fact]
    public void AFusedMatrixOfTheWrongHeightIsRefused()
    {
        // The file declares one KV head, but its fused matrix holds the keys and values of four.
        string path = Write(Variant("phi3-plain"), "shape.gguf");
        using var lying = Formats.HostileGguf.Rewrite(path, w => w.Set("phi3.attention.head_count_kv", 1u));
        var error = Assert.Throws<GgufFormatException>(() => ModelRegistry.Load(lying.Path).Dispose());
        Assert.Contains("tensor 'blk.0.attn_qkv.weight' has shape [256, 768], expected [256, 384]", error.Message);
    }

    [Fact]
    public void ThePhi3TinyShapeHasTheConvertersTensorsAndKeys()
    {
        var spec = SynthSpec.ForShape("phi3-tiny", ModelFileType.Q4_0);
        var tensors = ModelSynthesizer.Tensors(spec).ToDictionary(t => t.Name, t => t.Shape);

        Assert.Equal([768L, 768 * 3], tensors["blk.7.attn_qkv.weight"]);
        Assert.Equal([768L, 2 * 2048], tensors["blk.7.ffn_up.weight"]);
        Assert.Equal([32L], tensors["rope_factors_long.weight"]);
        Assert.Equal([32L], tensors["rope_factors_short.weight"]);
        Assert.Equal([768L, 32064], tensors["output.weight"]);
        Assert.DoesNotContain("blk.0.ffn_gate.weight", tensors.Keys);
        Assert.Equal(GgmlType.Q5_K, SynthSpec.ForShape("phi3-tiny", ModelFileType.Q4_K_M).TypeOf("blk.0.attn_qkv.weight", tensors["blk.0.attn_qkv.weight"]));
    }

    private string Write(SynthSpec spec, string name)
    {
        string path = Path.Combine(_folder, name);
        ModelSynthesizer.Write(path, spec);
        return path;
    }

    /// <summary>A copy of the file without one tensor or one metadata key.</summary>
    private string Rewrite(string source, string? dropTensor = null, string? dropKey = null)
    {
        var writer = new GgufWriter();
        using (var file = GgufFile.Open(source))
        {
            foreach (var (key, value) in file.Metadata)
                if (key != dropKey && key != "general.alignment") writer.Set(key, value);
            foreach (var t in file.Tensors)
                if (t.Name != dropTensor) writer.AddTensor(t.Name, t.Type, t.Shape.ToArray(), file.TensorBytes(t).ToArray());
        }
        string path = Path.Combine(_folder, $"without-{dropTensor ?? dropKey}.gguf");
        writer.Write(path);
        return path;
    }

    private static int[] Tokens(SynthSpec spec, int count) => Enumerable.Range(0, count).Select(i => (i * 37 + 11) % spec.VocabSize).ToArray();

    private static double[][] Logits(string path, int[] tokens, int contextLength)
    {
        using var model = ModelRegistry.Load(path);
        using var state = model.CreateState(contextLength, maxBatch: tokens.Length, maxLogitRows: tokens.Length);
        var batch = new ForwardBatch(tokens.Length);
        for (int i = 0; i < tokens.Length; i++) batch.Add(tokens[i], i, wantLogits: true);
        model.Forward(state, batch);
        return Enumerable.Range(0, tokens.Length).Select(i => state.Output(i).ToArray().Select(f => (double)f).ToArray()).ToArray();
    }
}
