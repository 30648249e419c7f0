using System.Globalization;
using System.Text;
using System.Text.Encodings.Web;
using System.Text.Json;

namespace Velo.Sampling.Grammars;

/// <summary>
/// JSON Schema to GBNF, in the manner of llama.cpp's json_schema_to_grammar, for the subset OpenAI's strict mode
/// accepts: typed values, objects with required and optional properties, arrays with item counts and tuples, enum,
/// const, string lengths and common formats, anyOf, and local $ref (recursion included). Every keyword outside it is
/// refused by name and JSON path, never ignored. Where JSON Schema allows more than a grammar can cheaply state, the
/// grammar generates a valid subset: declared properties only, numbers of at most 16 digits, dates from year 1000 and up to the 28th,
/// no escaped surrogates (so every escape is one character and length bounds hold exactly).
/// </summary>
internal sealed class JsonSchemaConverter
{
    private const int MaxDepth = 64;

    private const string Primitives = """
        space ::= | " " | "\n" [ \t]{0,20}
        boolean ::= ("true" | "false") space
        null ::= "null" space
        char ::= [^"\\\x7F\x00-\x1F] | "\\" (["\\/bfnrt] | "u" hex-scalar)
        hex ::= [0-9a-fA-F]
        hex-scalar ::= [0-9a-cA-CeEfF] hex hex hex | [dD] [0-7] hex hex
        string ::= "\"" char* "\"" space
        integral-part ::= "0" | [1-9] [0-9]{0,15}
        decimal-part ::= [0-9]{1,16}
        number ::= "-"? integral-part ("." decimal-part)? ([eE] [-+]? [0-9]{1,2})? space
        integer ::= "-"? integral-part space
        value ::= object | array | string | number | boolean | null
        object ::= "{" space (string ":" space value ("," space string ":" space value)*)? "}" space
        array ::= "[" space (value ("," space value)*)? "]" space
        """;

    private const string Formats = """
        date ::= [1-9] [0-9]{3} "-" ("0" [1-9] | "1" [0-2]) "-" ("0" [1-9] | "1" [0-9] | "2" [0-8])
        time ::= ([01] [0-9] | "2" [0-3]) ":" [0-5] [0-9] ":" [0-5] [0-9] ("." [0-9]{1,3})? ("Z" | [+-] ([01] [0-9] | "2" [0-3]) ":" [0-5] [0-9])
        date-time ::= date "T" time
        uuid ::= hex{8} "-" hex{4} "-" hex{4} "-" hex{4} "-" hex{12}
        """;

    public const string AnyObjectGbnf = "root ::= object\n" + Primitives + "\n";

    private static readonly HashSet<string> Annotations =
        ["$schema", "$id", "$comment", "title", "description", "default", "examples", "deprecated", "readOnly", "writeOnly", "$defs", "definitions"];

    private static readonly HashSet<string> Supported =
    [
        "type", "enum", "const", "anyOf", "allOf", "$ref",
        "properties", "required", "additionalProperties",
        "items", "prefixItems", "minItems", "maxItems", "uniqueItems",
        "minLength", "maxLength", "format",
    ];

    private static readonly HashSet<string> ReservedNames =
    [
        "root", "space", "boolean", "null", "char", "hex", "hex-scalar", "string", "integral-part", "decimal-part", "number",
        "integer", "value", "object", "array", "date", "time", "date-time", "uuid",
    ];

    private static readonly JsonWriterOptions CompactWriter = new() { Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping };

    private readonly JsonElement _root;
    private readonly Dictionary<string, string> _rules = new(StringComparer.Ordinal);
    private readonly List<string> _order = [];
    private readonly Dictionary<string, string> _references = new(StringComparer.Ordinal);

    private JsonSchemaConverter(JsonElement root) => _root = root;

    /// <summary>GBNF for a JSON value valid against <paramref name="schema"/>, between the literal texts
    /// <paramref name="prefix"/> and <paramref name="suffix"/> when given (a tool call's markers).</summary>
    public static string ToGbnf(JsonElement schema, string prefix = "", string suffix = "")
    {
        var converter = new JsonSchemaConverter(schema);
        string root = converter.Visit(schema, "$", "root", 0);
        var text = new StringBuilder();
        text.Append("root ::= ");
        if (prefix.Length > 0) text.Append(GbnfLiteral(prefix)).Append(' ');
        text.Append(root);
        if (suffix.Length > 0) text.Append(' ').Append(GbnfLiteral(suffix));
        text.Append('\n');
        foreach (string name in converter._order) text.Append(name).Append(" ::= ").Append(converter._rules[name]).Append('\n');
        text.Append(Primitives).Append('\n').Append(Formats).Append('\n');
        return text.ToString();
    }

