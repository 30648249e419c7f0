using Velo.Formats;
using Velo.Inference;
using Velo.Models;
using Velo.Runtime;
using Velo.Tensors;

namespace Velo.Tests.Models;

/// <summary>
/// Random-weight models covering the Llama-family variants, written as GGUF in several types, loaded back and run
/// through Velo; logits over a 32-token sequence are compared with <see cref="ReferenceLlama"/>.
/// </summary>
public class ReferenceForwardTests
{
    private const int SequenceLength = 32;

    public static SynthSpec Variant(string name) => name switch
    {
        // Llama 3 style: grouped-query attention, separate output matrix, rope frequency factors.
        "llama-gqa" => new SynthSpec
        {
            Architecture = "llama", Dim = 256, Layers = 2, Heads = 4, KvHeads = 2, FfnDim = 512, VocabSize = 300,
            TiedEmbeddings = false, RopeFrequencyFactors = true, RopeBase = 500000, WeightStd = 0.05f, NormJitter = 0.1f,
        },
        // Qwen2: QKV bias, NeoX rope, tied embeddings.
        "qwen2-bias" => new SynthSpec
        {
            Architecture = "qwen2", Dim = 256, Layers = 2, Heads = 4, FfnDim = 512, VocabSize = 300,
            TiedEmbeddings = true, QkvBias = true, RopeBase = 1000000, WeightStd = 0.05f, NormJitter = 0.1f, Seed = 2,
        },
        // Qwen3: per-head Q/K RMSNorm, head dim larger than dim / heads, GQA, NeoX rope.
        "qwen3-qknorm" => new SynthSpec
        {
            Architecture = "qwen3", Dim = 256, Layers = 2, Heads = 4, KvHeads = 2, HeadDim = 128, FfnDim = 512,
            VocabSize = 300, TiedEmbeddings = false, QkNorm = true, WeightStd = 0.05f, NormJitter = 0.1f, Seed = 3,
        },
        _ => throw new ArgumentException(name),
    };

    public static TheoryData<string, GgmlType> Cases()
    {
        var data = new TheoryData<string, GgmlType>();
        foreach (var v in new[] { "llama-gqa", "qwen2-bias", "qwen3-qknorm" })
            foreach (var t in new[] { GgmlType.F32, GgmlType.F16, GgmlType.Q8_0, GgmlType.Q4_K })
                data.Add(v, t);
        return data;
    }

