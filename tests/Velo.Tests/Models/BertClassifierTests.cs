using Velo.Formats;
using Velo.Models;
using Velo.Runtime;

namespace Velo.Tests.Models;

/// <summary>
/// BERT's sequence-classification head (llama.cpp's <c>cls</c> tensors, rank pooling) on random-weight models Velo
/// synthesizes, against a double-precision forward written here: sentence pairs packed in one batch, the second text
/// of each marked token type 1, as a cross-encoder reranker sees them.
/// </summary>
public sealed class BertClassifierTests
{
    internal static SynthSpec Spec(bool twoLayers, IReadOnlyList<string> labels) => new()
    {
        Architecture = "bert",
        Dim = 32,
        Layers = 2,
        Heads = 4,
        FfnDim = 64,
        VocabSize = 300,
        ContextLength = 64,
        NormEpsilon = 1e-12f,
        WeightStd = 0.1f,
        ClassifierLabels = labels,
        ClassifierOutput = twoLayers,
        Seed = twoLayers ? 7UL : 8UL,
    };

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void ScoresMatchADoublePrecisionReference(bool twoLayers)
    {
        string[] labels = twoLayers ? ["negative", "neutral", "positive"] : ["relevance"];
        var spec = Spec(twoLayers, labels);
        string path = Path.Combine(Path.GetTempPath(), $"velo-bert-cls-{Guid.NewGuid():N}.gguf");
        try
        {
            ModelSynthesizer.Write(path, spec);
            using var model = ModelRegistry.Load(path);
            Assert.Equal(labels, model.Info.Labels);
            Assert.Equal(labels.Length, model.Info.EmbeddingLength);

            // Two pairs of different lengths in one batch: [CLS] a… [SEP] b… [SEP], types 0 then 1.
            (int[] Tokens, int[] Types)[] inputs =
            [
                ([101, 17, 42, 102, 250, 33, 102], [0, 0, 0, 0, 1, 1, 1]),
                ([101, 5, 102, 77, 78, 79, 80, 81, 102], [0, 0, 0, 1, 1, 1, 1, 1, 1]),
            ];
            using var state = model.CreateState(spec.ContextLength, maxBatch: 32, sequences: inputs.Length);
            var batch = new ForwardBatch(32);
            for (int s = 0; s < inputs.Length; s++)
                for (int t = 0; t < inputs[s].Tokens.Length; t++)
                    batch.Add(inputs[s].Tokens[t], t, s, wantLogits: t == inputs[s].Tokens.Length - 1, tokenType: inputs[s].Types[t]);
            model.Forward(state, batch);

            var reference = new ReferenceBertClassifier(spec, name => ReferenceForwardTests.OriginalWeights(spec, name));
            for (int s = 0; s < inputs.Length; s++)
            {
                double[] expected = reference.Scores(inputs[s].Tokens, inputs[s].Types);
                float[] actual = state.Output(s).ToArray();
                Assert.Equal(expected.Length, actual.Length);
                for (int i = 0; i < expected.Length; i++)
                    Assert.True(Math.Abs(actual[i] - expected[i]) <= 1e-4 + 1e-4 * Math.Abs(expected[i]),
                        $"pair {s} score {i}: Velo {actual[i]}, reference {expected[i]}");
            }
            // The token types matter: the same tokens all of type 0 score differently.
            var flat = reference.Scores(inputs[0].Tokens, new int[inputs[0].Tokens.Length]);
            Assert.NotEqual(flat[0], reference.Scores(inputs[0].Tokens, inputs[0].Types)[0], 6);
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Fact]
    public void AHeadlessFileWithRankPoolingOrMismatchedLabelsIsRefused()
    {
        string path = Path.Combine(Path.GetTempPath(), $"velo-bert-cls-{Guid.NewGuid():N}.gguf");
        string broken = path + ".broken.gguf";
        try
        {
            ModelSynthesizer.Write(path, Spec(twoLayers: true, ["a", "b"]));
            using (var file = GgufFile.Open(path))
            {
                // Three names for a two-output head.
                Rewrite(file, broken, w => w.Set("bert.classifier.output_labels", new[] { "a", "b", "c" }));
            }
            var error = Assert.Throws<GgufFormatException>(() => ModelRegistry.Load(broken).Dispose());
            Assert.Contains("names 3 labels", error.Message);

            using (var file = GgufFile.Open(path))
            {
                // Rank pooling on an embedding model without the head.
                Rewrite(file, broken, w => w.Set("bert.pooling_type", 4u), skip: name => name.StartsWith("cls.", StringComparison.Ordinal));
            }
            error = Assert.Throws<GgufFormatException>(() => ModelRegistry.Load(broken).Dispose());
            Assert.Contains("cls.weight", error.Message);
        }
        finally
        {
            File.Delete(path);
            File.Delete(broken);
        }
    }

    private static void Rewrite(GgufFile file, string path, Action<GgufWriter> metadata, Func<string, bool>? skip = null)
    {
        var writer = new GgufWriter().SetAll(file.Metadata);
        metadata(writer);
        foreach (var t in file.Tensors)
            if (skip == null || !skip(t.Name))
                writer.AddTensor(t.Name, t.Type, t.Shape.ToArray(), file.TensorBytes(t).ToArray());
        writer.Write(path);
    }
}

/// <summary>A BERT encoder with its classification head in double precision, straight from llama.cpp's graph.</summary>
internal sealed class ReferenceBertClassifier(SynthSpec spec, Func<string, double[][]> weights)
{
    private readonly Dictionary<string, double[][]> _cache = [];

