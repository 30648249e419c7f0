using System.Text.Json;
using Velo.Generation;
using Velo.Inference;

namespace Velo.Server.Ollama;

/// <summary>
/// Ollama's request <c>options</c> (its Modelfile parameter names) as Velo's generation options. Unset ones take the
/// same llama.cpp defaults as the OpenAI routes; options Velo cannot honour (<c>num_gpu</c>, <c>typical_p</c>, ...) and
/// unknown names are refused with a 400 naming them.
/// </summary>
internal static class OllamaOptions
{
    private const int MaxStopStrings = 16;

    private static readonly HashSet<string> Known =
    [
        "num_predict", "num_ctx", "temperature", "top_k", "top_p", "min_p", "repeat_penalty", "repeat_last_n",
        "presence_penalty", "frequency_penalty", "seed", "stop",
    ];

    /// <summary>The options, and the request's own context (<c>num_ctx</c>), which may only be smaller than the server's.</summary>
    public static (GenerationOptions Options, int ContextLength) Parse(JsonElement? options, int serverContext, IReadOnlyList<string> extraStops)
    {
        var values = new Dictionary<string, JsonElement>();
        if (options is { } given)
        {
            if (given.ValueKind != JsonValueKind.Object) throw RequestBody.WrongType("options", "an object");
            foreach (var option in given.EnumerateObject())
            {
                if (option.Value.ValueKind == JsonValueKind.Null) continue;
                if (!Known.Contains(option.Name))
                    throw ApiException.BadRequest($"option \"{option.Name}\" is not supported; velo serve honours {string.Join(", ", Known)}", $"options.{option.Name}");
                values[option.Name] = option.Value;
            }
        }

        int context = (int)(Integer(values, "num_ctx", 1, int.MaxValue) ?? serverContext);
        if (context > serverContext)
            throw ApiException.BadRequest($"num_ctx {context} is more than the {serverContext} tokens per sequence this server holds; " +
                "start velo serve with a larger --ctx", "options.num_ctx");
        // Ollama's -1 generates until a stop, -2 until the context is full: both end at the context here.
        long? predict = Integer(values, "num_predict", -2, int.MaxValue);
        if (predict == 0) throw ApiException.BadRequest("num_predict must be -1 (no limit), -2 (fill the context) or at least 1, got 0", "options.num_predict");

        var defaults = new SamplerOptions();
        long? seed = Integer(values, "seed", long.MinValue, long.MaxValue);
        var sampling = new SamplerOptions
        {
            Temperature = (float)(Number(values, "temperature", 0, 2) ?? defaults.Temperature),
            TopK = (int)(Integer(values, "top_k", 0, int.MaxValue) ?? defaults.TopK),
            TopP = (float)(Number(values, "top_p", 0, 1) ?? defaults.TopP),
            MinP = (float)(Number(values, "min_p", 0, 1) ?? defaults.MinP),
            RepeatPenalty = (float)(Number(values, "repeat_penalty", 0.01, 10) ?? defaults.RepeatPenalty),
            // Ollama's 0 turns the penalty window off, -1 spans the context; Velo's 0 window penalizes nothing too.
            PenaltyLastN = (int)(Integer(values, "repeat_last_n", -1, int.MaxValue) ?? defaults.PenaltyLastN),
            PresencePenalty = (float)(Number(values, "presence_penalty", -2, 2) ?? 0),
            FrequencyPenalty = (float)(Number(values, "frequency_penalty", -2, 2) ?? 0),
            // As in llama.cpp, which Ollama passes it to, a negative seed means a random one.
            Seed = seed is >= 0 ? (ulong)seed.Value : null,
        };
        if (sampling.TopP == 0) sampling = sampling with { TopP = 1, TopK = 1 };
        return (new GenerationOptions
        {
            MaxTokens = predict is > 0 ? (int)predict.Value : -1,
            Sampling = sampling,
            Stop = [.. Stops(values), .. extraStops],
        }, context);
    }

    /// <summary>Caps the answer so prompt and answer fit the request's <c>num_ctx</c>, refusing a prompt that alone does not.</summary>
    public static GenerationOptions FitToContext(GenerationOptions options, int promptTokens, int context, int serverContext)
    {
        if (context >= serverContext) return options;
        if (promptTokens >= context)
            throw ApiException.BadRequest($"the prompt has {promptTokens} tokens but num_ctx is {context}; shorten the prompt or raise num_ctx", "options.num_ctx");
        int room = context - promptTokens;
        return options with { MaxTokens = options.MaxTokens < 0 ? room : Math.Min(options.MaxTokens, room) };
    }

    private static List<string> Stops(Dictionary<string, JsonElement> values)
    {
        var stops = new List<string>();
        if (!values.TryGetValue("stop", out var stop)) return stops;
        if (stop.ValueKind == JsonValueKind.String) return [stop.GetString()!];
        if (stop.ValueKind != JsonValueKind.Array) throw RequestBody.WrongType("options.stop", "a list of strings");
        foreach (var item in stop.EnumerateArray())
        {
            if (item.ValueKind != JsonValueKind.String) throw RequestBody.WrongType("options.stop", "a list of strings");
            stops.Add(item.GetString()!);
        }
        if (stops.Count > MaxStopStrings) throw ApiException.BadRequest($"options.stop may hold at most {MaxStopStrings} strings", "options.stop");
        return stops;
    }

    private static double? Number(Dictionary<string, JsonElement> values, string name, double min, double max)
    {
        if (!values.TryGetValue(name, out var value)) return null;
        if (value.ValueKind != JsonValueKind.Number || !value.TryGetDouble(out double number) || !double.IsFinite(number))
            throw RequestBody.WrongType($"options.{name}", "a finite number");
        if (!(number >= min && number <= max)) throw ApiException.BadRequest($"options.{name} must be between {min} and {max}, got {number}", $"options.{name}");
        return number;
    }

    private static long? Integer(Dictionary<string, JsonElement> values, string name, long min, long max)
    {
        if (!values.TryGetValue(name, out var value)) return null;
        if (value.ValueKind != JsonValueKind.Number || !value.TryGetInt64(out long number)) throw RequestBody.WrongType($"options.{name}", "an integer");
        if (number < min || number > max) throw ApiException.BadRequest($"options.{name} must be between {min} and {max}, got {number}", $"options.{name}");
        return number;
    }
}
