using System.Text;

namespace Velo.Tools;

/// <summary>
/// Splits a model's output, as it streams, into text and tool calls in the model's format. Text streams on at once,
/// except a tail that could begin a call's marker; a call is held until it is complete and well-formed, then comes
/// out whole, so nothing that turns out malformed is ever sent as a call: malformed output is text. Whitespace
/// next to a call is dropped; elsewhere it waits for the text after it.
/// </summary>
public sealed class ToolCallParser(ToolCallFormat format, bool parallelCalls = true)
{
    private readonly StringBuilder _held = new();
    private readonly StringBuilder _whitespace = new();
    private readonly List<ToolOutputPiece> _pieces = [];
    private bool _inCall;
    private bool _sawContent;
    private int _calls;

    /// <summary>Calls read so far (those dropped because <c>parallel_tool_calls</c> is false included).</summary>
    public int CallCount => _calls;

    /// <summary>Takes the next generated text; returns what can be shown now (a list reused by the next call).</summary>
    public IReadOnlyList<ToolOutputPiece> Push(string text)
    {
        _pieces.Clear();
        _held.Append(text);
        Drain(final: false);
        return _pieces;
    }

    /// <summary>Ends the output: a call still open is read as far as it goes, or becomes text.</summary>
    public IReadOnlyList<ToolOutputPiece> Finish()
    {
        _pieces.Clear();
        Drain(final: true);
        if (_calls == 0 && _whitespace.Length > 0) _pieces.Add(ToolOutputPiece.Text(_whitespace.ToString()));
        _whitespace.Clear();
        return _pieces;
    }

    /// <summary>A whole output at once; the same split the streaming parser makes.</summary>
    public static ToolCallOutput Parse(ToolCallFormat format, string output, bool parallelCalls = true)
    {
        var parser = new ToolCallParser(format, parallelCalls);
        var content = new StringBuilder();
        var calls = new List<ToolCall>();
        // Push and Finish answer in one reused list, so each answer is read before the next call.
        var pieces = parser.Push(output).ToList();
        pieces.AddRange(parser.Finish());
        foreach (var piece in pieces)
        {
            if (piece.Call is { } call) calls.Add(call);
            else content.Append(piece.Content);
        }
        return new ToolCallOutput(content.ToString(), calls);
    }

    /// <summary>
    /// The most text a call whose end has a marker may hold before it counts as text: each new piece re-reads the held
    /// call, so an output that opens a call and never closes it must not make every step slower.
    /// </summary>
    public const int MaxHeldCallChars = 32 * 1024;

    private void Drain(bool final)
    {
        while (_held.Length > 0)
        {
            // A call that only the end of the output completes is read once, then.
            if (_inCall && !final && format.CallEndsWithOutput) return;
            string held = _held.ToString();
            if (!_inCall)
            {
                int start = FindStart(held);
                if (start >= 0)
                {
                    EmitText(held[..start]);
                    _held.Remove(0, start);
                    _inCall = true;
                    continue;
                }
                int keep = final ? 0 : MarkerPrefixLength(held);
                EmitText(held[..^keep]);
                _held.Remove(0, held.Length - keep);
                return;
            }
            var read = format.TryReadCall(held, final);
            switch (read.Status)
            {
                case CallReadStatus.NeedMore:
                    if (held.Length <= MaxHeldCallChars) return;
                    EmitText(held);
                    _held.Clear();
                    _inCall = false;
                    return;
                case CallReadStatus.Calls:
                    _whitespace.Clear();
                    foreach (var (name, arguments) in read.Calls)
                    {
                        if (parallelCalls || _calls == 0) _pieces.Add(ToolOutputPiece.ForCall(new ToolCall(format.NewCallId(), name, arguments), _calls));
                        _calls++;
                    }
                    break;
                default:
                    EmitText(held[..read.Consumed]);
                    break;
            }
            _held.Remove(0, read.Consumed);
            _inCall = false;
        }
    }

    /// <summary>Where a call may start in the held text: the first start marker, or a bare <c>{</c> opening the output.</summary>
    private int FindStart(string held)
    {
        int first = -1;
        foreach (string marker in format.StartMarkers)
        {
            int at = held.IndexOf(marker, StringComparison.Ordinal);
            if (at >= 0 && (first < 0 || at < first)) first = at;
        }
        if (format.BareJsonAtStart && !_sawContent && _calls == 0)
        {
            int brace = 0;
            while (brace < held.Length && char.IsWhiteSpace(held[brace])) brace++;
            if (brace < held.Length && held[brace] == '{' && (first < 0 || brace < first)) first = brace;
        }
        return first;
    }

    /// <summary>The longest tail of <paramref name="held"/> that could be the start of a start marker.</summary>
    private int MarkerPrefixLength(string held)
    {
        int longest = 0;
        foreach (string marker in format.StartMarkers)
            for (int length = Math.Min(marker.Length - 1, held.Length); length > longest; length--)
                if (held.AsSpan(held.Length - length).SequenceEqual(marker.AsSpan(0, length)))
                {
                    longest = length;
                    break;
                }
        return longest;
    }

    /// <summary>Text goes out with any whitespace held before it; trailing whitespace waits, as it may only lead up to a
    /// call (however the text was split into pieces).</summary>
    private void EmitText(string text)
    {
        int end = text.Length;
        while (end > 0 && char.IsWhiteSpace(text[end - 1])) end--;
        if (end > 0)
        {
            _pieces.Add(ToolOutputPiece.Text(_whitespace.Length > 0 ? _whitespace + text[..end] : text[..end]));
            _whitespace.Clear();
            _sawContent = true;
        }
        _whitespace.Append(text, end, text.Length - end);
    }
}
