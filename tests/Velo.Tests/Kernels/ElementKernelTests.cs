using System.Runtime.Intrinsics;
using Velo.Kernels;

namespace Velo.Tests.Kernels;

/// <summary>The small kernels of the forward pass against their double-precision references.</summary>
public class ElementKernelTests
{
    private static readonly int[] Lengths = [1, 7, 8, 9, 64, 100, 2051];

    private static float[] Random(int length, int seed, float scale = 3)
    {
        var random = new Random(seed);
        var values = new float[length];
        for (int i = 0; i < length; i++) values[i] = (float)((random.NextDouble() * 2 - 1) * scale);
        return values;
    }

    /// <summary>Each element within a few float ulps of the reference (relative 1e-5, or 1e-6 of the scale near zero).</summary>
    private static void AssertClose(float[] expected, float[] actual, float scale, string what)
    {
        for (int i = 0; i < expected.Length; i++)
        {
            double bound = 1e-5 * Math.Abs(expected[i]) + 1e-6 * scale;
            Assert.True(Math.Abs(expected[i] - actual[i]) <= bound, $"{what}[{i}]: {actual[i]} vs reference {expected[i]}");
        }
    }

    [Fact]
    public void RmsNormMatchesReference()
    {
        foreach (int n in Lengths)
        {
            float[] x = Random(n, n), weight = Random(n, n + 1), fast = new float[n], reference = new float[n];
            RmsNorm.Apply(x, weight, fast, 1e-5f);
            RmsNorm.Reference(x, weight, reference, 1e-5f);
            AssertClose(reference, fast, 3, $"rmsnorm n={n}");
        }
    }

    [Fact]
    public void LayerNormMatchesReference()
    {
        foreach (int n in Lengths)
        {
            // An offset mean, as BERT's residual rows have: the variance must come from centred values.
            float[] x = Random(n, n).Select(v => v + 50).ToArray(), weight = Random(n, n + 1), bias = Random(n, n + 2),
                fast = new float[n], reference = new float[n];
            LayerNorm.Apply(x, weight, bias, fast, 1e-12f);
            LayerNorm.Reference(x, weight, bias, reference, 1e-12f);
            for (int i = 0; i < n; i++) Assert.True(Math.Abs(reference[i] - fast[i]) <= 2e-4, $"layernorm n={n} [{i}]: {fast[i]} vs {reference[i]}");
        }
        // One element: its centred value is 0, so the output is the bias.
        float[] one = new float[1];
        LayerNorm.Apply([7f], [2f], [0.5f], one, 1e-12f);
        Assert.Equal(0.5f, one[0]);
    }

    [Fact]
    public void GeluErfMatchesReference()
    {
        foreach (int n in Lengths)
        {
            float[] x = Random(n, n, scale: 8), fast = new float[n], reference = new float[n];
            Activations.GeluErf(x, fast);
            Activations.GeluErfReference(x, reference);
            // Abramowitz and Stegun's erf is within 1.5e-7: the product with ½x stays within a few 1e-7 of x's scale.
            for (int i = 0; i < n; i++) Assert.True(Math.Abs(reference[i] - fast[i]) <= 1e-6 * (1 + Math.Abs(x[i])), $"gelu n={n} x={x[i]}: {fast[i]} vs {reference[i]}");
        }
        // Known values of the exact GELU: 0, Φ(1) = 0.8413447, −1·Φ(−1) = −0.1586553.
        float[] points = [0, 1, -1], y = new float[3];
        Activations.GeluErf(points, y);
        Assert.Equal(0f, y[0]);
        Assert.Equal(0.8413447, y[1], 1e-6);
        Assert.Equal(-0.1586553, y[2], 1e-6);
    }

