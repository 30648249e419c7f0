using Velo.Formats;

namespace Velo.Text;

/// <summary>
/// Reads <c>tokenizer.ggml.*</c> metadata into <see cref="TokenizerData"/>, with llama.cpp's defaults for keys a
/// file leaves out, and writes it back. The only place the tokenizers touch GGUF.
/// </summary>
public static class GgufTokenizerMetadata
{
    // Pre-tokenizer names for which llama.cpp adds BOS by default and skips merging words that are whole tokens.
    private static readonly HashSet<string> Llama3Family =
        ["llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral", "midm-2.0", "lfm2"];

    public static TokenizerData Read(GgufMetadata metadata)
    {
        string model = metadata.GetString("tokenizer.ggml.model")
            ?? throw new InvalidDataException("the GGUF file has no tokenizer (tokenizer.ggml.model is missing)");
        string? pre = metadata.GetString("tokenizer.ggml.pre");
        string[] tokens = metadata.GetStringArray("tokenizer.ggml.tokens")
            ?? throw new InvalidDataException("the GGUF file has no token list (tokenizer.ggml.tokens is missing)");
        // Scores and types are indexed by token id here (the model-specific stripping below) and in every tokenizer.
        float[]? scores = metadata.GetFloat32Array("tokenizer.ggml.scores");
        if (scores != null && scores.Length != tokens.Length)
            throw new InvalidDataException($"tokenizer.ggml.scores has {scores.Length} entries for the {tokens.Length} tokens of tokenizer.ggml.tokens");
        int[]? rawTypes = metadata.GetInt32Array("tokenizer.ggml.token_type");
        if (rawTypes != null && rawTypes.Length != tokens.Length)
            throw new InvalidDataException($"tokenizer.ggml.token_type has {rawTypes.Length} entries for the {tokens.Length} tokens of tokenizer.ggml.tokens");
        TokenType[]? types = rawTypes?.Select(t => t is >= 0 and <= 6 ? (TokenType)t : TokenType.Undefined).ToArray();

        var data = model switch
        {
            "llama" => new TokenizerData
            {
                Kind = TokenizerKind.SentencePiece, Tokens = tokens,
                BosId = 1, EosId = 2, UnknownId = 0, AddBos = true, AddSpacePrefix = true,
            },
            "bert" => new TokenizerData
            {
                Kind = TokenizerKind.WordPiece, Tokens = tokens,
                BosId = 101, UnknownId = 100, SepId = 102, PadId = 0, MaskId = 103, ClsId = 101,
                AddBos = true, AddSep = true, Lowercase = true,
            },
            "gpt2" => new TokenizerData
            {
                Kind = TokenizerKind.ByteLevelBpe, Tokens = tokens, PreTokenizer = pre ?? "default",
                Merges = ReadMerges(metadata),
                // llama.cpp falls back to id 11 here, an arbitrary token; none is the honest default.
                BosId = -1, EosId = -1,
                AddBos = pre != null && (Llama3Family.Contains(pre) || pre is "tekken" or "chameleon"),
                IgnoreMerges = pre != null && (Llama3Family.Contains(pre) || pre == "tekken"),
            },
            _ => throw new NotSupportedException($"tokenizer model '{model}' is not supported (only llama, gpt2 and bert)"),
        };
        data = data with
        {
            Scores = scores,
            TokenTypes = types,
            BosId = SpecialId(metadata, "bos_token_id", tokens.Length, data.BosId),
            EosId = SpecialId(metadata, "eos_token_id", tokens.Length, data.EosId),
            EotId = SpecialId(metadata, "eot_token_id", tokens.Length, data.EotId),
            EomId = SpecialId(metadata, "eom_token_id", tokens.Length, data.EomId),
            UnknownId = SpecialId(metadata, "unknown_token_id", tokens.Length, data.UnknownId),
            SepId = SpecialId(metadata, "seperator_token_id", tokens.Length, SpecialId(metadata, "separator_token_id", tokens.Length, data.SepId)),
            PadId = SpecialId(metadata, "padding_token_id", tokens.Length, data.PadId),
            ClsId = SpecialId(metadata, "cls_token_id", tokens.Length, data.ClsId),
            MaskId = SpecialId(metadata, "mask_token_id", tokens.Length, data.MaskId),
            AddBos = metadata.TryGetBool("tokenizer.ggml.add_bos_token", out bool addBos) ? addBos : data.AddBos,
            AddEos = metadata.TryGetBool("tokenizer.ggml.add_eos_token", out bool addEos) ? addEos : data.AddEos,
            AddSep = metadata.TryGetBool("tokenizer.ggml.add_sep_token", out bool addSep) ? addSep : data.AddSep,
            AddSpacePrefix = metadata.TryGetBool("tokenizer.ggml.add_space_prefix", out bool prefix) ? prefix : data.AddSpacePrefix,
        };
        return WithModelSpecificStripping(data, metadata.GetString("general.name"));
    }

