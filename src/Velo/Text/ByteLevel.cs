namespace Velo.Text;

/// <summary>
/// GPT-2's reversible byte-to-character map: printable Latin-1 bytes stand for themselves, the other 68 bytes take
/// the characters from U+0100 upward, so every byte string is a string of visible characters.
/// </summary>
public static class ByteLevel
{
    private static readonly char[] ByteToChar = new char[256];
    private static readonly short[] CharToByte = new short[256 + 68];

    static ByteLevel()
    {
        Array.Fill(CharToByte, (short)-1);
        int next = 256;
        for (int b = 0; b < 256; b++)
        {
            bool printable = b is >= '!' and <= '~' or >= 0xA1 and <= 0xAC or >= 0xAE and <= 0xFF;
            char c = printable ? (char)b : (char)next++;
            ByteToChar[b] = c;
            CharToByte[c] = (short)b;
        }
    }

    public static char Encode(byte b) => ByteToChar[b];

    /// <summary>The byte a character stands for, or -1 for characters outside the map.</summary>
    public static int Decode(char c) => c < CharToByte.Length ? CharToByte[c] : -1;
}