    /// <summary>
    /// The erf GELU in single precision (its exponential included) against the double-precision definition on a dense
    /// sweep, every 2^-10 from −16 to 16 and the far tails: within 3e-7·(1 + |x|), Abramowitz and Stegun's erf error
    /// (1.5e-7) times ½|x| plus float rounding; and the 512-bit, 256-bit and one-at-a-time paths give the same bits.
    /// </summary>
    [Fact]
    public void GeluErfStaysWithinItsBoundAndIsTheSameAtEveryWidth()
    {
        var x = Enumerable.Range(-16 * 1024, 32 * 1024 + 1).Select(i => i / 1024f).Concat([-1e30f, -200f, -30f, 30f, 200f, 1e30f, float.Epsilon, -float.Epsilon]).ToArray();
        float[] fast = new float[x.Length], reference = new float[x.Length], one = new float[1];
        Activations.GeluErf(x, fast);
        Activations.GeluErfReference(x, reference);
        double worst = 0;
        for (int i = 0; i < x.Length; i++)
        {
            double error = Math.Abs(reference[i] - fast[i]) / (1 + Math.Abs(x[i]));
            worst = Math.Max(worst, error);
            Assert.True(error <= 3e-7, $"gelu({x[i]}) = {fast[i]}, reference {reference[i]}");
            Activations.GeluErf(x.AsSpan(i, 1), one);
            Assert.Equal(BitConverter.SingleToInt32Bits(fast[i]), BitConverter.SingleToInt32Bits(one[0]));
            var wide = Activations.GeluErf(Vector512.Create(x[i]));
            Assert.Equal(BitConverter.SingleToInt32Bits(fast[i]), BitConverter.SingleToInt32Bits(wide.GetElement(i % 16)));
        }
        Assert.True(worst > 0, "the sweep reached no inexact result");
    }

    [Fact]
    public void SoftmaxMatchesReferenceAndSurvivesLargeLogits()
    {
        foreach (int n in Lengths)
        {
            float[] x = Random(n, n, scale: 30), fast = new float[n], reference = new float[n];
            x[n / 2] = 1000; // exp(1000) overflows float unless the maximum is subtracted first
            Softmax.Apply(x, fast);
            Softmax.Reference(x, reference);
            AssertClose(reference, fast, 1e-3f, $"softmax n={n}");
        }
    }

    /// <summary>
    /// A batch's rows of 172 (stories260K's feed-forward width) lie one after another, so a row's elements fall at
    /// different vector lanes alone and in a batch: each element's result must not depend on that.
    /// </summary>
    [Fact]
    public void SiLUAndSwiGLUGiveEveryElementTheSameResultWhereverItLies()
    {
        const int row = 172;
        float[] gate = Random(3 * row, 11), up = Random(3 * row, 12);
        var batched = new float[3 * row];
        var alone = new float[row];
        Activations.SwiGLU(gate, up, batched);
        for (int r = 0; r < 3; r++)
        {
            Activations.SwiGLU(gate.AsSpan(r * row, row), up.AsSpan(r * row, row), alone);
            Assert.Equal(batched.AsSpan(r * row, row).ToArray(), alone);
        }
        Activations.SiLU(gate, batched);
        for (int r = 0; r < 3; r++)
        {
            Activations.SiLU(gate.AsSpan(r * row, row), alone);
            Assert.Equal(batched.AsSpan(r * row, row).ToArray(), alone);
        }
    }

    [Fact]
    public void SiLUAndSwiGLUMatchReferenceIncludingInPlace()
    {
        foreach (int n in Lengths)
        {
            float[] gate = Random(n, n, scale: 12), up = Random(n, n + 5);
            float[] fast = new float[n], reference = new float[n];
            Activations.SiLU(gate, fast);
            Activations.SiLUReference(gate, reference);
            AssertClose(reference, fast, 12, $"silu n={n}");

            Activations.SwiGLUReference(gate, up, reference);
            float[] inPlace = (float[])gate.Clone();
            Activations.SwiGLU(inPlace, up, inPlace);
            AssertClose(reference, inPlace, 36, $"swiglu n={n}");
        }
    }

