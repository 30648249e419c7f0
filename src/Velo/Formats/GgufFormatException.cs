namespace Velo.Formats;

/// <summary>A GGUF file that is truncated, corrupted or otherwise not what the format allows.</summary>
public sealed class GgufFormatException : FormatException
{
    public GgufFormatException(string message) : base(message) { }
}
