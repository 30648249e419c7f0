using System.Text.Json;
using System.Text.RegularExpressions;

namespace Velo.Text;

/// <summary>
/// Reads a Hugging Face <c>tokenizer.json</c> (and the <c>tokenizer_config.json</c> beside it, when present) into
/// <see cref="TokenizerData"/>, the way llama.cpp's converter would write it to GGUF: byte-level BPE,
/// SentencePiece-style BPE and WordPiece models, added tokens as control or user-defined tokens, the split pattern
/// mapped to its llama.cpp name.
/// </summary>
public static class HuggingFaceTokenizerReader
{
    private const string Llama3HfPattern =
        @"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

    private const string Qwen2HfPattern =
        @"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

    private const string Gpt2HfPattern = @"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";

    /// <param name="fileOrFolder">A tokenizer.json file, or a folder holding one.</param>
    public static TokenizerData Read(string fileOrFolder)
    {
        string file = Directory.Exists(fileOrFolder) ? Path.Combine(fileOrFolder, "tokenizer.json") : fileOrFolder;
        if (!File.Exists(file)) throw new FileNotFoundException($"no tokenizer.json at {fileOrFolder}", file);
        string configFile = Path.Combine(Path.GetDirectoryName(Path.GetFullPath(file))!, "tokenizer_config.json");
        try
        {
            using var tokenizer = JsonDocument.Parse(File.ReadAllBytes(file));
            using var config = File.Exists(configFile) ? JsonDocument.Parse(File.ReadAllBytes(configFile)) : null;
            return Read(tokenizer.RootElement, config?.RootElement);
        }
        catch (Exception e) when (e is JsonException or InvalidOperationException or KeyNotFoundException or FormatException)
        {
            throw new InvalidDataException($"{file} is not a tokenizer.json this reader understands: {e.Message}", e);
        }
    }

    public static TokenizerData Read(JsonElement tokenizer, JsonElement? config)
    {
        var model = tokenizer.GetProperty("model");
        string type = model.TryGetProperty("type", out var t) ? t.GetString()! : InferModelType(model);
        var vocab = new Dictionary<int, string>();
        foreach (var entry in model.GetProperty("vocab").EnumerateObject())
            if (!vocab.TryAdd(entry.Value.GetInt32(), entry.Name))
                throw new InvalidDataException($"vocabulary id {entry.Value.GetInt32()} is given to both '{vocab[entry.Value.GetInt32()]}' and '{entry.Name}'");

        return type switch
        {
            "BPE" => ReadBpe(tokenizer, model, vocab, config),
            "WordPiece" => ReadWordPiece(tokenizer, model, vocab, config),
            _ => throw new NotSupportedException($"tokenizer.json model type '{type}' is not supported (only BPE and WordPiece)"),
        };
    }

    private static string InferModelType(JsonElement model) =>
        model.TryGetProperty("merges", out _) ? "BPE" : model.TryGetProperty("continuing_subword_prefix", out _) ? "WordPiece" : "unknown";

    private static TokenizerData ReadBpe(JsonElement tokenizer, JsonElement model, Dictionary<int, string> vocab, JsonElement? config)
    {
        if (!model.TryGetProperty("merges", out var mergesJson) || mergesJson.GetArrayLength() == 0)
            throw new InvalidDataException("the BPE tokenizer.json has no merges");
        var merges = new List<(string, string)>(mergesJson.GetArrayLength());
        foreach (var merge in mergesJson.EnumerateArray())
        {
            if (merge.ValueKind == JsonValueKind.Array)
            {
                if (merge.GetArrayLength() != 2) throw new InvalidDataException($"merge {merge} is not a pair");
                merges.Add((merge[0].GetString()!, merge[1].GetString()!));
                continue;
            }
            string text = merge.GetString()!;
            int space = text.Length > 1 ? text.IndexOf(' ', 1) : -1;
            if (space < 0) throw new InvalidDataException($"merge '{text}' is not two pieces separated by a space");
            merges.Add((text[..space], text[(space + 1)..]));
        }
        if (UsesByteLevel(tokenizer)) return ReadByteLevelBpe(tokenizer, model, vocab, config, merges);
        if (model.TryGetProperty("byte_fallback", out var fallback) && fallback.GetBoolean() || HasType(tokenizer, "pre_tokenizer", "Metaspace"))
            return ReadSentencePieceBpe(tokenizer, model, vocab, config, merges);
        throw new NotSupportedException("this BPE tokenizer.json is neither byte-level nor SentencePiece-style (no ByteLevel, byte_fallback or Metaspace)");
    }

