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

    /// <summary>
    /// The tokenizer of a model given the way a user names it: a <c>.gguf</c> file, a <c>tokenizer.json</c>, or a
    /// folder holding <c>tokenizer.json</c>.
    /// </summary>
    public static ITokenizer Load(string path)
    {
        if (File.Exists(path) && path.EndsWith(".gguf", StringComparison.OrdinalIgnoreCase)) return FromGguf(path);
        if (Directory.Exists(path) || File.Exists(path)) return FromHuggingFace(path);
        throw new FileNotFoundException($"no tokenizer at {path}: expected a .gguf file, a tokenizer.json, or a folder holding one", path);
    }

    public static TokenizerBase FromData(TokenizerData data) => data.Kind switch
    {
        TokenizerKind.SentencePiece => new SentencePieceTokenizer(data),
        TokenizerKind.ByteLevelBpe => new ByteLevelBpeTokenizer(data),
        TokenizerKind.WordPiece => new WordPieceTokenizer(data),
        _ => throw new ArgumentOutOfRangeException(nameof(data), data.Kind, "unknown tokenizer kind"),
    };
}