    [Fact]
    public void GeGLUMatchesReferenceIncludingInPlaceAndWhereverAnElementLies()
    {
        foreach (int n in Lengths)
        {
            // Up to ±12 reaches both tails, where gelu is x or 0.
            float[] gate = Random(n, n, scale: 12), up = Random(n, n + 5);
            float[] reference = new float[n], inPlace = (float[])gate.Clone();
            Activations.GeGLUReference(gate, up, reference);
            Activations.GeGLU(inPlace, up, inPlace);
            AssertClose(reference, inPlace, 36, $"geglu n={n}");
        }
        const int row = 172;
        float[] g = Random(3 * row, 21), u = Random(3 * row, 22);
        var batched = new float[3 * row];
        var alone = new float[row];
        Activations.GeGLU(g, u, batched);
        for (int r = 0; r < 3; r++)
        {
            Activations.GeGLU(g.AsSpan(r * row, row), u.AsSpan(r * row, row), alone);
            Assert.Equal(batched.AsSpan(r * row, row).ToArray(), alone);
        }
    }

    [Fact]
    public void GeGLUOfExtremeGatesIsFinite()
    {
        float[] gate = [-1e30f, -100, 100, 1e30f, 0], up = [1, 1, 1, 1, 1], y = new float[5];
        Activations.GeGLU(gate, up, y);
        Assert.Equal([0, 0, 100, 1e30f, 0], y.Select(v => v == 0 ? 0 : v).ToArray());
    }

    [Fact]
    public void SoftCapAndScaleMatchReference()
    {
        foreach (int n in Lengths)
        {
            float[] x = Random(n, n, scale: 80), reference = (float[])x.Clone();
            Elementwise.SoftCapReference(reference, 30);
            Elementwise.SoftCap(x, 30);
            AssertClose(reference, x, 30, $"softcap n={n}");
            Assert.All(x, v => Assert.InRange(v, -30f, 30f));

            float[] y = Random(n, n + 1), scaled = (float[])y.Clone();
            Elementwise.ScaleReference(y, 48f);
            Elementwise.Scale(scaled, 48f);
            Assert.Equal(y, scaled);
        }
    }

    [Fact]
    public void AddMatchesReferenceIncludingInPlace()
    {
        foreach (int n in Lengths)
        {
            float[] a = Random(n, n), b = Random(n, n + 9), reference = new float[n];
            Elementwise.AddReference(a, b, reference);
            Elementwise.Add(a, b, a);
            Assert.Equal(reference, a);
        }
    }

    [Theory]
    [InlineData(nameof(RopeLayout.Interleaved), 64, 64, false)]
    [InlineData(nameof(RopeLayout.NeoX), 64, 64, false)]
    [InlineData(nameof(RopeLayout.Interleaved), 128, 128, true)]
    [InlineData(nameof(RopeLayout.NeoX), 128, 128, true)]
    [InlineData(nameof(RopeLayout.Interleaved), 48, 22, false)] // partial rotation, pair count not a multiple of the vector
    [InlineData(nameof(RopeLayout.NeoX), 48, 22, true)]
    [InlineData(nameof(RopeLayout.NeoX), 10, 10, false)]
    public void RopeMatchesReference(string layoutName, int headDim, int rotaryDims, bool withFreqFactors)
    {
        // By name: the kernel's enum is internal, and a public test method cannot take it.
        var layout = Enum.Parse<RopeLayout>(layoutName);
        const int heads = 3;
        float[] freqFactors = withFreqFactors ? Random(rotaryDims / 2, 3).Select(f => 1 + Math.Abs(f) * 3).ToArray() : [];
        foreach (int position in new[] { 0, 1, 17, 4095 })
        {
            float[] x = Random(heads * headDim, position + headDim);
            float[] fast = (float[])x.Clone(), reference = (float[])x.Clone();
            float[] cos = new float[rotaryDims / 2], sin = new float[rotaryDims / 2];
            Rope.Angles(position, 500000f, freqFactors, cos, sin);
            Rope.Rotate(fast, headDim, cos, sin, layout);
            Rope.Reference(reference, headDim, rotaryDims, position, 500000f, freqFactors, layout);
            AssertClose(reference, fast, 3, $"rope {layout} pos={position}");
            if (position > 0)
                Assert.NotEqual(x, fast);
        }
    }
}