    private static TokenizerData ReadByteLevelBpe(JsonElement tokenizer, JsonElement model, Dictionary<int, string> vocab, JsonElement? config,
        List<(string, string)> merges)
    {
        // NFC changes nothing in text that is already composed, which is nearly all text; llama.cpp skips it too.
        RequireNormalizers(tokenizer, "NFC");
        var patterns = SplitPatterns(tokenizer);
        string? pre = patterns.Count == 1
            ? patterns[0] switch
            {
                Llama3HfPattern => "llama-bpe",
                Qwen2HfPattern => "qwen2",
                Gpt2HfPattern => "gpt-2",
                _ => null,
            }
            : null;

        var (tokens, types, leftStrip, rightStrip) = Vocabulary(tokenizer, vocab);
        var ids = Ids(tokens);
        var template = TemplateSpecials(tokenizer, ids);
        int bos = ConfigToken(config, "bos_token", ids) ?? template.First ?? -1;
        bool llama3 = pre == "llama-bpe";
        return new TokenizerData
        {
            Kind = TokenizerKind.ByteLevelBpe,
            Tokens = tokens,
            TokenTypes = types,
            Merges = merges,
            PreTokenizer = pre,
            PreTokenizerPatterns = pre == null ? patterns.Select(ToDotNetPattern).ToList() : null,
            BosId = bos,
            EosId = ConfigToken(config, "eos_token", ids) ?? template.Last ?? -1,
            PadId = ConfigToken(config, "pad_token", ids) ?? -1,
            UnknownId = model.TryGetProperty("unk_token", out var unk) && unk.ValueKind == JsonValueKind.String ? ids.GetValueOrDefault(unk.GetString()!, -1) : -1,
            AddBos = ConfigBool(config, "add_bos_token") ?? (template.First != null || (llama3 && bos >= 0)),
            AddEos = ConfigBool(config, "add_eos_token") ?? template.Last != null,
            IgnoreMerges = model.TryGetProperty("ignore_merges", out var ignore) && ignore.ValueKind == JsonValueKind.True,
            LeftStripTokens = leftStrip,
            RightStripTokens = rightStrip,
        };
    }

    private static TokenizerData ReadWordPiece(JsonElement tokenizer, JsonElement model, Dictionary<int, string> vocab, JsonElement? config)
    {
        RequireNormalizers(tokenizer, "BertNormalizer");
        string prefix = model.TryGetProperty("continuing_subword_prefix", out var p) && p.ValueKind == JsonValueKind.String ? p.GetString()! : "##";
        // GGUF's convention, which the WordPiece tokenizer works in: word-initial pieces carry ▁, continuations nothing.
        var converted = vocab.ToDictionary(kv => kv.Key, kv =>
            kv.Value.StartsWith('[') && kv.Value.EndsWith(']') ? kv.Value
            : kv.Value.StartsWith(prefix, StringComparison.Ordinal) && kv.Value.Length > prefix.Length ? kv.Value[prefix.Length..]
            : "▁" + kv.Value);
        var (tokens, types, leftStrip, rightStrip) = Vocabulary(tokenizer, converted);
        var ids = Ids(tokens);
        var template = TemplateSpecials(tokenizer, ids);
        string? unkText = model.TryGetProperty("unk_token", out var unk) && unk.ValueKind == JsonValueKind.String ? unk.GetString() : null;
        bool lowercase = true;
        if (tokenizer.TryGetProperty("normalizer", out var normalizer) && normalizer.ValueKind == JsonValueKind.Object
            && normalizer.TryGetProperty("lowercase", out var lower))
            lowercase = lower.GetBoolean();
        int cls = ConfigToken(config, "cls_token", ids) ?? template.First ?? -1;
        int sep = ConfigToken(config, "sep_token", ids) ?? template.Last ?? -1;
        return new TokenizerData
        {
            Kind = TokenizerKind.WordPiece,
            Tokens = tokens,
            TokenTypes = types,
            BosId = cls,
            ClsId = cls,
            SepId = sep,
            UnknownId = unkText != null ? ids.GetValueOrDefault(unkText, -1) : -1,
            PadId = ConfigToken(config, "pad_token", ids) ?? -1,
            MaskId = ConfigToken(config, "mask_token", ids) ?? -1,
            AddBos = template.First != null,
            AddSep = template.Last != null,
            Lowercase = lowercase,
            MaxWordChars = model.TryGetProperty("max_input_chars_per_word", out var max) && max.ValueKind == JsonValueKind.Number ? max.GetInt32() : 100,
            LeftStripTokens = leftStrip,
            RightStripTokens = rightStrip,
        };
    }

