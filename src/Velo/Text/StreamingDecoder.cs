using System.Text;

namespace Velo.Text;

/// <summary>
/// Decodes generated tokens one at a time. Text comes out only as whole UTF-8 characters: the bytes of a character
/// split across tokens (byte fallback, byte-level BPE) wait until the character is complete.
/// </summary>
public sealed class StreamingDecoder
{
    private readonly ITokenizer _tokenizer;
    private readonly bool _skipSpecial;
    private readonly IReadOnlySet<int>? _shown;
    private byte[] _bytes = new byte[64];
    private int _pending; // bytes of an unfinished character held at the start of _bytes

    /// <param name="shown">Control tokens decoded as their text even when <paramref name="skipSpecial"/> skips the others
    /// (the markers a tool-call parser reads).</param>
    public StreamingDecoder(ITokenizer tokenizer, bool skipSpecial = false, IReadOnlySet<int>? shown = null)
    {
        _tokenizer = tokenizer ?? throw new ArgumentNullException(nameof(tokenizer));
        _skipSpecial = skipSpecial;
        _shown = shown;
    }

    /// <summary>The text completed by this token; empty while a character is still unfinished.</summary>
    public string Append(int id)
    {
        var piece = _tokenizer.TokenBytes(id, _skipSpecial && _shown?.Contains(id) != true);
        if (piece.IsEmpty) return string.Empty;
        int length = _pending + piece.Length;
        if (length > _bytes.Length) Array.Resize(ref _bytes, Math.Max(length, _bytes.Length * 2));
        piece.CopyTo(_bytes.AsSpan(_pending));
        int complete = CompleteLength(_bytes.AsSpan(0, length));
        string text = complete == 0 ? string.Empty : Encoding.UTF8.GetString(_bytes, 0, complete);
        _bytes.AsSpan(complete, length - complete).CopyTo(_bytes);
        _pending = length - complete;
        return text;
    }

    /// <summary>Emits any unfinished character (as U+FFFD) and starts afresh.</summary>
    public string Flush()
    {
        string text = _pending == 0 ? string.Empty : Encoding.UTF8.GetString(_bytes, 0, _pending);
        _pending = 0;
        return text;
    }

    /// <summary>How many leading bytes end on a character boundary: all but a trailing incomplete sequence.</summary>
    private static int CompleteLength(ReadOnlySpan<byte> bytes)
    {
        for (int back = 1; back <= Math.Min(3, bytes.Length); back++)
        {
            byte b = bytes[^back];
            if ((b & 0xC0) == 0x80) continue; // continuation byte: the lead is further back
            int needed = b >= 0xF0 && b <= 0xF4 ? 4 : b >= 0xE0 && b <= 0xEF ? 3 : b >= 0xC2 && b <= 0xDF ? 2 : 1;
            return needed > back ? bytes.Length - back : bytes.Length;
        }
        return bytes.Length;
    }
}
