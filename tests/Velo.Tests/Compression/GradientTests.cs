using Velo.Tools.Training;
using Ops = Velo.Tools.Training.TrainingOps<double>;

namespace Velo.Tests.Compression;

/// <summary>
/// Every backward pass against central finite differences in double precision: each op's scalar loss is
/// Σ r ⊙ output for a fixed random r, so the op's analytic gradient (fed r as the upstream gradient) must match
/// (L(x + h) − L(x − h)) / 2h to a relative error below 1e-5.
/// </summary>
public sealed class GradientTests
{
    private const double Step = 1e-6;
    private const double Tolerance = 1e-5;

    private static double[] RandomArray(Random random, int length, double scale = 1) =>
        Enumerable.Range(0, length).Select(_ => (random.NextDouble() * 2 - 1) * scale).ToArray();

    private static double Weighted(double[] output, double[] weights) => output.Zip(weights, (a, b) => a * b).Sum();

    /// <summary>Checks <paramref name="analytic"/> = ∂loss/∂x for every element of <paramref name="x"/> (or <paramref name="samples"/> random ones).</summary>
    private static void CheckGradient(string what, double[] x, double[] analytic, Func<double> loss, int samples = 0, int seed = 1)
    {
        var random = new Random(seed);
        int[] indices = samples > 0
            ? Enumerable.Range(0, samples).Select(_ => random.Next(x.Length)).Distinct().ToArray()
            : Enumerable.Range(0, x.Length).ToArray();
        double worst = 0;
        foreach (int i in indices)
        {
            double saved = x[i];
            x[i] = saved + Step;
            double plus = loss();
            x[i] = saved - Step;
            double minus = loss();
            x[i] = saved;
            double numeric = (plus - minus) / (2 * Step);
            double error = Math.Abs(numeric - analytic[i]) / Math.Max(Math.Abs(numeric) + Math.Abs(analytic[i]), 1e-7);
            worst = Math.Max(worst, error);
            Assert.True(error < Tolerance, $"{what}[{i}]: analytic {analytic[i]:G10}, numeric {numeric:G10}, relative error {error:E2}");
        }
        Assert.True(worst < Tolerance);
    }

    [Fact]
    public void Linear()
    {
        var random = new Random(1);
        int tokens = 3, inputs = 5, outputs = 4;
        double[] x = RandomArray(random, tokens * inputs), w = RandomArray(random, outputs * inputs), r = RandomArray(random, tokens * outputs);
        var y = new double[tokens * outputs];
        double Loss()
        {
            Ops.Linear(x, w, y, tokens, inputs, outputs);
            return Weighted(y, r);
        }
        var dx = new double[x.Length];
        var dw = new double[w.Length];
        Ops.LinearBackward(x, w, r, dx, dw, tokens, inputs, outputs);
        CheckGradient("dx", x, dx, Loss);
        CheckGradient("dW", w, dw, Loss);
    }

    [Fact]
    public void Embedding()
    {
        var random = new Random(2);
        int dim = 3;
        int[] tokens = [2, 0, 2, 1];
        double[] e = RandomArray(random, 4 * dim), r = RandomArray(random, tokens.Length * dim);
        var x = new double[tokens.Length * dim];
        double Loss()
        {
            Ops.Embed(tokens, e, x, dim);
            return Weighted(x, r);
        }
        var de = new double[e.Length];
        Ops.EmbedBackward(tokens, r, de, dim);
        CheckGradient("dE", e, de, Loss);
    }

    [Fact]
    public void RmsNorm()
    {
        var random = new Random(3);
        int tokens = 3, dim = 6;
        double[] x = RandomArray(random, tokens * dim), w = RandomArray(random, dim), r = RandomArray(random, tokens * dim);
        var y = new double[x.Length];
        var rms = new double[tokens];
        double Loss()
        {
            Ops.RmsNorm(x, w, y, rms, tokens, dim, 1e-5);
            return Weighted(y, r);
        }
        Loss();
        var dx = new double[x.Length];
        var dw = new double[w.Length];
        Ops.RmsNormBackward(x, w, rms, r, dx, dw, tokens, dim);
        CheckGradient("dx", x, dx, Loss);
        CheckGradient("dw", w, dw, Loss);
    }

    [Fact]
    public void Rope()
    {
        var random = new Random(4);
        int tokens = 4, headDim = 4, width = 8;
        double[] x = RandomArray(random, tokens * width), r = RandomArray(random, tokens * width);
        var (cos, sin) = Ops.RopeTable(tokens, headDim, 10000);
        double Loss()
        {
            var y = (double[])x.Clone();
            Ops.Rope(y, tokens, width, headDim, cos, sin);
            return Weighted(y, r);
        }
        var dx = (double[])r.Clone();
        Ops.Rope(dx, tokens, width, headDim, cos, sin, inverse: true);
        CheckGradient("dx", x, dx, Loss);
    }

