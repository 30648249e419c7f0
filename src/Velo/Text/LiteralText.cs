using System.Text;

namespace Velo.Text;

/// <summary>
/// A rendered prompt in which control tokens written by the template are parsed, while the text of control tokens
/// inside untrusted values (marked by <see cref="LiteralTextMarker.Protect"/>) stays plain text.
/// </summary>
public readonly record struct MarkedPrompt(string Text, char LiteralMark);

/// <summary>
/// Keeps untrusted text, such as a user's chat message, from becoming control tokens when a chat template renders it
/// into a prompt that is then tokenized with control-token parsing on (which the template's own markup needs).
/// </summary>
/// <remarks>
/// The marker picks a character that occurs in none of the untrusted values, the template and the control tokens
/// (a Unicode noncharacter, else a private-use one) and puts it before every place in an untrusted value where a
/// control token's text starts, and before the places where one could start or end across the value's edges. The
/// tokenizer does not recognise a control token right after the mark, and drops the marks from plain text.
/// A mark travels with the text through what templates do to message content (trim, split, replace, slicing,
/// tojson) because it is an ordinary character that is neither whitespace nor cased. User-defined added tokens
/// (Qwen's <c>&lt;think&gt;</c>) are recognised in any text, as llama.cpp and Hugging Face do, so they are not
/// shielded.
/// </remarks>
public sealed class LiteralTextMarker
{
    private readonly IReadOnlyList<string> _controlTexts;

    private LiteralTextMarker(char mark, IReadOnlyList<string> controlTexts)
    {
        Mark = mark;
        _controlTexts = controlTexts;
    }

    public char Mark { get; }

    /// <summary>Chooses a mark that none of <paramref name="untrusted"/>, <paramref name="markup"/> (the template
    /// source) and the tokenizer's control tokens contain.</summary>
    /// <exception cref="ArgumentException">The values use every candidate character (only a contrived input does).</exception>
    public static LiteralTextMarker Create(TokenizerBase tokenizer, IEnumerable<string> untrusted, string? markup = null)
    {
        var controlTexts = tokenizer.ParsedOnlySpecialTexts;
        var used = new HashSet<char>();
        void Scan(string text)
        {
            foreach (char c in text)
                if (IsCandidate(c)) used.Add(c);
        }
        foreach (string text in untrusted) Scan(text);
        if (markup != null) Scan(markup);
        foreach (string text in controlTexts) Scan(text);
        foreach (char c in Candidates())
            if (!used.Contains(c)) return new LiteralTextMarker(c, controlTexts);
        throw new ArgumentException("the messages use every Unicode noncharacter and private-use character, so their text cannot be kept apart from the chat template's control tokens");
    }

    /// <summary>The text with the mark before every place a control token could start in it, or reach into it.</summary>
    public string Protect(string untrusted)
    {
        ArgumentNullException.ThrowIfNull(untrusted);
        if (untrusted.Length == 0) return untrusted;
        bool[]? markBefore = null;
        var text = untrusted.AsSpan();
        foreach (string token in _controlTexts)
        {
            // Every occurrence, overlapping ones included.
            for (int at = text.IndexOf(token, StringComparison.Ordinal); at >= 0;)
            {
                (markBefore ??= new bool[text.Length])[at] = true;
                int next = text[(at + 1)..].IndexOf(token, StringComparison.Ordinal);
                at = next < 0 ? -1 : at + 1 + next;
            }
            // A tail of the text that starts the token: whatever follows the value could complete it.
            for (int start = Math.Max(0, text.Length - token.Length + 1); start < text.Length; start++)
                if (token.AsSpan().StartsWith(text[start..], StringComparison.Ordinal))
                    (markBefore ??= new bool[text.Length])[start] = true;
            // A head of the text that ends the token: whatever precedes the value could begin it. A mark at the
            // very start falls inside any such token.
            for (int end = 1; end < token.Length && end <= text.Length; end++)
                if (token.AsSpan().EndsWith(text[..end], StringComparison.Ordinal))
                {
                    (markBefore ??= new bool[text.Length])[0] = true;
                    break;
                }
        }
        if (markBefore == null) return untrusted;
        var marked = new StringBuilder(untrusted.Length + 8);
        for (int i = 0; i < text.Length; i++)
        {
            if (markBefore[i]) marked.Append(Mark);
            marked.Append(text[i]);
        }
        return marked.ToString();
    }

    /// <summary>The rendered prompt, ready for <see cref="TokenizerBase.Encode(MarkedPrompt, bool)"/>.</summary>
    public MarkedPrompt Prompt(string rendered) => new(rendered, Mark);

    private static bool IsCandidate(char c) => c is (>= '\uFDD0' and <= '\uFDEF') or (>= '\uE000' and <= '\uF8FF');

    // Noncharacters first: Unicode reserves them for internal use, so real text should never hold them.
    private static IEnumerable<char> Candidates()
    {
        for (char c = '\uFDD0'; c <= '\uFDEF'; c++) yield return c;
        for (char c = '\uE000'; c <= '\uF8FF'; c++) yield return c;
    }
}
