using Velo.Formats;
using Velo.Models;
using Velo.Runtime;
using Velo.Tensors;
using static Velo.Tests.Models.ReferenceForwardTests;

namespace Velo.Tests.Models;

/// <summary>
/// Random-weight Gemma models (Gemma 1, 2 and 3) written as GGUF, loaded back and run through Velo; logits over a
/// 32-token sequence, longer than the sliding window, are compared with <see cref="ReferenceGemma"/> within
/// <see cref="ReferenceForwardTests"/>' bounds.
/// </summary>
public class GemmaReferenceTests
{
    private const int SequenceLength = 32;

    public static SynthSpec Variant(string name) => name switch
    {
        // Gemma 2: sliding window on layers 0 and 2, soft caps small enough that tanh bends the scores and logits.
        "gemma2" => new SynthSpec
        {
            Architecture = "gemma2", Dim = 256, Layers = 3, Heads = 4, KvHeads = 2, HeadDim = 128, FfnDim = 512, VocabSize = 300,
            NormEpsilon = 1e-6f, SlidingWindow = 8, AttentionSoftCap = 1, FinalSoftCap = 1.5f, WeightStd = 0.05f, NormJitter = 0.1f, Seed = 4,
        },
        // Gemma 3: five sliding layers (rope base 10000) and a global one (base 10^6), Q/K norms, one KV head, an output matrix.
        "gemma3" => new SynthSpec
        {
            Architecture = "gemma3", Dim = 256, Layers = 6, Heads = 4, KvHeads = 1, HeadDim = 128, FfnDim = 512, VocabSize = 300,
            NormEpsilon = 1e-6f, RopeBase = 1000000, SlidingWindow = 8, TiedEmbeddings = false, WeightStd = 0.05f, NormJitter = 0.1f, Seed = 5,
        },
        // Gemma 1: no post-norms, no window, no caps.
        "gemma" => new SynthSpec
        {
            Architecture = "gemma", Dim = 256, Layers = 2, Heads = 4, HeadDim = 128, FfnDim = 512, VocabSize = 300,
            NormEpsilon = 1e-6f, WeightStd = 0.05f, NormJitter = 0.1f, Seed = 6,
        },
        _ => throw new ArgumentException(name),
    };

    public static TheoryData<string, GgmlType> Cases() => new()
    {
        { "gemma2", GgmlType.F32 }, { "gemma2", GgmlType.Q8_0 }, { "gemma2", GgmlType.Q4_K },
        { "gemma3", GgmlType.F32 }, { "gemma3", GgmlType.Q8_0 },
        { "gemma", GgmlType.F32 }, { "gemma", GgmlType.Q8_0 },
    };

    [Theory]
    [MemberData(nameof(Cases))]
    public void LogitsMatchTheDoublePrecisionReference(string variant, GgmlType type)
    {
        var spec = Variant(variant) with { WeightType = type };
        string path = Path.Combine(Path.GetTempPath(), $"velo-ref-{variant}-{type}-{Environment.ProcessId}.gguf");
        try
        {
            ModelSynthesizer.Write(path, spec);
            int[] tokens = Enumerable.Range(0, SequenceLength).Select(i => (i * 37 + 11) % spec.VocabSize).ToArray();
            double[][] velo = VeloLogits(path, tokens);

            var original = new ReferenceGemma(spec, name => OriginalWeights(spec, name)).Logits(tokens);
            double errorOriginal = type == GgmlType.F32 ? RelativeError(velo, original) : RelativeRmsError(velo, original);
            Assert.True(errorOriginal <= ToleranceAgainstOriginal(type),
                $"{variant} {type}: relative logit error {errorOriginal:E3} against the original weights exceeds {ToleranceAgainstOriginal(type):E1}");

            if (type != GgmlType.F32)
            {
                using var file = GgufFile.Open(path);
                var stored = new ReferenceGemma(spec, name => StoredWeights(file, name)).Logits(tokens);
                double errorStored = RelativeRmsError(velo, stored);
                Assert.True(errorStored <= 5e-2, $"{variant} {type}: relative RMS logit error {errorStored:E3} against the stored weights exceeds 5E-2");
            }
        }
        finally
        {
            File.Delete(path);
        }
    }