    [Fact]
    public void CausalAttentionWithGroupedKvHeads()
    {
        var random = new Random(5);
        int tokens = 4, heads = 4, kvHeads = 2, headDim = 3;
        double[] q = RandomArray(random, tokens * heads * headDim), k = RandomArray(random, tokens * kvHeads * headDim),
            v = RandomArray(random, tokens * kvHeads * headDim), r = RandomArray(random, tokens * heads * headDim);
        var o = new double[q.Length];
        var p = new double[heads * tokens * tokens];
        double Loss()
        {
            Ops.Attention(q, k, v, o, p, tokens, heads, kvHeads, headDim);
            return Weighted(o, r);
        }
        Loss();
        var dq = new double[q.Length];
        var dk = new double[k.Length];
        var dv = new double[v.Length];
        Ops.AttentionBackward(q, k, v, p, r, dq, dk, dv, tokens, heads, kvHeads, headDim);
        CheckGradient("dq", q, dq, Loss);
        CheckGradient("dk", k, dk, Loss);
        CheckGradient("dv", v, dv, Loss);
    }

    [Fact]
    public void SwiGlu()
    {
        var random = new Random(6);
        double[] gate = RandomArray(random, 7, 3), up = RandomArray(random, 7), r = RandomArray(random, 7);
        var h = new double[7];
        double Loss()
        {
            Ops.SwiGlu(gate, up, h);
            return Weighted(h, r);
        }
        var dGate = new double[7];
        var dUp = new double[7];
        Ops.SwiGluBackward(gate, up, r, dGate, dUp);
        CheckGradient("dgate", gate, dGate, Loss);
        CheckGradient("dup", up, dUp, Loss);
    }

    [Theory]
    [InlineData(0.0, 1.0)]
    [InlineData(1.0, 1.0)]
    [InlineData(0.3, 2.0)]
    public void DistillationLoss(double alpha, double temperature)
    {
        var random = new Random(7);
        int vocab = 9;
        double[] logits = RandomArray(random, vocab, 3);
        var teacherLogits = RandomArray(random, vocab, 3).Select(z => z / temperature).ToArray();
        double max = teacherLogits.Max();
        double logSum = Math.Log(teacherLogits.Sum(z => Math.Exp(z - max))) + max;
        double[] teacher = teacherLogits.Select(z => z - logSum).ToArray();
        var scratch = new double[vocab];
        double Loss() => Ops.DistillationLoss(logits, 4, teacher, alpha, temperature, 0.5, scratch);
        var dLogits = new double[vocab];
        Ops.DistillationLoss(logits, 4, teacher, alpha, temperature, 0.5, dLogits);
        CheckGradient("dlogits", logits, dLogits, Loss);
    }

    public static DecoderShape SmallShape(bool tied) => new(Dim: 8, Layers: 2, Heads: 4, KvHeads: 2, HeadDim: 2, FfnDim: 12, VocabSize: 11,
        NormEpsilon: 1e-5f, RopeBase: 10000, TiedOutput: tied);

    /// <summary>A whole training step's gradient: embedding, every layer's tensors and the output, through the distillation loss.</summary>
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void WholeModel(bool tiedOutput)
    {
        var shape = SmallShape(tiedOutput);
        var layout = new ParameterLayout(shape);
        var random = new Random(8);
        double[] parameters = layout.RandomParameters(3).Select(v => (double)v * 20 + (random.NextDouble() - 0.5) * 0.1).ToArray();
        // Norm weights near 1 rather than exactly, so their gradients are exercised at a generic point.
        foreach (var t in layout.Tensors.Where(t => !t.IsMatrix))
            for (int i = t.Offset; i < t.Offset + t.Length; i++) parameters[i] = 1 + (random.NextDouble() - 0.5) * 0.5;
        int[] tokens = [1, 5, 3, 10, 5, 0];
        var teacher = Enumerable.Range(0, tokens.Length).Select(_ =>
        {
            var z = RandomArray(random, shape.VocabSize, 2);
            double logSum = Math.Log(z.Sum(Math.Exp));
            return z.Select(v => v - logSum).ToArray();
        }).ToArray();

        var decoder = new TrainableDecoder<double>(layout);
        var activations = new DecoderActivations<double>(shape, tokens.Length);
        var dLogits = new double[tokens.Length * shape.VocabSize];
        double Loss()
        {
            decoder.Forward(parameters, tokens, activations);
            double loss = 0;
            for (int t = 0; t < tokens.Length - 1; t++)
                loss += Ops.DistillationLoss(activations.Logits.AsSpan(t * shape.VocabSize, shape.VocabSize), tokens[t + 1], teacher[t], 0.6, 1.5, 0.2,
                    dLogits.AsSpan(t * shape.VocabSize, shape.VocabSize));
            return loss;
        }
        Loss();
        dLogits.AsSpan((tokens.Length - 1) * shape.VocabSize).Clear();
        var gradients = new double[layout.Count];
        decoder.Backward(parameters, activations, dLogits, gradients, new DecoderGradientScratch<double>(shape, tokens.Length));

        foreach (var tensor in layout.Tensors)
        {
            var slice = parameters.AsSpan(tensor.Offset, tensor.Length).ToArray();
            var sliceGradient = gradients.AsSpan(tensor.Offset, tensor.Length).ToArray();
            double SliceLoss()
            {
                slice.CopyTo(parameters, tensor.Offset);
                return Loss();
            }
            CheckGradient(tensor.Name, slice, sliceGradient, SliceLoss, samples: 6, seed: tensor.Offset + 1);
            slice.CopyTo(parameters, tensor.Offset);
        }
    }
}