    /// <summary>A GBNF expression for the values the schema at <paramref name="path"/> accepts.</summary>
    private string Visit(JsonElement schema, string path, string hint, int depth)
    {
        if (depth > MaxDepth) throw Problem(path, $"the schema nests deeper than {MaxDepth} levels");
        if (schema.ValueKind == JsonValueKind.True) return "value";
        if (schema.ValueKind == JsonValueKind.False) throw Problem(path, "the schema 'false' accepts no value");
        if (schema.ValueKind != JsonValueKind.Object) throw Problem(path, "a schema must be an object or a boolean");
        foreach (var property in schema.EnumerateObject())
            if (!Supported.Contains(property.Name) && !Annotations.Contains(property.Name))
                throw Problem($"{path}.{property.Name}", $"the JSON Schema keyword '{property.Name}' is not supported");

        var keywords = schema.EnumerateObject().Select(p => p.Name).Where(n => !Annotations.Contains(n)).ToList();
        if (schema.TryGetProperty("$ref", out var reference))
        {
            if (keywords.Count > 1) throw Problem(path, "'$ref' beside other keywords is not supported");
            return Reference(reference, path, depth);
        }
        if (schema.TryGetProperty("anyOf", out var anyOf))
        {
            if (keywords.Count > 1) throw Problem(path, "'anyOf' beside other keywords is not supported");
            return Alternatives(Items(anyOf, $"{path}.anyOf").Select((s, i) => Visit(s, $"{path}.anyOf[{i}]", hint, depth + 1)));
        }
        if (schema.TryGetProperty("allOf", out var allOf))
        {
            var parts = Items(allOf, $"{path}.allOf");
            if (keywords.Count > 1 || parts.Count != 1) throw Problem(path, "'allOf' is supported only alone and with one schema");
            return Visit(parts[0], $"{path}.allOf[0]", hint, depth + 1);
        }

        var types = Types(schema, path);
        if (schema.TryGetProperty("const", out var constant))
        {
            if (!Matches(types, constant)) throw Problem(path, "'const' does not match the schema's 'type'");
            return Literal(constant);
        }
        if (schema.TryGetProperty("enum", out var values))
        {
            if (values.ValueKind != JsonValueKind.Array) throw Problem($"{path}.enum", "'enum' must be an array");
            var allowed = values.EnumerateArray().Where(v => Matches(types, v)).Select(Literal).Distinct().ToList();
            if (allowed.Count == 0) throw Problem($"{path}.enum", "no 'enum' value matches the schema's 'type'");
            return Alternatives(allowed);
        }
        var alternatives = new List<string>();
        foreach (string type in types)
            alternatives.Add(type switch
            {
                "string" => StringRule(schema, path, hint),
                "number" => "number",
                "integer" => "integer",
                "boolean" => "boolean",
                "null" => "null",
                "object" => ObjectRule(schema, path, hint, depth),
                "array" => ArrayRule(schema, path, hint, depth),
                _ => throw Problem(path, $"unknown type '{type}'"),
            });
        return Alternatives(alternatives);
    }

    /// <summary>The schema's types, in a fixed order; without 'type', those its keywords imply, else all.</summary>
    private static List<string> Types(JsonElement schema, string path)
    {
        string[] all = ["object", "array", "string", "number", "integer", "boolean", "null"];
        if (!schema.TryGetProperty("type", out var type))
        {
            if (schema.TryGetProperty("properties", out _) || schema.TryGetProperty("additionalProperties", out _)) return ["object"];
            if (schema.TryGetProperty("items", out _) || schema.TryGetProperty("prefixItems", out _)) return ["array"];
            if (schema.TryGetProperty("minLength", out _) || schema.TryGetProperty("maxLength", out _) || schema.TryGetProperty("format", out _)) return ["string"];
            // No constraint: any value ("number" covers integers).
            return ["object", "array", "string", "number", "boolean", "null"];
        }
        var names = new List<string>();
        if (type.ValueKind == JsonValueKind.String) names.Add(type.GetString()!);
        else if (type.ValueKind == JsonValueKind.Array)
            foreach (var item in type.EnumerateArray())
                names.Add(item.ValueKind == JsonValueKind.String ? item.GetString()! : throw Problem($"{path}.type", "'type' must be a string or an array of strings"));
        else throw Problem($"{path}.type", "'type' must be a string or an array of strings");
        foreach (string name in names)
            if (!all.Contains(name)) throw Problem($"{path}.type", $"unknown type '{name}'");
        // An integer is a number: listing both would make integers ambiguous, so "number" covers them.
        if (names.Contains("number")) names.Remove("integer");
        return all.Where(names.Contains).ToList();
    }