    private static List<(string, string)> ReadMerges(GgufMetadata metadata)
    {
        string[] merges = metadata.GetStringArray("tokenizer.ggml.merges")
            ?? throw new InvalidDataException("the byte-level BPE tokenizer has no merges (tokenizer.ggml.merges is missing)");
        var pairs = new List<(string, string)>(merges.Length);
        foreach (string merge in merges)
        {
            // The first piece may itself be a space in non-byte-level vocabularies, so the split starts at 1.
            int space = merge.Length > 1 ? merge.IndexOf(' ', 1) : -1;
            if (space < 0) throw new InvalidDataException($"merge '{merge}' is not two pieces separated by a space");
            pairs.Add((merge[..space], merge[(space + 1)..]));
        }
        return pairs;
    }

    /// <summary>An id from metadata, or the default; llama.cpp ignores ids outside the vocabulary the same way.</summary>
    private static int SpecialId(GgufMetadata metadata, string key, int vocabSize, int defaultId) =>
        metadata.TryGetUInt32("tokenizer.ggml." + key, out uint id) && id < vocabSize ? (int)id : defaultId;

    /// <summary>Phi-3's chat markers eat the whitespace after them; GGUF does not record that, llama.cpp knows it by name.</summary>
    private static TokenizerData WithModelSpecificStripping(TokenizerData data, string? modelName)
    {
        string name = (modelName ?? "").ToLowerInvariant();
        if (!name.Contains("phi-3") && !name.Contains("phi3")) return data;
        var strip = new HashSet<int>();
        for (int id = 0; id < data.Tokens.Length; id++)
            if (data.TokenTypes?[id] is TokenType.Control or TokenType.UserDefined or TokenType.Unknown || data.Tokens[id] == "</s>")
                strip.Add(id);
        foreach (string keep in (string[])["<unk>", "<s>", "<|endoftext|>"])
            strip.Remove(Array.IndexOf(data.Tokens, keep));
        return data with { RightStripTokens = strip };
    }

    /// <summary>Writes the vocabulary as <c>tokenizer.ggml.*</c> metadata, the way llama.cpp's converter does.</summary>
    public static void Write(TokenizerData data, GgufWriter writer)
    {
        if (data.PreTokenizerPatterns is { Count: > 0 })
            throw new NotSupportedException("GGUF names pre-tokenizers; custom split patterns cannot be stored");
        writer.Set("tokenizer.ggml.model", data.Kind switch
        {
            TokenizerKind.SentencePiece => "llama",
            TokenizerKind.ByteLevelBpe => "gpt2",
            TokenizerKind.WordPiece => "bert",
            _ => throw new ArgumentOutOfRangeException(nameof(data), data.Kind, "unknown tokenizer kind"),
        });
        if (data.PreTokenizer != null) writer.Set("tokenizer.ggml.pre", data.PreTokenizer);
        writer.Set("tokenizer.ggml.tokens", data.Tokens);
        if (data.Scores != null) writer.Set("tokenizer.ggml.scores", data.Scores);
        if (data.TokenTypes != null) writer.Set("tokenizer.ggml.token_type", data.TokenTypes.Select(t => (int)t).ToArray());
        if (data.Merges != null) writer.Set("tokenizer.ggml.merges", data.Merges.Select(m => m.Left + " " + m.Right).ToArray());
        foreach (var (key, id) in (ReadOnlySpan<(string, int)>)[
                     ("bos_token_id", data.BosId), ("eos_token_id", data.EosId), ("eot_token_id", data.EotId),
                     ("eom_token_id", data.EomId), ("unknown_token_id", data.UnknownId), ("seperator_token_id", data.SepId),
                     ("padding_token_id", data.PadId), ("cls_token_id", data.ClsId), ("mask_token_id", data.MaskId)])
            if (id >= 0) writer.Set("tokenizer.ggml." + key, (uint)id);
        writer.Set("tokenizer.ggml.add_bos_token", data.AddBos);
        writer.Set("tokenizer.ggml.add_eos_token", data.AddEos);
        if (data.Kind == TokenizerKind.WordPiece) writer.Set("tokenizer.ggml.add_sep_token", data.AddSep);
        if (data.Kind == TokenizerKind.SentencePiece) writer.Set("tokenizer.ggml.add_space_prefix", data.AddSpacePrefix);
    }
}
