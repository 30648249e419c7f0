using System.Text.Json;
using Velo.Sampling.Grammars;

namespace Velo.Server;

/// <summary>
/// The request fields that constrain the output to a grammar: OpenAI's <c>response_format</c> (<c>text</c>,
/// <c>json_object</c>, <c>json_schema</c>) and llama.cpp's <c>grammar</c> (GBNF) and <c>json_schema</c>. At most one of
/// them may constrain a request; a schema or grammar that cannot be compiled is a 400 naming the field and the problem.
/// </summary>
internal static class OutputConstraints
{
    public static Grammar? Parse(RequestBody body)
    {
        var grammars = new List<(string Field, Grammar Grammar)>();
        if (ResponseFormat(body) is { } format) grammars.Add(("response_format", format));
        if (body.Field("grammar") is { } gbnf && gbnf.ValueKind != JsonValueKind.Null)
        {
            if (gbnf.ValueKind != JsonValueKind.String) throw RequestBody.WrongType("grammar", "a string of GBNF rules");
            grammars.Add(("grammar", Compile("grammar", () => Grammar.FromGbnf(gbnf.GetString()!))));
        }
        if (body.Field("json_schema") is { } schema && schema.ValueKind != JsonValueKind.Null)
            grammars.Add(("json_schema", FromSchema("json_schema", schema)));
        if (grammars.Count > 1)
            throw ApiException.BadRequest($"only one of {string.Join(", ", grammars.Select(g => $"'{g.Field}'"))} may constrain the output", grammars[1].Field);
        return grammars.Count == 1 ? grammars[0].Grammar : null;
    }

    private static Grammar? ResponseFormat(RequestBody body)
    {
        if (body.Field("response_format") is not { } format || format.ValueKind == JsonValueKind.Null) return null;
        if (format.ValueKind != JsonValueKind.Object || !format.TryGetProperty("type", out var type) || type.ValueKind != JsonValueKind.String)
            throw RequestBody.WrongType("response_format", "an object with a 'type' of \"text\", \"json_object\" or \"json_schema\"");
        switch (type.GetString())
        {
            case "text":
                return null;
            case "json_object":
                // llama.cpp lets json_object carry a schema of its own.
                return format.TryGetProperty("schema", out var inline) ? FromSchema("response_format.schema", inline) : Grammar.AnyJsonObject();
            case "json_schema":
                if (!format.TryGetProperty("json_schema", out var definition) || definition.ValueKind != JsonValueKind.Object)
                    throw ApiException.BadRequest("'response_format.json_schema' is required for type \"json_schema\"", "response_format.json_schema");
                if (!definition.TryGetProperty("name", out var name) || name.ValueKind != JsonValueKind.String)
                    throw ApiException.BadRequest("'response_format.json_schema.name' is required", "response_format.json_schema.name");
                if (definition.TryGetProperty("strict", out var strict) && strict.ValueKind is not (JsonValueKind.True or JsonValueKind.False or JsonValueKind.Null))
                    throw RequestBody.WrongType("response_format.json_schema.strict", "a boolean");
                // Without a schema OpenAI accepts any JSON object. Strict or not, the output always follows the schema.
                return definition.TryGetProperty("schema", out var schema)
                    ? FromSchema("response_format.json_schema.schema", schema)
                    : Grammar.AnyJsonObject();
            default:
                throw ApiException.BadRequest($"'response_format.type' must be \"text\", \"json_object\" or \"json_schema\", not \"{type.GetString()}\"", "response_format.type");
        }
    }

    /// <summary>The grammar of a request field's JSON Schema; a schema it cannot compile is a 400 naming the field.</summary>
    internal static Grammar FromSchema(string field, JsonElement schema)
    {
        if (schema.ValueKind is not (JsonValueKind.Object or JsonValueKind.True))
            throw RequestBody.WrongType(field, "a JSON Schema object");
        return Compile(field, () => Grammar.FromJsonSchema(schema));
    }

    private static Grammar Compile(string field, Func<Grammar> compile)
    {
        try
        {
            return compile();
        }
        catch (GrammarException e)
        {
            throw ApiException.BadRequest($"'{field}': {e.Message}", field);
        }
    }
}
