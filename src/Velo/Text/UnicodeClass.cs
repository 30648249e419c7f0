using System.Globalization;
using System.Runtime.CompilerServices;

namespace Velo.Text;

/// <summary>The character classes the pre-tokenizer patterns test: <c>\p{L}</c>, <c>\p{N}</c>, <c>\s</c>, or anything else.</summary>
internal enum CharClass : byte
{
    Other,
    Letter,
    Number,
    Whitespace,
}

internal static class UnicodeClass
{
    // One byte per BMP character: a table lookup instead of a category lookup in the hot pre-tokenizer loops.
    private static readonly CharClass[] Bmp = BuildBmp();

    private static CharClass[] BuildBmp()
    {
        var table = new CharClass[0x10000];
        for (int c = 0; c < table.Length; c++) table[c] = Classify(c);
        return table;
    }

    private static CharClass Classify(int codepoint)
    {
        if (codepoint <= 0xFFFF && char.IsWhiteSpace((char)codepoint)) return CharClass.Whitespace;
        return CharUnicodeInfo.GetUnicodeCategory(codepoint) switch
        {
            UnicodeCategory.UppercaseLetter or UnicodeCategory.LowercaseLetter or UnicodeCategory.TitlecaseLetter
                or UnicodeCategory.ModifierLetter or UnicodeCategory.OtherLetter => CharClass.Letter,
            UnicodeCategory.DecimalDigitNumber or UnicodeCategory.LetterNumber or UnicodeCategory.OtherNumber => CharClass.Number,
            _ => CharClass.Other,
        };
    }

    /// <summary>Reads the code point at <paramref name="index"/>: its class and its length in UTF-16 units.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static CharClass At(ReadOnlySpan<char> text, int index, out int length)
    {
        char c = text[index];
        length = 1;
        if (!char.IsHighSurrogate(c) || index + 1 >= text.Length || !char.IsLowSurrogate(text[index + 1])) return Bmp[c];
        length = 2;
        return Classify(char.ConvertToUtf32(c, text[index + 1]));
    }
}