    private static bool Matches(List<string> types, JsonElement value)
    {
        string kind = KindOf(value);
        return types.Contains(kind) || kind == "integer" && types.Contains("number");
    }

    private static string KindOf(JsonElement value) => value.ValueKind switch
    {
        JsonValueKind.Object => "object",
        JsonValueKind.Array => "array",
        JsonValueKind.String => "string",
        JsonValueKind.Number => value.TryGetInt64(out _) || value.GetRawText().All(c => char.IsAsciiDigit(c) || c == '-') ? "integer" : "number",
        JsonValueKind.True or JsonValueKind.False => "boolean",
        _ => "null",
    };

    // ---- Strings ----

    private string StringRule(JsonElement schema, string path, string hint)
    {
        int? minLength = Count(schema, "minLength", path), maxLength = Count(schema, "maxLength", path);
        if (schema.TryGetProperty("format", out var format))
        {
            string name = format.ValueKind == JsonValueKind.String ? format.GetString()! : throw Problem($"{path}.format", "'format' must be a string");
            if (name is not ("date" or "time" or "date-time" or "uuid"))
                throw Problem($"{path}.format", $"the string format '{name}' is not supported (date, time, date-time and uuid are)");
            if (minLength != null || maxLength != null) throw Problem(path, "'format' beside 'minLength' or 'maxLength' is not supported");
            return $"\"\\\"\" {name} \"\\\"\" space";
        }
        if (minLength == null && maxLength == null) return "string";
        int min = minLength ?? 0;
        if (maxLength < min) throw Problem(path, "'maxLength' is below 'minLength'");
        string repetition = maxLength is int max ? $"{{{min},{max}}}" : $"{{{min},}}";
        return Define(hint + "-string", $"\"\\\"\" char{repetition} \"\\\"\" space");
    }

    // ---- Objects ----

    private string ObjectRule(JsonElement schema, string path, string hint, int depth)
    {
        var declared = new List<(string Name, JsonElement Schema)>();
        if (schema.TryGetProperty("properties", out var properties))
        {
            if (properties.ValueKind != JsonValueKind.Object) throw Problem($"{path}.properties", "'properties' must be an object");
            foreach (var property in properties.EnumerateObject()) declared.Add((property.Name, property.Value));
        }
        var required = new List<string>();
        if (schema.TryGetProperty("required", out var requiredList))
        {
            if (requiredList.ValueKind != JsonValueKind.Array) throw Problem($"{path}.required", "'required' must be an array of strings");
            foreach (var name in requiredList.EnumerateArray())
            {
                if (name.ValueKind != JsonValueKind.String) throw Problem($"{path}.required", "'required' must be an array of strings");
                if (!required.Contains(name.GetString()!)) required.Add(name.GetString()!);
            }
        }
        JsonElement? additional = schema.TryGetProperty("additionalProperties", out var extra) ? extra : null;
        bool closed = additional is { ValueKind: JsonValueKind.False };

        if (declared.Count == 0 && required.Count == 0)
        {
            if (closed) return "\"{\" space \"}\" space";
            if (additional is { ValueKind: JsonValueKind.Object } valueSchema)
            {
                string value = Visit(valueSchema, $"{path}.additionalProperties", hint + "-value", depth + 1);
                string pair = $"string \":\" space {value}";
                return Define(hint, $"\"{{\" space ({pair} (\",\" space {pair})*)? \"}}\" space");
            }
            return "object";
        }
        if (additional is { ValueKind: JsonValueKind.Object })
            throw Problem($"{path}.additionalProperties", "a schema for 'additionalProperties' beside 'properties' is not supported");

        // Required properties first (in the order 'required' lists them), then optional ones in declared order; a
        // required name without a declared schema takes any value, unless the object is closed.
        var pairs = new List<(string Rule, bool Required)>();
        foreach (string name in required)
        {
            int index = declared.FindIndex(p => p.Name == name);
            if (index < 0 && closed) throw Problem($"{path}.required", $"required property '{name}' is not in 'properties' and 'additionalProperties' is false");
            string value = index < 0 ? "value" : Visit(declared[index].Schema, $"{path}.properties.{name}", $"{hint}-{name}", depth + 1);
            pairs.Add((Pair(name, value, hint), true));
        }
        foreach (var (name, propertySchema) in declared)
        {
            if (required.Contains(name)) continue;
            string value = Visit(propertySchema, $"{path}.properties.{name}", $"{hint}-{name}", depth + 1);
            pairs.Add((Pair(name, value, hint), false));
        }

        var body = new StringBuilder();
        var requiredPairs = pairs.Where(p => p.Required).Select(p => p.Rule).ToList();
        var optionalPairs = pairs.Where(p => !p.Required).Select(p => p.Rule).ToList();
        if (requiredPairs.Count > 0)
        {
            body.Append(string.Join(" \",\" space ", requiredPairs));
            foreach (string pair in optionalPairs) body.Append($" (\",\" space {pair})?");
        }
        else
        {
            // Optional only: the first present property, then each later one optionally, comma-separated.
            string? next = null;
            for (int i = optionalPairs.Count - 1; i >= 0; i--)
            {
                string tail = string.Concat(optionalPairs.Skip(i + 1).Select(p => $" (\",\" space {p})?"));
                string expression = optionalPairs[i] + tail + (next != null ? $" | {next}" : "");
                next = Define($"{hint}-from-{i}", expression);
            }
            body.Append('(').Append(next).Append(")?");
        }
        return Define(hint, $"\"{{\" space {body} \"}}\" space");
    }

