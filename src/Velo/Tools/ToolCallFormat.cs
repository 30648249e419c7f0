using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;

namespace Velo.Tools;

/// <summary>What a format makes of the held text that starts where a call may start.</summary>
public enum CallReadStatus
{
    /// <summary>The call is not complete yet; more output may complete it.</summary>
    NeedMore,

    /// <summary>One or more well-formed calls, ending <see cref="CallRead.Consumed"/> characters in.</summary>
    Calls,

    /// <summary>The first <see cref="CallRead.Consumed"/> characters are not a call: they are plain text.</summary>
    NotACall,
}

/// <param name="Calls">Name and arguments of each call read (ids are given by the parser).</param>
public readonly record struct CallRead(CallReadStatus Status, int Consumed, IReadOnlyList<(string Name, string Arguments)> Calls)
{
    public static CallRead NeedMore => new(CallReadStatus.NeedMore, 0, []);
    public static CallRead Plain(int consumed) => new(CallReadStatus.NotACall, consumed, []);
    public static CallRead Read(int consumed, IReadOnlyList<(string, string)> calls) => new(CallReadStatus.Calls, consumed, calls);
}

/// <summary>
/// What constrained decoding must produce for <c>tool_choice: required</c> or a named function: the text
/// <see cref="Prefix"/>, then a JSON document valid against <see cref="Schema"/>, then <see cref="Suffix"/>.
/// </summary>
public sealed record ToolCallConstraint(string Prefix, JsonElement Schema, string Suffix);

/// <summary>
/// How one model family writes tool calls: which markers start one, how a call reads, and the schema a forced call
/// must match. <see cref="For"/> picks the format from the model's chat template and architecture.
/// </summary>
public abstract partial class ToolCallFormat
{
    /// <summary>Deepest JSON a call may nest; deeper output is plain text.</summary>
    private const int MaxJsonDepth = 64;

    public abstract string Name { get; }

    /// <summary>Texts of tokens the output must show even when the vocabulary marks them as control tokens
    /// (<c>&lt;|python_tag|&gt;</c>, <c>[TOOL_CALLS]</c>): the parser needs them, and a decoder skipping control
    /// tokens would drop them.</summary>
    public abstract IReadOnlyList<string> Markers { get; }

    /// <summary>Texts at which a call starts anywhere in the output.</summary>
    public abstract IReadOnlyList<string> StartMarkers { get; }

    /// <summary>Whether an output that begins (after whitespace) with <c>{</c> is read as a call without a marker.</summary>
    public virtual bool BareJsonAtStart => false;

    /// <summary>Whether a call runs to the end of the output (no closing marker), so only the whole output can be read.</summary>
    public virtual bool CallEndsWithOutput => false;

    /// <summary>An id for a call the model made.</summary>
    public virtual string NewCallId() => ToolCall.NewId();

    /// <summary>
    /// Reads <paramref name="text"/>, which starts at a start marker (or a bare <c>{</c>). With <paramref name="final"/>
    /// the output has ended, so the answer is never <see cref="CallReadStatus.NeedMore"/>.
    /// </summary>
    public abstract CallRead TryReadCall(string text, bool final);

    /// <summary>
    /// The one place that says what a forced call (<c>tool_choice: required</c> or a named function) looks like in
    /// this family's format: the JSON Schema of the call, and the markers around it.
    /// </summary>
    public abstract ToolCallConstraint ConstraintSchema(ToolRequest request);

    public static ToolCallFormat Hermes { get; } = new HermesToolCallFormat(bareJson: false);

    /// <summary>The format of Velo's own tool prompt, for templates that cannot render tools: Hermes' tags, and also a
    /// bare call object, which small models often write without them.</summary>
    public static ToolCallFormat Fallback { get; } = new HermesToolCallFormat(bareJson: true);

    public static ToolCallFormat Llama3 { get; } = new Llama3ToolCallFormat();
    public static ToolCallFormat Mistral { get; } = new MistralToolCallFormat();

    /// <summary>Whether a Jinja chat template reads the <c>tools</c> variable, i.e. renders tools itself.</summary>
    public static bool TemplateRendersTools(string? templateSource) => templateSource != null && ToolsVariable().IsMatch(templateSource);

    /// <summary>
    /// The format a model writes calls in. A template that renders tools says which by its markup (<c>&lt;tool_call&gt;</c>:
    /// Qwen and Hermes; <c>&lt;|python_tag|&gt;</c> or <c>ipython</c>: Llama 3.1+; <c>[TOOL_CALLS]</c>: Mistral), else
    /// the architecture does; a template that does not (Llama 3.0, Gemma, Phi, none at all) gets Velo's fallback prompt.
    /// </summary>
    public static ToolCallFormat For(string? templateSource, string architecture)
    {
        if (!TemplateRendersTools(templateSource)) return Fallback;
        string source = templateSource!;
        if (source.Contains("<tool_call>", StringComparison.Ordinal)) return Hermes;
        if (source.Contains("[TOOL_CALLS]", StringComparison.Ordinal)) return Mistral;
        if (source.Contains("<|python_tag|>", StringComparison.Ordinal) || source.Contains("ipython", StringComparison.Ordinal)) return Llama3;
        return architecture switch
        {
            "llama" => Llama3,
            "mistral" => Mistral,
            _ => Fallback,
        };
    }

