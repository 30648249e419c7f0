using Velo.Formats;

namespace Velo.Text;

/// <summary>Creates tokenizers from GGUF metadata, Hugging Face files or plain vocabulary data.</summary>
public static class Tokenizer
{
    public static ITokenizer FromGguf(GgufMetadata metadata) => FromData(GgufTokenizerReader.Read(metadata));

    public static ITokenizer FromGguf(string path)
    {
        using var file = GgufFile.Open(path);
        return FromGguf(file.Metadata);
    }

    public static TokenizerBase FromData(TokenizerData data) => data.Kind switch
    {
        TokenizerKind.SentencePiece => new SentencePieceTokenizer(data),
        _ => throw new NotSupportedException($"{data.Kind} tokenizers are not supported yet"),
    };
}
