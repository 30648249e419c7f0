namespace Velo.Tests.Generation;

/// <summary>A two-sample chi-square test that two lists of draws (tokens) come from one distribution.</summary>
internal static class SameDistribution
{
    /// <summary>
    /// Fails when the statistic over the tokens drawn (tokens drawn fewer than 10 times in both samples pooled into one
    /// bin) exceeds the 0.999 quantile of the chi-square distribution (Wilson–Hilferty), or when fewer than 6 bins
    /// make the test meaningless.
    /// </summary>
    public static void Assert(IReadOnlyList<int> first, IReadOnlyList<int> second)
    {
        var a = first.CountBy(t => t).ToDictionary();
        var b = second.CountBy(t => t).ToDictionary();
        double statistic = 0;
        int bins = 0, pooledA = 0, pooledB = 0;
        foreach (int token in a.Keys.Union(b.Keys))
        {
            int x = a.GetValueOrDefault(token), y = b.GetValueOrDefault(token);
            if (x + y < 10)
            {
                pooledA += x;
                pooledB += y;
                continue;
            }
            statistic += (double)(x - y) * (x - y) / (x + y);
            bins++;
        }
        if (pooledA + pooledB > 0)
        {
            statistic += (double)(pooledA - pooledB) * (pooledA - pooledB) / (pooledA + pooledB);
            bins++;
        }
        int df = bins - 1;
        Xunit.Assert.True(df >= 5, $"only {bins} bins: the position is too predictable to test anything");
        const double z999 = 3.0902;
        double bound = df * Math.Pow(1 - 2.0 / (9 * df) + z999 * Math.Sqrt(2.0 / (9 * df)), 3);
        Xunit.Assert.True(statistic < bound, $"chi-square {statistic:F1} over {df} degrees of freedom exceeds the 0.999 bound {bound:F1}");
    }
}
