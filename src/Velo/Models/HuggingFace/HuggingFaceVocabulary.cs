using System.Text.Json;
using Velo.Formats;
using Velo.Text;

namespace Velo.Models.HuggingFace;

/// <summary>
/// A model folder's tokenizer as GGUF <c>tokenizer.*</c> metadata: the vocabulary from <c>tokenizer.json</c> and
/// <c>tokenizer_config.json</c> (read as Velo reads them everywhere), padded to the embedding's rows with
/// <c>[PADn]</c> tokens as llama.cpp pads; the chat template(s) of <c>tokenizer_config.json</c> or
/// <c>chat_template.jinja</c>; and special ids the tokenizer files leave out taken from <c>config.json</c> and
/// <c>generation_config.json</c>.
/// </summary>
internal static class HuggingFaceVocabulary
{
    public static void Write(string folder, int vocabulary, GgufWriter writer)
    {
        if (!File.Exists(Path.Combine(folder, "tokenizer.json")))
            throw new FileNotFoundException($"{folder}: no tokenizer.json (Velo reads a model's vocabulary from tokenizer.json; tokenizer.model alone is not enough)");
        var data = HuggingFaceTokenizerReader.Read(folder);
        if (data.Tokens.Length > vocabulary)
            throw new InvalidDataException($"{folder}: tokenizer.json has {data.Tokens.Length} tokens, more than the {vocabulary} rows of the token embedding");
        data = WithGenerationIds(folder, data);
        GgufTokenizerMetadata.Write(Padded(data, vocabulary), writer);
        WriteChatTemplates(folder, writer);
    }

    private static TokenizerData Padded(TokenizerData data, int vocabulary)
    {
        int count = data.Tokens.Length;
        if (count == vocabulary) return data;
        var tokens = new string[vocabulary];
        data.Tokens.CopyTo(tokens, 0);
        for (int i = count; i < vocabulary; i++) tokens[i] = $"[PAD{i}]";
        var types = new TokenType[vocabulary];
        (data.TokenTypes ?? Enumerable.Repeat(TokenType.Normal, count).ToArray()).CopyTo(types, 0);
        types.AsSpan(count).Fill(TokenType.Unused);
        float[]? scores = null;
        if (data.Scores != null)
        {
            scores = new float[vocabulary];
            data.Scores.CopyTo(scores, 0);
            scores.AsSpan(count).Fill(-1000f);
        }
        return data with { Tokens = tokens, TokenTypes = types, Scores = scores };
    }

    /// <summary>BOS and EOS from config.json / generation_config.json where the tokenizer files name none; a second EOS id of generation_config.json becomes the end-of-turn token.</summary>
    private static TokenizerData WithGenerationIds(string folder, TokenizerData data)
    {
        foreach (string file in (string[])["generation_config.json", "config.json"])
        {
            if (HuggingFaceConfig.ReadJson(Path.Combine(folder, file)) is not { ValueKind: JsonValueKind.Object } json) continue;
            var eos = Ids(json, "eos_token_id", data.Tokens.Length);
            var bos = Ids(json, "bos_token_id", data.Tokens.Length);
            if (data.BosId < 0 && bos.Count > 0) data = data with { BosId = bos[0] };
            if (data.EosId < 0 && eos.Count > 0) data = data with { EosId = eos[0] };
            if (data.EotId < 0 && eos.FirstOrDefault(id => id != data.EosId, -1) is var eot and >= 0) data = data with { EotId = eot };
        }
        return data;
    }

    private static List<int> Ids(JsonElement json, string key, int vocabulary)
    {
        if (!json.TryGetProperty(key, out var value)) return [];
        IEnumerable<JsonElement> items = value.ValueKind == JsonValueKind.Array ? value.EnumerateArray() : [value];
        return items.Where(v => v.ValueKind == JsonValueKind.Number && v.TryGetInt32(out int id) && id >= 0 && id < vocabulary)
            .Select(v => v.GetInt32()).ToList();
    }

    /// <summary>
    /// <c>chat_template</c> as a string, or a list of named templates (the one named <c>default</c> becomes
    /// <c>tokenizer.chat_template</c>, the others <c>tokenizer.chat_template.NAME</c>), as llama.cpp writes them;
    /// <c>chat_template.jinja</c> when the config has none.
    /// </summary>
    private static void WriteChatTemplates(string folder, GgufWriter writer)
    {
        var config = HuggingFaceConfig.ReadJson(Path.Combine(folder, "tokenizer_config.json"));
        if (config is { ValueKind: JsonValueKind.Object } c && c.TryGetProperty("chat_template", out var template))
        {
            if (template.ValueKind == JsonValueKind.String)
            {
                writer.Set("tokenizer.chat_template", template.GetString()!);
                return;
            }
            if (template.ValueKind == JsonValueKind.Array)
            {
                var names = new List<string>();
                foreach (var item in template.EnumerateArray())
                {
                    if (item.ValueKind != JsonValueKind.Object || !item.TryGetProperty("name", out var n) || n.ValueKind != JsonValueKind.String
                        || !item.TryGetProperty("template", out var t) || t.ValueKind != JsonValueKind.String)
                        throw new InvalidDataException($"{folder}/tokenizer_config.json: chat_template list items must be {{\"name\": ..., \"template\": ...}}");
                    string name = n.GetString()!;
                    if (name == "default") writer.Set("tokenizer.chat_template", t.GetString()!);
                    else
                    {
                        writer.Set($"tokenizer.chat_template.{name}", t.GetString()!);
                        names.Add(name);
                    }
                }
                if (names.Count > 0) writer.Set("tokenizer.chat_templates", names.ToArray());
                return;
            }
        }
        string jinja = Path.Combine(folder, "chat_template.jinja");
        if (File.Exists(jinja)) writer.Set("tokenizer.chat_template", File.ReadAllText(jinja));
    }
}