    /// <summary>
    /// Llama 2 / Mistral style: spaces become ▁ (a Replace normalizer or a Metaspace pre-tokenizer), unknown
    /// characters fall back to &lt;0xXX&gt; pieces. Hugging Face ranks pairs where SentencePiece scores pieces; the
    /// converters list a piece's merges in its score order, so a piece scores minus the rank of its first merge.
    /// </summary>
    private static TokenizerData ReadSentencePieceBpe(JsonElement tokenizer, JsonElement model, Dictionary<int, string> vocab,
        JsonElement? config, List<(string, string)> merges)
    {
        bool addSpacePrefix = false, spacesReplaced = false;
        if (tokenizer.TryGetProperty("normalizer", out var normalizer))
            foreach (var component in Components(normalizer))
            {
                switch (component.GetProperty("type").GetString())
                {
                    case "Prepend" when component.GetProperty("prepend").GetString() == "▁":
                        addSpacePrefix = true;
                        break;
                    case "Replace" when component.GetProperty("pattern").TryGetProperty("String", out var from) && from.GetString() == " "
                                        && component.GetProperty("content").GetString() == "▁":
                        spacesReplaced = true;
                        break;
                    default:
                        throw new NotSupportedException($"normalizer {component} is not supported for SentencePiece-style BPE");
                }
            }
        if (tokenizer.TryGetProperty("pre_tokenizer", out var pre))
            foreach (var component in Components(pre))
            {
                // Gemma splits at spaces after its normalizer has turned every space into ▁: a split that never matches.
                if (spacesReplaced && component.GetProperty("type").GetString() == "Split"
                    && component.GetProperty("pattern").TryGetProperty("String", out var splitAt) && splitAt.GetString() == " ")
                    continue;
                if (component.GetProperty("type").GetString() != "Metaspace"
                    || (component.TryGetProperty("split", out var split) && split.GetBoolean())
                    || (component.TryGetProperty("replacement", out var mark) && mark.GetString() != "▁"))
                    throw new NotSupportedException($"pre-tokenizer {component} is not supported for SentencePiece-style BPE (only Metaspace without splitting)");
                string scheme = component.TryGetProperty("prepend_scheme", out var p) ? p.GetString()! : "always";
                addSpacePrefix |= scheme != "never";
            }

        var (tokens, types, leftStrip, rightStrip) = Vocabulary(tokenizer, vocab);
        var ids = Ids(tokens);
        for (int id = 0; id < tokens.Length; id++)
            if (types[id] == TokenType.Normal && tokens[id] is ['<', '0', 'x', _, _, '>'])
                types[id] = TokenType.Byte;
        int unknown = model.TryGetProperty("unk_token", out var unk) && unk.ValueKind == JsonValueKind.String ? ids.GetValueOrDefault(unk.GetString()!, -1) : -1;
        if (unknown >= 0) types[unknown] = TokenType.Unknown;

        var scores = new float[tokens.Length];
        Array.Fill(scores, float.NegativeInfinity);
        for (int rank = merges.Count - 1; rank >= 0; rank--)
        {
            var (left, right) = merges[rank];
            if (!ids.ContainsKey(left) || !ids.ContainsKey(right) || !ids.TryGetValue(left + right, out int merged))
                throw new InvalidDataException($"merge {rank} '{left} {right}' names a piece that is not in the vocabulary");
            scores[merged] = -rank;
        }

        var template = TemplateSpecials(tokenizer, ids);
        return new TokenizerData
        {
            Kind = TokenizerKind.SentencePiece,
            Tokens = tokens,
            TokenTypes = types,
            Scores = scores,
            BosId = ConfigToken(config, "bos_token", ids) ?? template.First ?? -1,
            EosId = ConfigToken(config, "eos_token", ids) ?? -1,
            PadId = ConfigToken(config, "pad_token", ids) ?? -1,
            UnknownId = unknown,
            AddBos = ConfigBool(config, "add_bos_token") ?? template.First != null,
            AddEos = ConfigBool(config, "add_eos_token") ?? template.Last != null,
            AddSpacePrefix = addSpacePrefix,
            LeftStripTokens = leftStrip,
            RightStripTokens = rightStrip,
        };
    }

