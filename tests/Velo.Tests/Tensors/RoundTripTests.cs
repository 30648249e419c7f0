using Velo.Tensors;

namespace Velo.Tests.Tensors;

/// <summary>
/// Quantize then dequantize random data and hold the error to what each format guarantees. fp16 scales add a relative
/// error of at most 2^-11 to every reconstructed level, hence the "/ 2048" terms: a level q times a stored scale is
/// off from q times the exact scale by at most |q| * d / 2048.
/// </summary>
public class RoundTripTests
{
    private const int Elements = 16 * GgmlTypeInfo.QK_K;

    /// <summary>Standard normal samples (Box-Muller), seeded so a failure reproduces.</summary>
    internal static float[] Gaussian(int count, int seed, float sigma = 1)
    {
        var random = new Random(seed);
        var values = new float[count];
        for (int i = 0; i < count; i++)
        {
            double u1 = 1 - random.NextDouble(), u2 = random.NextDouble();
            values[i] = sigma * (float)(Math.Sqrt(-2 * Math.Log(u1)) * Math.Cos(2 * Math.PI * u2));
        }
        return values;
    }

    internal static float[] RoundTrip(GgmlType type, float[] x)
    {
        var bytes = new byte[GgmlTypeInfo.RowBytes(type, x.Length)];
        Quantize.Row(type, x, bytes);
        var y = new float[x.Length];
        Dequantize.Row(type, bytes, y);
        return y;
    }

    private static float AbsMax(ReadOnlySpan<float> x)
    {
        float amax = 0;
        foreach (float v in x) amax = MathF.Max(amax, MathF.Abs(v));
        return amax;
    }

    [Fact]
    public void F16IsWithinHalfAnUlpOfBinary16()
    {
        float[] x = Gaussian(Elements, 1);
        float[] y = RoundTrip(GgmlType.F16, x);
        for (int i = 0; i < x.Length; i++)
            Assert.True(MathF.Abs(y[i] - x[i]) <= MathF.Abs(x[i]) / 2048 + 3e-8f, $"element {i}: {x[i]} -> {y[i]}");
    }

    [Fact]
    public void BF16IsWithinHalfAnUlpOfBfloat16()
    {
        float[] x = Gaussian(Elements, 2);
        float[] y = RoundTrip(GgmlType.BF16, x);
        for (int i = 0; i < x.Length; i++)
            Assert.True(MathF.Abs(y[i] - x[i]) <= MathF.Abs(x[i]) / 256, $"element {i}: {x[i]} -> {y[i]}");
    }

    [Fact]
    public void Q8_0IsWithinHalfAStep()
    {
        float[] x = Gaussian(Elements, 3);
        float[] y = RoundTrip(GgmlType.Q8_0, x);
        for (int b = 0; b < Elements / 32; b++)
        {
            float d = AbsMax(x.AsSpan(32 * b, 32)) / 127;
            for (int i = 32 * b; i < 32 * b + 32; i++)
                Assert.True(MathF.Abs(y[i] - x[i]) <= d * (0.5f + 127f / 2048), $"element {i}: {x[i]} -> {y[i]}, d {d}");
        }
    }

    /// <summary>
    /// Q4_0 and Q5_0 put the largest magnitude at level -2^(bits-1), exactly, so the opposite end of the range has one
    /// level fewer: values beyond (2^(bits-1) - 1) steps on that side clip, by up to one step; all others round, half a
    /// step.
    /// </summary>
    [Theory]
    [InlineData(GgmlType.Q4_0, 8)]
    [InlineData(GgmlType.Q5_0, 16)]
    public void SymmetricLegacyFormatsAreWithinHalfAStepExceptAtTheClippedEnd(GgmlType type, int halfLevels)
    {
        float[] x = Gaussian(Elements, 4);
        float[] y = RoundTrip(type, x);
        for (int b = 0; b < Elements / 32; b++)
        {
            float d = AbsMax(x.AsSpan(32 * b, 32)) / halfLevels;
            float fp16Slack = d * halfLevels / 2048;
            for (int i = 32 * b; i < 32 * b + 32; i++)
            {
                bool mayClip = MathF.Abs(x[i]) > (halfLevels - 1) * d;
                float bound = (mayClip ? d : d / 2) + fp16Slack;
                Assert.True(MathF.Abs(y[i] - x[i]) <= bound, $"element {i}: {x[i]} -> {y[i]}, d {d}");
            }
        }
    }

    /// <summary>Q4_1 and Q5_1 spread min..max over all levels: half a step, plus fp16 error in the scale and the min.</summary>
    [Theory]
    [InlineData(GgmlType.Q4_1, 15)]
    [InlineData(GgmlType.Q5_1, 31)]
    public void AffineLegacyFormatsAreWithinHalfAStep(GgmlType type, int maxLevel)
    {
        float[] x = Gaussian(Elements, 5);
        for (int i = 0; i < x.Length; i += 64) x[i] += 3; // some blocks far from zero, so the min matters
        float[] y = RoundTrip(type, x);
        for (int b = 0; b < Elements / 32; b++)
        {
            ReadOnlySpan<float> block = x.AsSpan(32 * b, 32);
            float min = float.MaxValue, max = float.MinValue;
            foreach (float v in block) { min = MathF.Min(min, v); max = MathF.Max(max, v); }
            float d = (max - min) / maxLevel;
            float bound = d / 2 + (maxLevel * d + MathF.Abs(min)) / 2048 + 1e-6f;
            for (int i = 32 * b; i < 32 * b + 32; i++)
                Assert.True(MathF.Abs(y[i] - x[i]) <= bound, $"element {i}: {x[i]} -> {y[i]}, d {d}");
        }
    }

    /// <summary>
    /// Relative RMSE (error RMS over signal RMS) on unit Gaussian data. Uniform rounding with step s leaves noise
    /// s / sqrt(12); a group's step is its range over its level count, about 4 sigma / 15 for Q4_K's groups of 32
    /// (0.077), half that per extra bit. Measured on five seeds: Q2_K 0.296-0.304, Q3_K 0.150-0.153, Q4_K
    /// 0.070-0.074, Q5_K 0.035-0.037, Q6_K 0.0176-0.0182 (the scale search beats plain rounding a little); the bounds
    /// sit about 15% above the worst of those, so a lost bit or a misplaced level fails.
    /// </summary>
    [Theory]
    [InlineData(GgmlType.Q2_K, 0.35)]
    [InlineData(GgmlType.Q3_K, 0.175)]
    [InlineData(GgmlType.Q4_K, 0.085)]
    [InlineData(GgmlType.Q5_K, 0.043)]
    [InlineData(GgmlType.Q6_K, 0.021)]
    public void KQuantRelativeRmseIsWithinBound(GgmlType type, double bound)
    {
        float[] x = Gaussian(Elements, 6);
        float[] y = RoundTrip(type, x);
        double squaredError = 0, squaredSignal = 0;
        for (int i = 0; i < x.Length; i++)
        {
            squaredError += (double)(y[i] - x[i]) * (y[i] - x[i]);
            squaredSignal += (double)x[i] * x[i];
        }
        double relativeRmse = Math.Sqrt(squaredError / squaredSignal);
        Assert.True(relativeRmse <= bound, $"{type}: relative RMSE {relativeRmse:F5} > {bound}");
    }
}
