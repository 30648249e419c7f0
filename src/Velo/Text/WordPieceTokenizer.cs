using System.Globalization;
using System.Text;

namespace Velo.Text;

/// <summary>
/// WordPiece (GGUF <c>bert</c>: BERT, BGE, MiniLM, E5): text is cut into words at whitespace, punctuation and CJK
/// characters (lower-cased and stripped of accents when uncased), then each word is covered greedily by the
/// longest pieces, <c>▁</c>-prefixed at the word start; a word that cannot be covered becomes [UNK].
/// </summary>
public sealed class WordPieceTokenizer : TokenizerBase
{
    private const char WordStart = '▁';

    private readonly int _maxPieceChars;
    private readonly bool _lowercase;
    private readonly int _maxWordChars;

    public WordPieceTokenizer(TokenizerData data) : base(data)
    {
        if (data.Kind != TokenizerKind.WordPiece) throw new ArgumentException($"not a WordPiece vocabulary: {data.Kind}");
        if (UnknownId < 0) throw new InvalidDataException("WordPiece vocabulary has no unknown token");
        if (!data.Tokens.Any(t => t.Length > 1 && t[0] == WordStart))
            throw new InvalidDataException("WordPiece vocabulary has no word-initial pieces (▁-prefixed, as GGUF stores them)");
        _maxPieceChars = data.Tokens.Max(t => t.Length);
        _lowercase = data.Lowercase;
        _maxWordChars = data.MaxWordChars;
        BuildPieces();
    }

    protected override bool StripsLeadingSpace => true;

    protected override byte[] DecodePiece(int id, string text) => Encoding.UTF8.GetBytes(text.Replace(WordStart, ' '));

    /// <summary>The text as the tokenizer sees it: its words, normalized, separated by single spaces.</summary>
    public string Normalize(string text)
    {
        var words = new List<string>();
        SplitWords(text, words);
        return string.Join(' ', words);
    }

    protected override void EncodeText(ReadOnlySpan<char> text, bool afterSpecial, List<int> output)
    {
        var words = new List<string>();
        SplitWords(text, words);
        var buffer = new StringBuilder();
        foreach (string word in words)
        {
            if (_maxWordChars > 0 && word.EnumerateRunes().Count() > _maxWordChars)
            {
                output.Add(UnknownId);
                continue;
            }
            string piece = WordStart + word;
            int first = output.Count;
            for (int i = 0; i < piece.Length;)
            {
                int end = Math.Min(piece.Length, i + _maxPieceChars);
                int id = -1;
                for (; end > i; end--)
                    if (Lookup.TryGetValue(piece.AsSpan(i, end - i), out id)) break;
                if (end == i)
                {
                    // A word with any uncovered part is one unknown token.
                    output.RemoveRange(first, output.Count - first);
                    break;
                }
                output.Add(id);
                i = end;
            }
            if (output.Count == first) output.Add(UnknownId);
        }
    }

    /// <summary>BERT's basic tokenization, as llama.cpp does it.</summary>
    private void SplitWords(ReadOnlySpan<char> text, List<string> words)
    {
        var word = new StringBuilder();
        void Finish()
        {
            if (word.Length == 0) return;
            words.Add(word.ToString());
            word.Clear();
        }

        foreach (var original in text.EnumerateRunes())
        {
            var rune = _lowercase ? new Rune(UnicodeDecomposition.BaseOf(original.Value)) : original;
            if (Rune.IsWhiteSpace(rune))
            {
                Finish();
                continue;
            }
            var category = Rune.GetUnicodeCategory(rune);
            if (rune.Value is 0 or 0xFFFD || category is UnicodeCategory.Control or UnicodeCategory.Format
                    or UnicodeCategory.PrivateUse or UnicodeCategory.Surrogate)
                continue;
            if (_lowercase) rune = Rune.ToLowerInvariant(rune);
            if (IsPunctuation(category) || (rune.Value < 0x7F && IsSymbol(category)) || IsChinese(rune.Value))
            {
                Finish();
                word.Append(rune.ToString());
                Finish();
            }
            else word.Append(rune.ToString());
        }
        Finish();
    }

    private static bool IsPunctuation(UnicodeCategory c) => c is UnicodeCategory.ConnectorPunctuation or UnicodeCategory.DashPunctuation
        or UnicodeCategory.OpenPunctuation or UnicodeCategory.ClosePunctuation or UnicodeCategory.InitialQuotePunctuation
        or UnicodeCategory.FinalQuotePunctuation or UnicodeCategory.OtherPunctuation;

    private static bool IsSymbol(UnicodeCategory c) => c is UnicodeCategory.MathSymbol or UnicodeCategory.CurrencySymbol
        or UnicodeCategory.ModifierSymbol or UnicodeCategory.OtherSymbol;

    /// <summary>The CJK ideograph blocks BERT isolates (the 0x2B920 start copies Hugging Face's typo of 0x2B820).</summary>
    private static bool IsChinese(int c) =>
        c is >= 0x4E00 and <= 0x9FFF or >= 0x3400 and <= 0x4DBF or >= 0x20000 and <= 0x2A6DF or >= 0x2A700 and <= 0x2B73F
            or >= 0x2B740 and <= 0x2B81F or >= 0x2B920 and <= 0x2CEAF or >= 0xF900 and <= 0xFAFF or >= 0x2F800 and <= 0x2FA1F;
}
