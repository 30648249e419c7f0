using Velo.Formats;

namespace Velo.Text;

/// <summary>Creates tokenizers from GGUF metadata, Hugging Face files or plain vocabulary data.</summary>
public static class Tokenizer
{
    public static ITokenizer FromGguf(GgufMetadata metadata) => FromData(GgufTokenizerMetadata.Read(metadata));

    public static ITokenizer FromGguf(string path)
    {
        using var file = GgufFile.Open(path);
        return FromGguf(file.Metadata);
    }

    /// <param name="fileOrFolder">A tokenizer.json file, or a folder holding tokenizer.json and tokenizer_config.json.</param>
    public static ITokenizer FromHuggingFace(string fileOrFolder) => FromData(HuggingFaceTokenizerReader.Read(fileOrFolder));

    public static TokenizerBase FromData(TokenizerData data) => data.Kind switch
    {
        TokenizerKind.SentencePiece => new SentencePieceTokenizer(data),
        TokenizerKind.ByteLevelBpe => new ByteLevelBpeTokenizer(data),
        TokenizerKind.WordPiece => new WordPieceTokenizer(data),
        _ => throw new ArgumentOutOfRangeException(nameof(data), data.Kind, "unknown tokenizer kind"),
    };
}
