namespace Velo.Generation;

/// <summary>
/// Watches streamed text for stop strings. Text that might be the start of a stop string is held back until it is
/// clear either way, so a stop string never reaches the output, even when it spans tokens.
/// </summary>
public sealed class StopStringMatcher(IReadOnlyList<string> stops)
{
    private readonly string[] _stops = stops.Where(s => s.Length > 0).ToArray();
    private string _pending = "";

    /// <summary>Adds text; returns what can be output now, and whether a stop string was found.</summary>
    public (string Text, bool Stopped) Push(string text)
    {
        if (_stops.Length == 0) return (text, false);
        _pending += text;
        int earliest = -1;
        foreach (var stop in _stops)
        {
            int at = _pending.IndexOf(stop, StringComparison.Ordinal);
            if (at >= 0 && (earliest < 0 || at < earliest)) earliest = at;
        }
        if (earliest >= 0)
        {
            string before = _pending[..earliest];
            _pending = "";
            return (before, true);
        }
        int hold = 0;
        foreach (var stop in _stops)
            for (int k = Math.Min(stop.Length - 1, _pending.Length); k > hold; k--)
                if (_pending.AsSpan(_pending.Length - k).SequenceEqual(stop.AsSpan(0, k)))
                {
                    hold = k;
                    break;
                }
        string ready = _pending[..^hold];
        _pending = _pending[^hold..];
        return (ready, false);
    }

    /// <summary>Releases text held back at the end of generation.</summary>
    public string Flush()
    {
        string rest = _pending;
        _pending = "";
        return rest;
    }
}