    /// <summary>The full token list: the model vocabulary plus added tokens, which may extend it.</summary>
    private static (string[] Tokens, TokenType[] Types, HashSet<int> LeftStrip, HashSet<int> RightStrip) Vocabulary(
        JsonElement tokenizer, Dictionary<int, string> vocab)
    {
        var added = tokenizer.TryGetProperty("added_tokens", out var a) && a.ValueKind == JsonValueKind.Array ? a.EnumerateArray().ToList() : [];
        int count = Math.Max(vocab.Count == 0 ? 0 : vocab.Keys.Max() + 1, added.Count == 0 ? 0 : added.Max(e => e.GetProperty("id").GetInt32()) + 1);
        var tokens = new string[count];
        var types = new TokenType[count];
        foreach (var (id, text) in vocab)
        {
            if (id < 0) throw new InvalidDataException($"token '{text}' has negative id {id}");
            tokens[id] = text;
            types[id] = TokenType.Normal;
        }
        var leftStrip = new HashSet<int>();
        var rightStrip = new HashSet<int>();
        foreach (var entry in added)
        {
            int id = entry.GetProperty("id").GetInt32();
            string content = entry.GetProperty("content").GetString()!;
            bool special = entry.TryGetProperty("special", out var s) && s.GetBoolean();
            if (tokens[id] != null && vocab.ContainsKey(id) && tokens[id] != content)
                throw new InvalidDataException($"added token '{content}' reuses id {id} of vocabulary token '{tokens[id]}'");
            tokens[id] = content;
            // Like llama.cpp's converter: special, or looking like a chat marker, makes a control token.
            types[id] = special || LooksSpecial(content) ? TokenType.Control : TokenType.UserDefined;
            if (entry.TryGetProperty("lstrip", out var l) && l.GetBoolean()) leftStrip.Add(id);
            if (entry.TryGetProperty("rstrip", out var r) && r.GetBoolean()) rightStrip.Add(id);
        }
        for (int id = 0; id < count; id++)
            if (tokens[id] == null) throw new InvalidDataException($"the vocabulary has no token with id {id} (ids must be contiguous)");
        return (tokens, types, leftStrip, rightStrip);
    }

    private static bool IsBracketed(string text) => text.StartsWith('[') && text.EndsWith(']');

    private static bool LooksSpecial(string text) =>
        text is "<pad>" or "<mask>" or "<2mass>" or "[@BOS@]"
        || (text.StartsWith("<|", StringComparison.Ordinal) && text.EndsWith("|>", StringComparison.Ordinal))
        || (text.StartsWith("<｜", StringComparison.Ordinal) && text.EndsWith("｜>", StringComparison.Ordinal))
        || (text.StartsWith("<unused", StringComparison.Ordinal) && text.EndsWith('>'));

    private static Dictionary<string, int> Ids(string[] tokens)
    {
        var ids = new Dictionary<string, int>(tokens.Length, StringComparer.Ordinal);
        for (int id = 0; id < tokens.Length; id++) ids.TryAdd(tokens[id], id);
        return ids;
    }

    private static void RequireNormalizers(JsonElement tokenizer, params string[] supported)
    {
        if (!tokenizer.TryGetProperty("normalizer", out var normalizer)) return;
        foreach (var component in Components(normalizer))
        {
            string type = component.GetProperty("type").GetString()!;
            if (!supported.Contains(type))
                throw new NotSupportedException($"normalizer '{type}' is not supported for this model type (only {string.Join(", ", supported)})");
        }
    }

    private static bool UsesByteLevel(JsonElement tokenizer) =>
        HasType(tokenizer, "pre_tokenizer", "ByteLevel") || HasType(tokenizer, "decoder", "ByteLevel");

    private static bool HasType(JsonElement tokenizer, string property, string type) =>
        tokenizer.TryGetProperty(property, out var element) && Components(element).Any(c => c.GetProperty("type").GetString() == type);

