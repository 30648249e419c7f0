using System.Text.Json;
using Velo.Tools;

namespace Velo.Text.ChatTemplates;

/// <summary>
/// Messages and tools as Hugging Face's <c>apply_chat_template</c> hands them to a template: OpenAI's shapes, with a
/// call's arguments as a mapping (templates write <c>arguments | tojson</c>). Every text taken from the caller passes
/// through <c>text</c>, which may mark it as literal.
/// </summary>
internal static class TemplateValues
{
    public static OrderedDictionary<string, object?> Message(ChatMessage message, Func<string, string> text)
    {
        var value = new OrderedDictionary<string, object?> { ["role"] = message.Role, ["content"] = text(message.Content) };
        // Templates test for the key ('tool_calls' in message), so it is present only when there are calls.
        if (message.ToolCalls is { Count: > 0 } calls)
            value["tool_calls"] = calls.Select(call => (object?)new OrderedDictionary<string, object?>
            {
                ["id"] = text(call.Id),
                ["type"] = "function",
                ["function"] = new OrderedDictionary<string, object?> { ["name"] = text(call.Name), ["arguments"] = Arguments(call.Arguments, text) },
            }).ToList();
        if (message.ToolCallId != null) value["tool_call_id"] = text(message.ToolCallId);
        return value;
    }

    public static OrderedDictionary<string, object?> Tool(ToolDefinition tool, Func<string, string> text)
    {
        var function = new OrderedDictionary<string, object?> { ["name"] = text(tool.Name) };
        if (tool.Description != null) function["description"] = text(tool.Description);
        function["parameters"] = tool.Parameters is { } parameters ? Json(parameters, text, 0) : new OrderedDictionary<string, object?> { ["type"] = "object", ["properties"] = new OrderedDictionary<string, object?>() };
        return new OrderedDictionary<string, object?> { ["type"] = "function", ["function"] = function };
    }

    /// <summary>A call's arguments as a mapping when they are a JSON object, else as the text they are.</summary>
    private static object? Arguments(string arguments, Func<string, string> text)
    {
        try
        {
            using var document = JsonDocument.Parse(arguments, new JsonDocumentOptions { MaxDepth = 64 });
            if (document.RootElement.ValueKind == JsonValueKind.Object) return Json(document.RootElement, text, 0);
        }
        catch (JsonException)
        {
        }
        return text(arguments);
    }

    private static object? Json(JsonElement json, Func<string, string> text, int depth)
    {
        if (depth > 64) throw new ArgumentException("tool JSON nests deeper than 64 levels");
        switch (json.ValueKind)
        {
            case JsonValueKind.Object:
                var map = new OrderedDictionary<string, object?>();
                foreach (var property in json.EnumerateObject()) map[text(property.Name)] = Json(property.Value, text, depth + 1);
                return map;
            case JsonValueKind.Array:
                return json.EnumerateArray().Select(item => Json(item, text, depth + 1)).ToList();
            case JsonValueKind.String: return text(json.GetString()!);
            case JsonValueKind.Number: return json.TryGetInt64(out long integer) ? integer : json.GetDouble();
            case JsonValueKind.True: return true;
            case JsonValueKind.False: return false;
            default: return null;
        }
    }
}
