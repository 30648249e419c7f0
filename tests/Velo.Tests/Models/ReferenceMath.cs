namespace Velo.Tests.Models;

/// <summary>
/// The double-precision building blocks the reference decoders share, written with plain loops straight from their
/// definitions; they share no code with Velo's kernels.
/// </summary>
internal static class ReferenceMath
{
    /// <summary>w · x, with <paramref name="w"/> as rows.</summary>
    public static double[] MatVec(double[][] w, double[] x)
    {
        var y = new double[w.Length];
        for (int r = 0; r < w.Length; r++)
        {
            double acc = 0;
            for (int c = 0; c < x.Length; c++) acc += w[r][c] * x[c];
            y[r] = acc;
        }
        return y;
    }

    public static void AddTo(double[] x, double[] y)
    {
        for (int i = 0; i < x.Length; i++) x[i] += y[i];
    }

    public static double[] RmsNorm(double[] x, double[] weight, double epsilon)
    {
        double ms = x.Sum(e => e * e) / x.Length;
        double scale = 1 / Math.Sqrt(ms + epsilon);
        return x.Select((e, i) => e * scale * weight[i]).ToArray();
    }

    /// <summary>
    /// Grouped-query attention of one query position over the keys and values at positions
    /// <paramref name="first"/>..<paramref name="last"/>: per head, softmax of scaled dot products (soft-capped by
    /// cap·tanh(s/cap) when <paramref name="softCap"/> is above zero), then the weighted sum of values.
    /// </summary>
    public static double[] Attention(double[] query, double[][] keys, double[][] values, int first, int last,
        int heads, int kvHeads, int headDim, double scale, double softCap = 0)
    {
        var attention = new double[heads * headDim];
        for (int h = 0; h < heads; h++)
        {
            int kvh = h / (heads / kvHeads);
            var scores = new double[last + 1];
            for (int t = first; t <= last; t++)
            {
                double dot = 0;
                for (int d = 0; d < headDim; d++) dot += query[h * headDim + d] * keys[t][kvh * headDim + d];
                scores[t] = dot * scale;
                if (softCap > 0) scores[t] = softCap * Math.Tanh(scores[t] / softCap);
            }
            double max = scores[first..].Max(), sum = 0;
            for (int t = first; t <= last; t++) sum += scores[t] = Math.Exp(scores[t] - max);
            for (int t = first; t <= last; t++)
                for (int d = 0; d < headDim; d++) attention[h * headDim + d] += scores[t] / sum * values[t][kvh * headDim + d];
        }
        return attention;
    }
}