    /// <summary>A component and, for a <c>Sequence</c>, the components inside it.</summary>
    private static IEnumerable<JsonElement> Components(JsonElement element)
    {
        if (element.ValueKind != JsonValueKind.Object) yield break;
        if (element.GetProperty("type").GetString() == "Sequence")
        {
            foreach (string list in (string[])["pretokenizers", "decoders", "normalizers", "processors"])
                if (element.TryGetProperty(list, out var items))
                    foreach (var item in items.EnumerateArray())
                        foreach (var inner in Components(item)) yield return inner;
        }
        else yield return element;
    }

    /// <summary>The split patterns of the pre-tokenizer, in the order they apply.</summary>
    private static List<string> SplitPatterns(JsonElement tokenizer)
    {
        var patterns = new List<string>();
        if (!tokenizer.TryGetProperty("pre_tokenizer", out var pre)) return patterns;
        foreach (var component in Components(pre))
        {
            switch (component.GetProperty("type").GetString())
            {
                case "Split":
                    string behavior = component.TryGetProperty("behavior", out var b) ? b.GetString()! : "Isolated";
                    bool invert = component.TryGetProperty("invert", out var inv) && inv.GetBoolean();
                    if (behavior != "Isolated" || invert)
                        throw new NotSupportedException($"Split pre-tokenizer with behavior '{behavior}'{(invert ? " inverted" : "")} is not supported (only Isolated)");
                    var pattern = component.GetProperty("pattern");
                    patterns.Add(pattern.TryGetProperty("Regex", out var regex) ? regex.GetString()! : Regex.Escape(pattern.GetProperty("String").GetString()!));
                    break;
                case "ByteLevel":
                    if (component.TryGetProperty("add_prefix_space", out var prefix) && prefix.GetBoolean())
                        throw new NotSupportedException("ByteLevel pre-tokenizer with add_prefix_space is not supported");
                    if (!component.TryGetProperty("use_regex", out var useRegex) || useRegex.GetBoolean()) patterns.Add(Gpt2HfPattern);
                    break;
                case "Digits":
                    patterns.Add(component.TryGetProperty("individual_digits", out var single) && single.GetBoolean() ? @"\p{N}" : @"\p{N}+");
                    break;
                case string other:
                    throw new NotSupportedException($"pre-tokenizer '{other}' is not supported");
            }
        }
        return patterns;
    }

    /// <summary>
    /// Spells the contraction group without <c>(?i:)</c>: .NET's case-insensitive matching also folds characters
    /// such as the long s (ſ) and the Kelvin sign, which the Rust regex crate does not.
    /// </summary>
    private static string ToDotNetPattern(string pattern) => pattern.Replace(
        "(?i:'s|'t|'re|'ve|'m|'ll|'d)", "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])", StringComparison.Ordinal);

    /// <summary>The special tokens a <c>TemplateProcessing</c> post-processor puts before and after a single sequence.</summary>
    private static (int? First, int? Last) TemplateSpecials(JsonElement tokenizer, Dictionary<string, int> ids)
    {
        if (!tokenizer.TryGetProperty("post_processor", out var post)) return (null, null);
        var template = Components(post).FirstOrDefault(c => c.GetProperty("type").GetString() == "TemplateProcessing");
        if (template.ValueKind != JsonValueKind.Object) return (null, null);
        var single = template.GetProperty("single").EnumerateArray().ToList();
        int? Special(JsonElement item) =>
            item.TryGetProperty("SpecialToken", out var s) ? ids.TryGetValue(s.GetProperty("id").GetString()!, out int id) ? id
                : throw new InvalidDataException($"post-processor names special token '{s.GetProperty("id").GetString()}', which is not in the vocabulary")
            : null;
        return single.Count == 0 ? (null, null) : (Special(single[0]), single.Count > 1 ? Special(single[^1]) : null);
    }

    private static int? ConfigToken(JsonElement? config, string key, Dictionary<string, int> ids)
    {
        if (config is not { } c || !c.TryGetProperty(key, out var value)) return null;
        string? text = value.ValueKind switch
        {
            JsonValueKind.String => value.GetString(),
            JsonValueKind.Object when value.TryGetProperty("content", out var content) => content.GetString(),
            _ => null,
        };
        if (text == null) return null;
        return ids.TryGetValue(text, out int id) ? id : throw new InvalidDataException($"tokenizer_config.json names {key} '{text}', which is not in the vocabulary");
    }

    private static bool? ConfigBool(JsonElement? config, string key) =>
        config is { } c && c.TryGetProperty(key, out var value) && value.ValueKind is JsonValueKind.True or JsonValueKind.False
            ? value.GetBoolean() : null;
}