    private string Pair(string name, string value, string hint)
    {
        string key = JsonSerializer.Serialize(name, new JsonSerializerOptions { Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping });
        return Define($"{hint}-{name}-kv", $"{GbnfLiteral(key)} space \":\" space {value}");
    }

    // ---- Arrays ----

    private string ArrayRule(JsonElement schema, string path, string hint, int depth)
    {
        int min = Count(schema, "minItems", path) ?? 0;
        int? max = Count(schema, "maxItems", path);
        if (max < min) throw Problem(path, "'maxItems' is below 'minItems'");
        if (schema.TryGetProperty("uniqueItems", out var unique) && unique.ValueKind != JsonValueKind.False)
            throw Problem($"{path}.uniqueItems", "'uniqueItems' is not supported");

        var prefix = new List<string>();
        if (schema.TryGetProperty("prefixItems", out var prefixItems))
        {
            var items = Items(prefixItems, $"{path}.prefixItems");
            for (int i = 0; i < items.Count; i++) prefix.Add(Visit(items[i], $"{path}.prefixItems[{i}]", $"{hint}-{i}", depth + 1));
            if (max < prefix.Count) throw Problem(path, "'maxItems' is below the number of 'prefixItems' (every prefix item is generated)");
        }
        string? item = "value";
        if (schema.TryGetProperty("items", out var itemSchema))
        {
            if (itemSchema.ValueKind == JsonValueKind.Array) throw Problem($"{path}.items", "'items' as an array (old tuple form) is not supported; use 'prefixItems'");
            item = itemSchema.ValueKind == JsonValueKind.False ? null : Visit(itemSchema, $"{path}.items", hint + "-item", depth + 1);
        }
        if (item == null && min > prefix.Count) throw Problem(path, "'minItems' exceeds the 'prefixItems' while 'items' is false");

        var body = new StringBuilder();
        if (prefix.Count > 0)
        {
            body.Append(string.Join(" \",\" space ", prefix));
            if (item != null)
            {
                int extraMin = Math.Max(0, min - prefix.Count);
                string bound = max is int m ? $"{{{extraMin},{m - prefix.Count}}}" : $"{{{extraMin},}}";
                if (max != prefix.Count) body.Append($" (\",\" space {item}){bound}");
            }
        }
        else if (max == 0) { }
        else if (min == 0)
        {
            string more = max is int m ? $"{{0,{m - 1}}}" : "*";
            body.Append($"({item} (\",\" space {item}){more})?");
        }
        else
        {
            string more = max is int m ? $"{{{min - 1},{m - 1}}}" : $"{{{min - 1},}}";
            body.Append($"{item} (\",\" space {item}){more}");
        }
        return Define(hint + "-array", $"\"[\" space {body} \"]\" space");
    }