    [GeneratedRegex(@"\btools\b")]
    private static partial Regex ToolsVariable();

    // ---- Helpers the formats share: reading JSON out of free text, and a call object's fields. ----

    private enum JsonScan { Complete, Incomplete, Invalid }

    /// <summary>Reads one JSON value starting at <paramref name="start"/> (after whitespace); <paramref name="end"/> is
    /// the index just past it.</summary>
    private static JsonScan ScanValue(string text, int start, bool final, out int end, out JsonElement value)
    {
        end = start;
        value = default;
        while (start < text.Length && char.IsWhiteSpace(text[start])) start++;
        if (start == text.Length) return final ? JsonScan.Invalid : JsonScan.Incomplete;
        byte[] bytes = Encoding.UTF8.GetBytes(text, start, text.Length - start);
        var reader = new Utf8JsonReader(bytes, isFinalBlock: false, new JsonReaderState(new JsonReaderOptions { MaxDepth = MaxJsonDepth }));
        try
        {
            // Without the final block the reader answers false, not an error, where the text ends inside the value.
            if (!reader.Read()) return final ? JsonScan.Invalid : JsonScan.Incomplete;
            if (reader.TokenType is not (JsonTokenType.StartObject or JsonTokenType.StartArray)) return JsonScan.Invalid;
            if (!reader.TrySkip()) return final ? JsonScan.Invalid : JsonScan.Incomplete;
        }
        catch (JsonException)
        {
            return JsonScan.Invalid;
        }
        int consumed = (int)reader.BytesConsumed;
        using (var document = JsonDocument.Parse(bytes.AsMemory(0, consumed), new JsonDocumentOptions { MaxDepth = MaxJsonDepth }))
            value = document.RootElement.Clone();
        end = start + Encoding.UTF8.GetCharCount(bytes, 0, consumed);
        return JsonScan.Complete;
    }

    /// <summary>Reads a JSON object or array at <paramref name="start"/>: the value, or whether more text may complete it.</summary>
    protected static bool TryReadJson(string text, int start, bool final, out int end, out JsonElement value, out bool incomplete)
    {
        var scan = ScanValue(text, start, final, out end, out value);
        incomplete = scan == JsonScan.Incomplete;
        return scan == JsonScan.Complete;
    }

    /// <summary>
    /// A call object: <c>{"name": "...", "arguments": {...}}</c> (<c>"parameters"</c> in Llama's spelling; arguments may
    /// also be a string holding the object's JSON). Anything else is not a call.
    /// </summary>
    protected static bool TryReadCallObject(JsonElement value, out (string Name, string Arguments) call)
    {
        call = default;
        if (value.ValueKind != JsonValueKind.Object) return false;
        if (!value.TryGetProperty("name", out var name) || name.ValueKind != JsonValueKind.String || name.GetString() is not { Length: > 0 } functionName)
            return false;
        if (!value.TryGetProperty("arguments", out var arguments) && !value.TryGetProperty("parameters", out arguments))
        {
            call = (functionName, "{}");
            return true;
        }
        switch (arguments.ValueKind)
        {
            case JsonValueKind.Object:
                call = (functionName, arguments.GetRawText());
                return true;
            case JsonValueKind.String when IsJsonObject(arguments.GetString()!):
                call = (functionName, arguments.GetString()!);
                return true;
            default:
                return false;
        }
    }

    private static bool IsJsonObject(string text)
    {
        try
        {
            using var document = JsonDocument.Parse(text, new JsonDocumentOptions { MaxDepth = MaxJsonDepth });
            return document.RootElement.ValueKind == JsonValueKind.Object;
        }
        catch (JsonException)
        {
            return false;
        }
    }

    /// <summary>The schema of one call object: the function's name as a constant and its parameters schema.</summary>
    protected static JsonObject CallSchema(ToolDefinition tool, string argumentsKey) => new()
    {
        ["type"] = "object",
        ["properties"] = new JsonObject
        {
            ["name"] = new JsonObject { ["const"] = tool.Name },
            [argumentsKey] = tool.Parameters is { } parameters ? JsonNode.Parse(parameters.GetRawText()) : new JsonObject { ["type"] = "object" },
        },
        ["required"] = new JsonArray("name", argumentsKey),
        ["additionalProperties"] = false,
    };

    /// <summary>One call of any allowed tool: the named one, or any of them for <c>required</c>.</summary>
    protected static JsonObject AnyCallSchema(ToolRequest request, string argumentsKey)
    {
        if (!request.Choice.ForcesCall) throw new ArgumentException("only tool_choice 'required' or a named function constrains the output", nameof(request));
        var allowed = request.Choice.Mode == ToolChoiceMode.Function
            ? request.Tools.Where(tool => tool.Name == request.Choice.FunctionName).ToList()
            : request.Tools.ToList();
        if (allowed.Count == 0) throw new ArgumentException($"tool_choice names '{request.Choice.FunctionName}', which is not among the tools", nameof(request));
        if (allowed.Count == 1) return CallSchema(allowed[0], argumentsKey);
        var choices = new JsonArray();
        foreach (var tool in allowed) choices.Add(CallSchema(tool, argumentsKey));
        return new JsonObject { ["anyOf"] = choices };
    }

    protected static JsonElement ToElement(JsonNode node) => JsonSerializer.SerializeToElement(node);
}