    /// <summary>Decoding token by token through the sliding window gives prefill's logits.</summary>
    [Theory]
    [InlineData("gemma2")]
    [InlineData("gemma3")]
    public void DecodingOneTokenAtATimeMatchesPrefill(string variant)
    {
        var spec = Variant(variant);
        string path = Path.Combine(Path.GetTempPath(), $"velo-decode-{variant}-{Environment.ProcessId}.gguf");
        try
        {
            ModelSynthesizer.Write(path, spec);
            int[] tokens = Enumerable.Range(0, 14).Select(i => (i * 53 + 5) % spec.VocabSize).ToArray();
            var prefill = VeloLogits(path, tokens);
            using var model = ModelRegistry.Load(path);
            using var state = model.CreateState(contextLength: 16, maxBatch: 1);
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
        finally
        {
            File.Delete(path);
        }
    }

    /// <summary>The window matters: the same model with the window as long as the sequence gives other logits past it.</summary>
    [Fact]
    public void TheSlidingWindowChangesLogitsOnlyPastIt()
    {
        var spec = Variant("gemma3");
        string windowed = Path.Combine(Path.GetTempPath(), $"velo-win-{Environment.ProcessId}.gguf");
        string wide = Path.Combine(Path.GetTempPath(), $"velo-wide-{Environment.ProcessId}.gguf");
        try
        {
            ModelSynthesizer.Write(windowed, spec);
            ModelSynthesizer.Write(wide, spec with { SlidingWindow = SequenceLength });
            int[] tokens = Enumerable.Range(0, 16).Select(i => (i * 37 + 11) % spec.VocabSize).ToArray();
            var a = VeloLogits(windowed, tokens);
            var b = VeloLogits(wide, tokens);
            for (int i = 0; i < spec.SlidingWindow; i++) Assert.Equal(a[i], b[i]);
            Assert.True(RelativeError(a[spec.SlidingWindow..], b[spec.SlidingWindow..]) > 1e-3);
        }
        finally
        {
            File.Delete(windowed);
            File.Delete(wide);
        }
    }

    [Theory]
    [InlineData("gemma2", "blk.1.post_ffw_norm.weight")]
    [InlineData("gemma3", "blk.0.attn_k_norm.weight")]
    [InlineData("gemma3", "blk.5.post_attention_norm.weight")]
    public void A_file_missing_a_required_tensor_names_it(string variant, string tensor)
    {
        string path = Path.Combine(Path.GetTempPath(), $"velo-missing-{variant}-{Environment.ProcessId}.gguf");
        try
        {
            WriteWithout(Variant(variant), path, tensor: tensor);
            var e = Assert.Throws<GgufFormatException>(() => ModelRegistry.Load(path).Dispose());
            Assert.Contains(tensor, e.Message);
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Theory]
    [InlineData("gemma3", "gemma3.attention.sliding_window")]
    [InlineData("gemma2", "gemma2.attention.layer_norm_rms_epsilon")]
    public void A_file_missing_a_required_key_names_it(string variant, string key)
    {
        string path = Path.Combine(Path.GetTempPath(), $"velo-missing-key-{variant}-{Environment.ProcessId}.gguf");
        try
        {
            WriteWithout(Variant(variant), path, key: key);
            var e = Assert.Throws<GgufFormatException>(() => ModelRegistry.Load(path).Dispose());
            Assert.Contains(key, e.Message);
        }
        finally
        {
            File.Delete(path);
        }
    }

    /// <summary>Copies a synthesized file leaving out one tensor or one metadata key.</summary>
    private static void WriteWithout(SynthSpec spec, string path, string? tensor = null, string? key = null)
    {
        string full = path + ".full";
        ModelSynthesizer.Write(full, spec);
        try
        {
            using var source = GgufFile.Open(full);
            var writer = new GgufWriter();
            foreach (var (k, value) in source.Metadata)
                if (k != key && k != "general.alignment") writer.Set(k, value);
            foreach (var t in source.Tensors)
            {
                if (t.Name == tensor) continue;
                writer.AddTensor(t.Name, t.Type, t.Shape.ToArray(), source.TensorBytes(t).ToArray());
            }
            writer.WriteAtomically(path);
        }
        finally
        {
            File.Delete(full);
        }
    }
}