    // ---- References ----

    private string Reference(JsonElement reference, string path, int depth)
    {
        string target = reference.ValueKind == JsonValueKind.String ? reference.GetString()! : throw Problem($"{path}.$ref", "'$ref' must be a string");
        if (_references.TryGetValue(target, out string? rule)) return rule;
        if (!target.StartsWith('#')) throw Problem($"{path}.$ref", $"'$ref' to '{target}': only references inside the schema ('#/...') are supported");
        var node = _root;
        string[] segments = target.Length <= 1 ? [] : target[1..].TrimStart('/').Split('/');
        if (target.Length > 1 && target[1] != '/') throw Problem($"{path}.$ref", $"'$ref' to '{target}': anchors are not supported");
        foreach (string raw in segments)
        {
            string segment = Uri.UnescapeDataString(raw).Replace("~1", "/").Replace("~0", "~");
            if (node.ValueKind == JsonValueKind.Object && node.TryGetProperty(segment, out var child)) node = child;
            else if (node.ValueKind == JsonValueKind.Array && int.TryParse(segment, NumberStyles.None, CultureInfo.InvariantCulture, out int index) && index < node.GetArrayLength()) node = node[index];
            else throw Problem($"{path}.$ref", $"'$ref' to '{target}' points at nothing");
        }
        rule = NewName(segments.Length > 0 ? "ref-" + segments[^1] : "ref-root");
        _references[target] = rule;
        _rules[rule] = ""; // reserved while its own schema (which may refer back to it) is converted
        _order.Add(rule);
        _rules[rule] = Visit(node, target, rule, depth + 1);
        return rule;
    }

    // ---- Helpers ----

    private static List<JsonElement> Items(JsonElement array, string path)
    {
        if (array.ValueKind != JsonValueKind.Array || array.GetArrayLength() == 0) throw Problem(path, "must be a non-empty array of schemas");
        return array.EnumerateArray().ToList();
    }

    private static int? Count(JsonElement schema, string keyword, string path)
    {
        if (!schema.TryGetProperty(keyword, out var value)) return null;
        if (value.ValueKind != JsonValueKind.Number || !value.TryGetInt32(out int count) || count < 0)
            throw Problem($"{path}.{keyword}", $"'{keyword}' must be a non-negative integer");
        if (count > 100_000) throw Problem($"{path}.{keyword}", $"'{keyword}' above 100000 is not supported");
        return count;
    }

    private static string Alternatives(IEnumerable<string> expressions)
    {
        var list = expressions.ToList();
        return list.Count == 1 ? list[0] : "(" + string.Join(" | ", list) + ")";
    }

    /// <summary>A JSON value as a literal (compact), followed by optional space.</summary>
    private static string Literal(JsonElement value)
    {
        using var stream = new MemoryStream();
        using (var writer = new Utf8JsonWriter(stream, CompactWriter)) value.WriteTo(writer);
        return GbnfLiteral(Encoding.UTF8.GetString(stream.ToArray())) + " space";
    }

    private static string GbnfLiteral(string text)
    {
        var literal = new StringBuilder("\"");
        foreach (char c in text)
        {
            if (c == '"') literal.Append("\\\"");
            else if (c == '\\') literal.Append("\\\\");
            else if (c < 0x20 || c == 0x7F) literal.Append("\\x").Append(((int)c).ToString("X2", CultureInfo.InvariantCulture));
            else literal.Append(c);
        }
        return literal.Append('"').ToString();
    }

    private string Define(string hint, string expression)
    {
        string name = NewName(hint);
        _rules[name] = expression;
        _order.Add(name);
        return name;
    }

    private string NewName(string hint)
    {
        var clean = new StringBuilder();
        foreach (char c in hint.Length > 40 ? hint[..40] : hint) clean.Append(char.IsAsciiLetterOrDigit(c) ? c : '-');
        string name = clean.ToString();
        if (name.Length == 0) name = "rule";
        string candidate = name;
        for (int i = 1; ReservedNames.Contains(candidate) || _rules.ContainsKey(candidate); i++) candidate = $"{name}-{i}";
        return candidate;
    }

    private static GrammarException Problem(string path, string message) => new($"{message} (at {path})");
}