    /// <summary>
    /// Bounds on the relative RMS logit error against the original float weights. Rounding a normal weight to a
    /// format leaves a relative RMS error e per weight: F16 ≈ 2^-11/√3 ≈ 3e-4; Q8_0 ≈ (2.1σ/127)/√12 ≈ 0.5 %
    /// (steps of 1/127 of a 32-block's largest magnitude); Q4_K ≈ (4.2σ/15)/√12 ≈ 8 % (15 steps over a 32-element
    /// sub-block's range). Every matrix on the path adds its error in quadrature, and these models pass through 15
    /// (7 per layer and the classifier), so logits drift by about √15 × e: 1.1e-3, 2 % and 31 % (measured: 9e-4,
    /// 2.3 % and 29 %). The bounds allow 1.5–2× that. Outputs that had lost the signal (a wrong block layout) would
    /// be uncorrelated with the reference, an RMS error near √2.
    /// </summary>
    internal static double ToleranceAgainstOriginal(GgmlType type) => type switch
    {
        GgmlType.F32 => 1e-4,
        GgmlType.F16 => 2e-3,
        GgmlType.Q8_0 => 4e-2,
        GgmlType.Q4_K => 0.45,
        _ => throw new ArgumentException(type.ToString()),
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

            var original = new ReferenceLlama(spec, name => OriginalWeights(spec, name)).Logits(tokens);
            double errorOriginal = type == GgmlType.F32 ? RelativeError(velo, original) : RelativeRmsError(velo, original);
            Assert.True(errorOriginal <= ToleranceAgainstOriginal(type),
                $"{variant} {type}: relative logit error {errorOriginal:E3} against the original weights exceeds {ToleranceAgainstOriginal(type):E1}");

            if (type != GgmlType.F32)
            {
                // Against the weights as stored (dequantized by the bit-exact reference dequantizer), only the
                // kernels' own rounding remains. Quantized kernels round activations to 8 bits per 32-block, as
                // llama.cpp does: a relative RMS error of about (2.5σ/127)/√12 ≈ 0.6 % per product, √15 × that
                // ≈ 2.3 % over the path. Float kernels stay near 1e-6.
                using var file = GgufFile.Open(path);
                var stored = new ReferenceLlama(spec, name => StoredWeights(file, name)).Logits(tokens);
                double errorStored = RelativeRmsError(velo, stored);
                double bound = type == GgmlType.F16 ? 1e-4 : 5e-2;
                Assert.True(errorStored <= bound, $"{variant} {type}: relative RMS logit error {errorStored:E3} against the stored weights exceeds {bound:E0}");
            }
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Theory]
    [InlineData("llama-gqa")]
    [InlineData("qwen3-qknorm")]
    public void DecodingOneTokenAtATimeMatchesPrefill(string variant)
    {
        var spec = Variant(variant);
        string path = Path.Combine(Path.GetTempPath(), $"velo-decode-{variant}-{Environment.ProcessId}.gguf");
        try
        {
            ModelSynthesizer.Write(path, spec);
            int[] tokens = Enumerable.Range(0, 12).Select(i => (i * 53 + 5) % spec.VocabSize).ToArray();
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

    /// <summary>
    /// Keys and values stored as F16 are rounded to 2^-11 relative, as F16 weights are, on two of the path's
    /// products per layer: the logits stay within the F16 weights' bound of the reference and far from F32's.
    /// </summary>
    [Theory]
    [InlineData("llama-gqa")]
    [InlineData("qwen3-qknorm")]
    public void An_F16_KV_cache_stays_within_F16_rounding_of_the_reference(string variant)
    {
        var spec = Variant(variant) with { WeightType = GgmlType.F32 };
        string path = Path.Combine(Path.GetTempPath(), $"velo-f16kv-{variant}-{Environment.ProcessId}.gguf");
        try
        {
            ModelSynthesizer.Write(path, spec);
            int[] tokens = Enumerable.Range(0, SequenceLength).Select(i => (i * 37 + 11) % spec.VocabSize).ToArray();
            var original = new ReferenceLlama(spec, name => OriginalWeights(spec, name)).Logits(tokens);
            double error = RelativeRmsError(VeloLogits(path, tokens, new KvCacheTypes(GgmlType.F16, GgmlType.F16)), original);
            Assert.True(error <= ToleranceAgainstOriginal(GgmlType.F16), $"{variant}: relative RMS logit error {error:E3} with an F16 KV cache");
            Assert.True(error > 1e-6, $"{variant}: no F16 rounding at all ({error:E3}): is the cache really F16?");
        }
        finally
        {
            File.Delete(path);
        }
    }

    internal static double[][] VeloLogits(string path, int[] tokens, KvCacheTypes cacheTypes = default)
    {
        using var model = ModelRegistry.Load(path);
        using var state = model.CreateState(contextLength: 64, maxBatch: tokens.Length, maxLogitRows: tokens.Length, cacheTypes: cacheTypes);
        var batch = new ForwardBatch(tokens.Length);
        for (int i = 0; i < tokens.Length; i++) batch.Add(tokens[i], i, wantLogits: true);
        model.Forward(state, batch);
        return Enumerable.Range(0, tokens.Length).Select(i => state.Output(i).ToArray().Select(f => (double)f).ToArray()).ToArray();
    }

    /// <summary>Largest error over all logits, relative to the largest reference logit.</summary>
    internal static double RelativeError(double[][] actual, double[][] expected)
    {
        double maxError = 0, maxMagnitude = 0;
        for (int i = 0; i < expected.Length; i++)
            for (int j = 0; j < expected[i].Length; j++)
            {
                maxError = Math.Max(maxError, Math.Abs(actual[i][j] - expected[i][j]));
                maxMagnitude = Math.Max(maxMagnitude, Math.Abs(expected[i][j]));
            }
        return maxError / maxMagnitude;
    }

    /// <summary>RMS error over all logits, relative to the RMS of the reference logits.</summary>
    internal static double RelativeRmsError(double[][] actual, double[][] expected)
    {
        double error = 0, magnitude = 0;
        for (int i = 0; i < expected.Length; i++)
            for (int j = 0; j < expected[i].Length; j++)
            {
                error += Math.Pow(actual[i][j] - expected[i][j], 2);
                magnitude += expected[i][j] * expected[i][j];
            }
        return Math.Sqrt(error / magnitude);
    }

    internal static double[][] OriginalWeights(SynthSpec spec, string name)
    {
        var shape = ModelSynthesizer.Tensors(spec).Single(t => t.Name == name).Shape;
        long rows = shape.Length > 1 ? shape[1] : 1;
        var result = new double[rows][];
        var row = new float[shape[0]];
        for (long r = 0; r < rows; r++)
        {
            ModelSynthesizer.FillRow(spec, name, r, row);
            result[r] = row.Select(f => (double)f).ToArray();
        }
        return result;
    }

    internal static double[][] StoredWeights(GgufFile file, string name)
    {
        var t = file.RequireTensor(name);
        int cols = (int)t.Shape[0];
        long rows = t.Shape.Count > 1 ? t.Shape[1] : 1;
        long rowBytes = GgmlTypeInfo.RowBytes(t.Type, cols);
        var bytes = file.TensorBytes(t);
        var row = new float[cols];
        var result = new double[rows][];
        for (long r = 0; r < rows; r++)
        {
            Dequantize.Row(t.Type, bytes.Slice((int)(r * rowBytes), (int)rowBytes), row);
            result[r] = row.Select(f => (double)f).ToArray();
        }
        return result;
    }
}
