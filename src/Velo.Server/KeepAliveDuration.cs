using System.Globalization;

namespace Velo.Server;

/// <summary>
/// Keep-alive durations as Ollama writes them (<c>--keep-alive</c> and the <c>keep_alive</c> request field): a number
/// of seconds or a Go duration such as <c>"5m"</c> or <c>"1h30m"</c>; negative means for ever
/// (<see cref="Timeout.InfiniteTimeSpan"/>), zero unloads as soon as the model is idle.
/// </summary>
public static class KeepAliveDuration
{
    private static readonly (string Unit, double Seconds)[] Units =
        [("ns", 1e-9), ("us", 1e-6), ("µs", 1e-6), ("ms", 1e-3), ("s", 1), ("m", 60), ("h", 3600)];

    /// <summary>Seconds as a keep-alive: negative, or longer than a timer can wait (49 days), is for ever.</summary>
    public static TimeSpan FromSeconds(double seconds) =>
        seconds < 0 || seconds > TimeSpan.FromDays(49).TotalSeconds ? Timeout.InfiniteTimeSpan : TimeSpan.FromSeconds(seconds);

    /// <summary>A Go duration ("300ms", "-1.5h", "1h30m") or a bare number of seconds as a keep-alive; null when it is neither.</summary>
    public static TimeSpan? Parse(string text)
    {
        if (text.Length is 0 or > 64) return null;
        if (double.TryParse(text, NumberStyles.AllowLeadingSign | NumberStyles.AllowDecimalPoint, CultureInfo.InvariantCulture, out double bare))
            return FromSeconds(bare);
        int sign = 1, i = 0;
        if (text[0] is '-' or '+')
        {
            sign = text[0] == '-' ? -1 : 1;
            i = 1;
        }
        if (i == text.Length) return null;
        double total = 0;
        while (i < text.Length)
        {
            int start = i;
            while (i < text.Length && (char.IsAsciiDigit(text[i]) || text[i] == '.')) i++;
            if (!double.TryParse(text.AsSpan(start, i - start), NumberStyles.AllowDecimalPoint, CultureInfo.InvariantCulture, out double value)) return null;
            var (unit, seconds) = Units.Where(u => text.AsSpan(i).StartsWith(u.Unit, StringComparison.Ordinal)).OrderByDescending(u => u.Unit.Length).FirstOrDefault();
            if (unit == null) return null;
            i += unit.Length;
            total += value * seconds;
        }
        return FromSeconds(sign * total);
    }
}
