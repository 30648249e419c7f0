namespace Velo.Text;

/// <summary>
/// The base character of a code point's canonical decomposition (NFD), e.g. Ä → A, й → и, 가 → ᄀ. BERT's uncased
/// normalization keeps only this character, which removes accents.
/// </summary>
internal static partial class UnicodeDecomposition
{
    private const int HangulFirst = 0xAC00, HangulLast = 0xD7A3, HangulLeadBase = 0x1100, HangulPerLead = 21 * 28;

    public static int BaseOf(int codepoint)
    {
        if (codepoint is >= HangulFirst and <= HangulLast) return HangulLeadBase + (codepoint - HangulFirst) / HangulPerLead;
        if (codepoint < 0xC0) return codepoint;
        int lo = 0, hi = FirstOfDecomposition.Length / 2 - 1;
        while (lo <= hi)
        {
            int mid = (lo + hi) >>> 1;
            int key = FirstOfDecomposition[2 * mid];
            if (key == codepoint) return FirstOfDecomposition[2 * mid + 1];
            if (key < codepoint) lo = mid + 1;
            else hi = mid - 1;
        }
        return codepoint;
    }
}
