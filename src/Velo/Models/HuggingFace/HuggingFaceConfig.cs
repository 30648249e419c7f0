using System.Text.Json;

namespace Velo.Models.HuggingFace;

/// <summary>
/// A Hugging Face model folder's <c>config.json</c>: which GGUF architecture its model class becomes (as llama.cpp's
/// convert_hf_to_gguf.py registers them) and its hyperparameters, each checked to be a positive number that fits.
/// </summary>
internal sealed class HuggingFaceConfig
{
    /// <summary>Model classes (<c>architectures[0]</c>) and the GGUF architecture each converts to; Mistral is written as llama, as llama.cpp writes it.</summary>
    public static readonly IReadOnlyDictionary<string, string> ArchitectureOf = new Dictionary<string, string>(StringComparer.Ordinal)
    {
        ["LlamaForCausalLM"] = "llama",
        ["MistralForCausalLM"] = "llama",
        ["Qwen2ForCausalLM"] = "qwen2",
        ["Qwen3ForCausalLM"] = "qwen3",
        ["GemmaForCausalLM"] = "gemma",
        ["Gemma2ForCausalLM"] = "gemma2",
        ["Gemma3ForCausalLM"] = "gemma3",
        ["Phi3ForCausalLM"] = "phi3",
    };

    /// <summary>A config.json larger than this is not a model configuration.</summary>
    private const long MaxConfigBytes = 16 << 20;

    private readonly JsonElement _root;

    private HuggingFaceConfig(string path, JsonElement root, string modelClass, string architecture)
    {
        Path = path;
        _root = root;
        ModelClass = modelClass;
        Architecture = architecture;
    }

    public string Path { get; }

    /// <summary>The Hugging Face model class, e.g. <c>LlamaForCausalLM</c>.</summary>
    public string ModelClass { get; }

    /// <summary>The GGUF <c>general.architecture</c> it converts to.</summary>
    public string Architecture { get; }

    public static HuggingFaceConfig Read(string folder)
    {
        string path = System.IO.Path.Combine(folder, "config.json");
        var root = ReadJson(path) ?? throw new FileNotFoundException($"{folder}: no config.json (not a Hugging Face model folder)", path);
        if (root.ValueKind != JsonValueKind.Object) throw new InvalidDataException($"{path}: not a JSON object");
        string? modelClass = root.TryGetProperty("architectures", out var a) && a.ValueKind == JsonValueKind.Array && a.GetArrayLength() > 0
                             && a[0].ValueKind == JsonValueKind.String ? a[0].GetString() : null;
        string? modelType = root.TryGetProperty("model_type", out var t) && t.ValueKind == JsonValueKind.String ? t.GetString() : null;
        if (modelClass == null || !ArchitectureOf.TryGetValue(modelClass, out string? architecture))
            throw new NotSupportedException(
                $"{path}: architecture '{modelClass ?? "(none)"}'{(modelType != null ? $" (model_type '{modelType}')" : "")} is not supported; " +
                $"Velo converts {string.Join(", ", ArchitectureOf.Keys)}");
        return new HuggingFaceConfig(path, root, modelClass, architecture);
    }

    /// <summary>A JSON file of the folder parsed, or null when it does not exist; a file too large to be a configuration is refused.</summary>
    public static JsonElement? ReadJson(string path)
    {
        var info = new FileInfo(path);
        if (!info.Exists) return null;
        if (info.Length > MaxConfigBytes) throw new InvalidDataException($"{path} is {info.Length} bytes, too large for a configuration file");
        try
        {
            using var json = JsonDocument.Parse(File.ReadAllBytes(path), new JsonDocumentOptions { MaxDepth = 64 });
            return json.RootElement.Clone();
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"{path} is not valid JSON: {e.Message}");
        }
    }

    public bool Has(string key) => _root.TryGetProperty(key, out var v) && v.ValueKind != JsonValueKind.Null;

    public JsonElement? Element(string key) => _root.TryGetProperty(key, out var v) && v.ValueKind != JsonValueKind.Null ? v : null;

    /// <summary>A positive integer that fits an int; <paramref name="defaultValue"/> when absent, an error naming the key otherwise.</summary>
    public int Int(string key, int? defaultValue = null)
    {
        if (Element(key) is not { } v)
            return defaultValue ?? throw new InvalidDataException($"{Path}: '{key}' is missing");
        return v.ValueKind == JsonValueKind.Number && v.TryGetInt64(out long n) && n is > 0 and <= int.MaxValue
            ? (int)n
            : throw new InvalidDataException($"{Path}: '{key}' is {v.GetRawText()}, not a positive integer of at most {int.MaxValue}");
    }

    /// <summary>A finite positive number, or <paramref name="defaultValue"/> when absent.</summary>
    public double Number(string key, double? defaultValue = null) => Number(_root, key, defaultValue, Path);

    public static double Number(JsonElement obj, string key, double? defaultValue, string where)
    {
        if (!obj.TryGetProperty(key, out var v) || v.ValueKind == JsonValueKind.Null)
            return defaultValue ?? throw new InvalidDataException($"{where}: '{key}' is missing");
        return v.ValueKind == JsonValueKind.Number && v.GetDouble() is var d && double.IsFinite(d) && d > 0
            ? d
            : throw new InvalidDataException($"{where}: '{key}' is {v.GetRawText()}, not a positive number");
    }

    public bool Bool(string key, bool defaultValue) =>
        Element(key) is { ValueKind: JsonValueKind.True or JsonValueKind.False } v ? v.GetBoolean() : defaultValue;

    public int Dim => Int("hidden_size");
    public int Layers => Int("num_hidden_layers");
    public int Heads => Int("num_attention_heads");
    public int KvHeads => Int("num_key_value_heads", Heads);
    public int FfnDim => Int("intermediate_size");

    /// <summary><c>head_dim</c> when the config gives it (Gemma, Qwen3), else hidden_size / heads.</summary>
    public int HeadDim => Int("head_dim", Dim / Heads);

    /// <summary><c>rope_scaling</c>'s type (<c>rope_type</c>, or the older <c>type</c>), or null when there is none.</summary>
    public string? RopeScalingType =>
        Element("rope_scaling") is { ValueKind: JsonValueKind.Object } s
            ? (s.TryGetProperty("rope_type", out var t) || s.TryGetProperty("type", out t)) && t.ValueKind == JsonValueKind.String ? t.GetString() : "(unnamed)"
            : null;

    public JsonElement RopeScaling => Element("rope_scaling") ?? throw new InvalidOperationException("no rope_scaling");
}