    private double[][] W(string name) => _cache.TryGetValue(name, out var w) ? w : _cache[name] = weights(name);

    private bool Has(string name) => ModelSynthesizer.Tensors(spec).Any(t => t.Name == name);

    public double[] Scores(int[] tokens, int[] types)
    {
        var hidden = Linear(Hidden(tokens, types)[0], "cls").Select(Math.Tanh).ToArray();
        return Has("cls.output.weight") ? Linear(hidden, "cls.output") : hidden;
    }

    /// <summary>Each token's last hidden state.</summary>
    public double[][] Hidden(int[] tokens, int[] types)
    {
        int n = tokens.Length, dim = spec.Dim, heads = spec.Heads, hd = dim / heads;
        var x = new double[n][];
        for (int i = 0; i < n; i++)
        {
            x[i] = new double[dim];
            for (int d = 0; d < dim; d++)
                x[i][d] = W("token_embd.weight")[tokens[i]][d] + W("position_embd.weight")[i][d] + W("token_types.weight")[types[i]][d];
            x[i] = Norm(x[i], "token_embd_norm");
        }
        for (int l = 0; l < spec.Layers; l++)
        {
            string p = $"blk.{l}.";
            var q = x.Select(r => Linear(r, p + "attn_q")).ToArray();
            var k = x.Select(r => Linear(r, p + "attn_k")).ToArray();
            var v = x.Select(r => Linear(r, p + "attn_v")).ToArray();
            var attention = new double[n][];
            for (int i = 0; i < n; i++)
            {
                attention[i] = new double[dim];
                for (int h = 0; h < heads; h++)
                {
                    var scores = new double[n];
                    for (int j = 0; j < n; j++)
                    {
                        double dot = 0;
                        for (int d = 0; d < hd; d++) dot += q[i][h * hd + d] * k[j][h * hd + d];
                        scores[j] = dot / Math.Sqrt(hd);
                    }
                    double max = scores.Max(), sum = scores.Sum(s => Math.Exp(s - max));
                    for (int j = 0; j < n; j++)
                        for (int d = 0; d < hd; d++) attention[i][h * hd + d] += Math.Exp(scores[j] - max) / sum * v[j][h * hd + d];
                }
            }
            for (int i = 0; i < n; i++)
            {
                var o = Linear(attention[i], p + "attn_output");
                x[i] = Norm(x[i].Zip(o, (a, b) => a + b).ToArray(), p + "attn_output_norm");
                var up = Linear(x[i], p + "ffn_up").Select(g => 0.5 * g * (1 + Erf(g / Math.Sqrt(2)))).ToArray();
                var down = Linear(up, p + "ffn_down");
                x[i] = Norm(x[i].Zip(down, (a, b) => a + b).ToArray(), p + "layer_output_norm");
            }
        }
        return x;
    }

    private double[] Linear(double[] x, string name)
    {
        var w = W(name + ".weight");
        var b = W(name + ".bias")[0];
        var y = new double[w.Length];
        for (int r = 0; r < w.Length; r++)
        {
            double dot = b[r];
            for (int c = 0; c < x.Length; c++) dot += w[r][c] * x[c];
            y[r] = dot;
        }
        return y;
    }

    private double[] Norm(double[] x, string name)
    {
        double mean = x.Average(), variance = x.Sum(a => (a - mean) * (a - mean)) / x.Length;
        double scale = 1 / Math.Sqrt(variance + spec.NormEpsilon);
        var g = W(name + ".weight")[0];
        var b = W(name + ".bias")[0];
        return x.Select((a, i) => (a - mean) * scale * g[i] + b[i]).ToArray();
    }

    /// <summary>erf to about 1e-15 by its Taylor series (|z| is small here) or its continued-fraction complement.</summary>
    private static double Erf(double z)
    {
        if (Math.Abs(z) > 3) return Math.Sign(z) * (1 - ErfcLarge(Math.Abs(z)));
        double sum = 0, term = z;
        for (int k = 0; k < 100; k++)
        {
            sum += term / (2 * k + 1);
            term *= -z * z / (k + 1);
        }
        return 2 / Math.Sqrt(Math.PI) * sum;
    }

    private static double ErfcLarge(double z)
    {
        double f = 0;
        for (int k = 60; k >= 1; k--) f = k / 2.0 / (z + f);
        return Math.Exp(-z * z) / Math.Sqrt(Math.PI) / (z + f);
    }
}
