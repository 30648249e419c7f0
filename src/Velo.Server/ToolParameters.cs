using System.Text.Json;
using System.Text.RegularExpressions;
using Velo.Tools;

namespace Velo.Server;

/// <summary>The request's <c>tools</c>, <c>tool_choice</c> and <c>parallel_tool_calls</c>, checked field by field.</summary>
internal static partial class ToolParameters
{
    /// <summary>The most tools one request may offer.</summary>
    private const int MaxTools = 128;

    /// <summary>The tools of a chat request; null when it offers none.</summary>
    public static ToolRequest? Parse(RequestBody body)
    {
        var tools = Tools(body);
        bool parallel = body.Bool("parallel_tool_calls") ?? true;
        var choice = Choice(body, tools);
        return tools.Count == 0 ? null : new ToolRequest(tools, choice, parallel);
    }

    private static List<ToolDefinition> Tools(RequestBody body)
    {
        var tools = new List<ToolDefinition>();
        if (body.Field("tools") is not { } list) return tools;
        if (list.ValueKind != JsonValueKind.Array) throw RequestBody.WrongType("tools", "a list of tools");
        if (list.GetArrayLength() > MaxTools) throw ApiException.BadRequest($"'tools' may hold at most {MaxTools} tools", "tools");
        foreach (var item in list.EnumerateArray())
        {
            string param = $"tools[{tools.Count}]";
            if (item.ValueKind != JsonValueKind.Object) throw RequestBody.WrongType(param, "an object");
            if (!item.TryGetProperty("type", out var type) || type.ValueKind != JsonValueKind.String || type.GetString() != "function")
                throw ApiException.BadRequest($"'{param}.type' must be \"function\"", $"{param}.type");
            if (!item.TryGetProperty("function", out var function) || function.ValueKind != JsonValueKind.Object)
                throw RequestBody.WrongType($"{param}.function", "an object with the function's name, description and parameters");
            string name = FunctionName(function, $"{param}.function.name");
            if (tools.Any(tool => tool.Name == name))
                throw ApiException.BadRequest($"'{param}.function.name': another tool is already named '{name}'", $"{param}.function.name");
            string? description = null;
            if (function.TryGetProperty("description", out var text) && text.ValueKind != JsonValueKind.Null)
                description = text.ValueKind == JsonValueKind.String ? text.GetString() : throw RequestBody.WrongType($"{param}.function.description", "a string");
            JsonElement? parameters = null;
            if (function.TryGetProperty("parameters", out var schema) && schema.ValueKind != JsonValueKind.Null)
                parameters = schema.ValueKind == JsonValueKind.Object ? schema.Clone() : throw RequestBody.WrongType($"{param}.function.parameters", "a JSON Schema object");
            if (function.TryGetProperty("strict", out var strict) && strict.ValueKind == JsonValueKind.True)
                throw ApiException.BadRequest($"'{param}.function.strict' is not supported yet: arguments are not constrained to the schema", $"{param}.function.strict");
            tools.Add(new ToolDefinition(name, description, parameters));
        }
        return tools;
    }

    private static ToolChoice Choice(RequestBody body, List<ToolDefinition> tools)
    {
        var choice = body.Field("tool_choice") switch
        {
            null => tools.Count > 0 ? ToolChoice.Auto : ToolChoice.None,
            { ValueKind: JsonValueKind.String } mode => mode.GetString() switch
            {
                "auto" => ToolChoice.Auto,
                "none" => ToolChoice.None,
                "required" => ToolChoice.Required,
                _ => throw ApiException.BadRequest("'tool_choice' must be \"auto\", \"none\", \"required\" or {\"type\": \"function\", \"function\": {\"name\": ...}}", "tool_choice"),
            },
            { ValueKind: JsonValueKind.Object } named => Named(named, tools),
            _ => throw RequestBody.WrongType("tool_choice", "a string or an object naming a function"),
        };
        if (choice.ForcesCall && tools.Count == 0)
            throw ApiException.BadRequest("'tool_choice' requires a tool call, but the request offers no 'tools'", "tool_choice");
        return choice;
    }

    private static ToolChoice Named(JsonElement choice, List<ToolDefinition> tools)
    {
        if (!choice.TryGetProperty("type", out var type) || type.ValueKind != JsonValueKind.String || type.GetString() != "function")
            throw ApiException.BadRequest("'tool_choice.type' must be \"function\"", "tool_choice.type");
        if (!choice.TryGetProperty("function", out var function) || function.ValueKind != JsonValueKind.Object)
            throw RequestBody.WrongType("tool_choice.function", "an object with the function's name");
        string name = FunctionName(function, "tool_choice.function.name");
        if (tools.Count > 0 && tools.All(tool => tool.Name != name))
            throw ApiException.BadRequest($"'tool_choice.function.name' names '{name}', which is not among the tools", "tool_choice.function.name");
        return ToolChoice.Function(name);
    }

    /// <summary>OpenAI's rule for function names: letters, digits, underscores and dashes, at most 64.</summary>
    private static string FunctionName(JsonElement function, string param)
    {
        if (!function.TryGetProperty("name", out var name) || name.ValueKind != JsonValueKind.String)
            throw ApiException.BadRequest($"'{param}' is required and must be a string", param);
        string text = name.GetString()!;
        if (!FunctionNamePattern().IsMatch(text))
            throw ApiException.BadRequest($"'{param}' must be 1 to 64 letters, digits, underscores or dashes", param);
        return text;
    }

    [GeneratedRegex("^[A-Za-z0-9_-]{1,64}$")]
    private static partial Regex FunctionNamePattern();

    /// <summary>An assistant message's <c>tool_calls</c>; null when it has none.</summary>
    public static List<ToolCall>? MessageCalls(JsonElement message, string param)
    {
        if (!message.TryGetProperty("tool_calls", out var list) || list.ValueKind == JsonValueKind.Null) return null;
        if (list.ValueKind != JsonValueKind.Array) throw RequestBody.WrongType($"{param}.tool_calls", "a list of tool calls");
        var calls = new List<ToolCall>();
        foreach (var item in list.EnumerateArray())
        {
            string callParam = $"{param}.tool_calls[{calls.Count}]";
            if (item.ValueKind != JsonValueKind.Object) throw RequestBody.WrongType(callParam, "an object");
            if (!item.TryGetProperty("id", out var id) || id.ValueKind != JsonValueKind.String)
                throw ApiException.BadRequest($"'{callParam}.id' is required and must be a string", $"{callParam}.id");
            if (item.TryGetProperty("type", out var type) && !(type.ValueKind == JsonValueKind.String && type.GetString() == "function"))
                throw ApiException.BadRequest($"'{callParam}.type' must be \"function\"", $"{callParam}.type");
            if (!item.TryGetProperty("function", out var function) || function.ValueKind != JsonValueKind.Object)
                throw RequestBody.WrongType($"{callParam}.function", "an object with the function's name and arguments");
            string name = FunctionName(function, $"{callParam}.function.name");
            if (!function.TryGetProperty("arguments", out var arguments) || arguments.ValueKind != JsonValueKind.String)
                throw ApiException.BadRequest($"'{callParam}.function.arguments' is required and must be a string of JSON", $"{callParam}.function.arguments");
            calls.Add(new ToolCall(id.GetString()!, name, arguments.GetString()!));
        }
        return calls;
    }
}
