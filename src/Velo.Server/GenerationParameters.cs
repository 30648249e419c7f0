using System.Text.Json;
using Velo.Generation;
using Velo.Inference;

namespace Velo.Server;

/// <summary>The request fields chat and text completions share: length, sampling, stop strings and output constraints.</summary>
internal static class GenerationParameters
{
    private const int MaxStopStrings = 4;

    /// <summary>
    /// Builds the generation options. Unset sampling fields take llama.cpp server's defaults (temperature 0.8,
    /// top-k 40, top-p 0.95, min-p 0.05), which suit small local models better than pure temperature-1 sampling.
    /// </summary>
    public static GenerationOptions Parse(RequestBody body, int contextLength, IReadOnlyList<string> extraStops)
    {
        body.Integer("n", 1, 1); // only one choice per request is supported
        RefuseUnsupported(body);
        long? maxTokens = body.Integer("max_completion_tokens", 1, contextLength) ?? body.Integer("max_tokens", 1, contextLength);
        var defaults = new SamplerOptions();
        var sampling = new SamplerOptions
        {
            Temperature = (float)(body.Number("temperature", 0, 2) ?? defaults.Temperature),
            TopP = (float)(body.Number("top_p", 0, 1) ?? defaults.TopP),
            TopK = (int)(body.Integer("top_k", 0, int.MaxValue) ?? defaults.TopK),
            MinP = (float)(body.Number("min_p", 0, 1) ?? defaults.MinP),
            RepeatPenalty = (float)(body.Number("repeat_penalty", 0.01, 10) ?? defaults.RepeatPenalty),
            PresencePenalty = (float)(body.Number("presence_penalty", -2, 2) ?? 0),
            FrequencyPenalty = (float)(body.Number("frequency_penalty", -2, 2) ?? 0),
            Seed = body.Integer("seed", long.MinValue, long.MaxValue) is long seed ? unchecked((ulong)seed) : null,
        };
        // top_p = 0 is legal in OpenAI's API and means "only the most likely token".
        if (sampling.TopP == 0) sampling = sampling with { TopP = 1, TopK = 1 };
        return new GenerationOptions
        {
            MaxTokens = (int)(maxTokens ?? -1),
            Sampling = sampling,
            IgnoreEos = body.Bool("ignore_eos") ?? false,
            Stop = [.. Stops(body), .. extraStops],
            Grammar = OutputConstraints.Parse(body),
        };
    }

    /// <summary>
    /// Velo's <c>latency_budget</c>: seconds the client is prepared to wait for the whole answer. A route between sizes
    /// (<c>--route</c>) sends a request whose budget is at least its <c>--route-large-within</c> straight to its large
    /// model; a single model has one way to answer, and the hint changes nothing there.
    /// </summary>
    public static TimeSpan? LatencyBudget(RequestBody body) =>
        body.Number("latency_budget", 0, 86400) is double seconds ? TimeSpan.FromSeconds(seconds) : null;

    /// <summary>
    /// Fields this server cannot honour are refused with a 400 naming them, not ignored: a client that sent them would
    /// otherwise get an answer that silently differs from what it asked for. Their "off" values are accepted.
    /// </summary>
    private static void RefuseUnsupported(RequestBody body)
    {
        foreach (string name in (string[])["functions", "function_call"])
            if (body.Field(name) != null) throw ApiException.BadRequest($"'{name}' (deprecated by OpenAI) is not supported: use 'tools' and 'tool_choice'", name);
        if (body.Field("suffix") != null) throw ApiException.BadRequest("'suffix' is not supported", "suffix");
        if (body.Bool("store") == true) throw ApiException.BadRequest("'store' is not supported: velo serve keeps no completions", "store");
        if (body.Field("modalities") is { } modalities
            && !(modalities.ValueKind == JsonValueKind.Array && modalities.EnumerateArray().All(m => m.ValueKind == JsonValueKind.String && m.GetString() == "text")))
            throw ApiException.BadRequest("'modalities' other than [\"text\"] are not supported: the model writes text only", "modalities");
        body.Integer("best_of", 1, 1);
    }

    /// <summary>OpenAI's logit_bias: an object from token ids (as strings) to biases in [-100, 100].</summary>
    public static Dictionary<int, float>? LogitBias(RequestBody body, int vocabSize)
    {
        if (body.Field("logit_bias") is not { } field) return null;
        if (field.ValueKind != JsonValueKind.Object) throw RequestBody.WrongType("logit_bias", "an object from token ids to numbers");
        var bias = new Dictionary<int, float>();
        foreach (var entry in field.EnumerateObject())
        {
            if (!int.TryParse(entry.Name, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out int id) || id >= vocabSize)
                throw ApiException.BadRequest($"'logit_bias' keys must be token ids below {vocabSize}, got '{entry.Name}'", "logit_bias");
            if (entry.Value.ValueKind != JsonValueKind.Number || !entry.Value.TryGetDouble(out double value) || !(value is >= -100 and <= 100))
                throw ApiException.BadRequest("'logit_bias' values must be numbers between -100 and 100", "logit_bias");
            bias[id] = (float)value;
        }
        return bias;
    }

    private static List<string> Stops(RequestBody body)
    {
        var stops = new List<string>();
        switch (body.Field("stop"))
        {
            case null:
                break;
            case { ValueKind: JsonValueKind.String } one:
                stops.Add(one.GetString()!);
                break;
            case { ValueKind: JsonValueKind.Array } many:
                foreach (var item in many.EnumerateArray())
                {
                    if (item.ValueKind != JsonValueKind.String) throw RequestBody.WrongType("stop", "a string or a list of strings");
                    stops.Add(item.GetString()!);
                }
                if (stops.Count > MaxStopStrings) throw ApiException.BadRequest($"'stop' may hold at most {MaxStopStrings} strings", "stop");
                break;
            default:
                throw RequestBody.WrongType("stop", "a string or a list of strings");
        }
        return stops;
    }
}
