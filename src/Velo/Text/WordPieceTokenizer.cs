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
    private readonly WordCache _wordCache = new();

    public WordPieceTokenizer(TokenizerData data) : base(data)
    {
        if (data.Kind != TokenizerKind.WordPiece) throw new ArgumentException($"not a WordPiece vocabulary: {data.Kind}");
        if (UnknownId < 0) throw new InvalidDataException("WordPiece vocabulary has no unknown token");
        var pieces = Enumerable.Range(0, VocabSize).Select(TokenText).ToList();
        if (!pieces.Any(t => t.Length > 1 && t[0] == WordStart))
            throw new InvalidDataException("WordPiece vocabulary has no word-initial pieces (▁-prefixed, as GGUF stores them)");
        _maxPieceChars = pieces.Max(t => t.Length);
        _lowercase = data.Lowercase;
        _maxWordChars = data.MaxWordChars;
        BuildPieces();
    }

    protected override bool StripsLeadingSpace => true;

    /// <summary>None: the normalizer drops whitespace, accents and control characters, so any amount of input can
    /// yield no token at all.</summary>
    public override int MaxInputBytesPerToken => 0;

    protected override byte[] DecodePiece(int id, string text) => Encoding.UTF8.GetBytes(text.Replace(WordStart, ' '));

    /// <summary>The text as the tokenizer sees it: its words, normalized, separated by single spaces.</summary>
    public string Normalize(string text)
    {
        var scratch = new Scratch();
        SplitWords(text, scratch);
        return string.Join(' ', scratch.Words.Select(w => new string(scratch.Chars, w.Start, w.Length)));
    }

    /// <summary>Per-thread buffers: the normalized text, its words, and the word being matched.</summary>
    private sealed class Scratch
    {
        public char[] Chars = new char[256];
        public int Length;
        public readonly List<(int Start, int Length)> Words = [];
        public char[] Piece = new char[64];

        public void Append(Rune rune)
        {
            if (Length + 2 > Chars.Length) Array.Resize(ref Chars, Chars.Length * 2);
            Length += rune.EncodeToUtf16(Chars.AsSpan(Length));
        }
    }

    [ThreadStatic] private static Scratch? t_scratch;

    protected override void EncodeText(ReadOnlySpan<char> text, bool afterSpecial, List<int> output)
    {
        var scratch = t_scratch ??= new Scratch();
        SplitWords(text, scratch);
        foreach (var (start, length) in scratch.Words)
        {
            var word = scratch.Chars.AsSpan(start, length);
            if (_wordCache.TryAppend(word, output)) continue;
            int first = output.Count;
            EncodeWord(word, output, scratch);
            _wordCache.Add(word, output, first);
        }
    }

    /// <summary>Covers the word greedily with the longest pieces; any uncovered part makes the whole word [UNK].</summary>
    private void EncodeWord(ReadOnlySpan<char> word, List<int> output, Scratch scratch)
    {
        if (_maxWordChars > 0 && RuneCount(word) > _maxWordChars)
        {
            output.Add(UnknownId);
            return;
        }
        if (scratch.Piece.Length < word.Length + 1) scratch.Piece = new char[word.Length * 2 + 1];
        var piece = scratch.Piece.AsSpan(0, word.Length + 1);
        piece[0] = WordStart;
        word.CopyTo(piece[1..]);
        int first = output.Count;
        for (int i = 0; i < piece.Length;)
        {
            int end = Math.Min(piece.Length, i + _maxPieceChars);
            int id = -1;
            for (; end > i; end--)
                if (Lookup.TryGetValue(piece[i..end], out id)) break;
            if (end == i)
            {
                output.RemoveRange(first, output.Count - first);
                output.Add(UnknownId);
                return;
            }
            output.Add(id);
            i = end;
        }
    }

    private static int RuneCount(ReadOnlySpan<char> text)
    {
        int count = 0;
        foreach (var _ in text.EnumerateRunes()) count++;
        return count;
    }

    /// <summary>BERT's basic tokenization, as llama.cpp does it: fills the scratch with normalized text and its words.</summary>
    private void SplitWords(ReadOnlySpan<char> text, Scratch scratch)
    {
        scratch.Length = 0;
        scratch.Words.Clear();
        int wordStart = 0;
        void Finish()
        {
            if (scratch.Length > wordStart) scratch.Words.Add((wordStart, scratch.Length - wordStart));
            wordStart = scratch.Length;
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
                scratch.Append(rune);
                Finish();
            }
            else scratch.Append(rune);
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
