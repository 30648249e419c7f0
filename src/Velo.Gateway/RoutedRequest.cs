using System.Text;
using System.Text.Json;

namespace Velo.Gateway;

/// <summary>What routing needs from a completion or embeddings body: the model it names, and the leading characters
/// of its prompt (of a chat, the messages up to the first user message), the part a node's KV memory can reuse when the
/// conversation comes back.</summary>
public readonly record struct RoutedRequest(string? Model, string PrefixKey)
{
    /// <summary>Reads <paramref name="body"/>; the rest of the request is the node's to check.</summary>
    /// <exception cref="GatewayError">The body is not a JSON object, or <c>model</c> is not a string.</exception>
    public static RoutedRequest Parse(ReadOnlySpan<byte> body, int prefixChars)
    {
        var reader = new Utf8JsonReader(body, new JsonReaderOptions { MaxDepth = 64 });
        JsonDocument document;
        try
        {
            document = JsonDocument.ParseValue(ref reader);
        }
        catch (JsonException e)
        {
            throw GatewayError.BadRequest($"the request body is not valid JSON: {e.Message}");
        }
        using (document)
        {
            var root = document.RootElement;
            if (root.ValueKind != JsonValueKind.Object) throw GatewayError.BadRequest("the request body must be a JSON object");
            string? model = null;
            if (root.TryGetProperty("model", out var modelField) && modelField.ValueKind != JsonValueKind.Null)
                model = modelField.ValueKind == JsonValueKind.String ? modelField.GetString() : throw GatewayError.BadRequest("'model' must be a string", "model");
            var prefix = new StringBuilder();
            if (root.TryGetProperty("messages", out var messages) && messages.ValueKind == JsonValueKind.Array)
            {
                // Up to the first user message: a conversation grows at its end, so its start, and the key, stay the
                // same from turn to turn while different conversations differ there.
                foreach (var message in messages.EnumerateArray())
                {
                    if (prefix.Length >= prefixChars) break;
                    if (message.ValueKind != JsonValueKind.Object) continue;
                    string? role = message.TryGetProperty("role", out var r) && r.ValueKind == JsonValueKind.String ? r.GetString() : null;
                    prefix.Append(role).Append('\n');
                    if (message.TryGetProperty("content", out var content)) AppendText(prefix, content);
                    prefix.Append('\n');
                    if (role == "user") break;
                }
            }
            else if (root.TryGetProperty("prompt", out var prompt)) AppendText(prefix, prompt);
            else if (root.TryGetProperty("input", out var input)) AppendText(prefix, input);
            return new RoutedRequest(model, prefix.Length > prefixChars ? prefix.ToString(0, prefixChars) : prefix.ToString());
        }
    }

    /// <summary>A string as it is; content parts by their text; anything else (token arrays) by its JSON.</summary>
    private static void AppendText(StringBuilder prefix, JsonElement value)
    {
        switch (value.ValueKind)
        {
            case JsonValueKind.String:
                prefix.Append(value.GetString());
                break;
            case JsonValueKind.Array:
                foreach (var part in value.EnumerateArray())
                {
                    if (part.ValueKind == JsonValueKind.Object && part.TryGetProperty("text", out var text) && text.ValueKind == JsonValueKind.String)
                        prefix.Append(text.GetString());
                    else if (part.ValueKind == JsonValueKind.String) prefix.Append(part.GetString());
                    else prefix.Append(part.GetRawText());
                }
                break;
            default:
                prefix.Append(value.GetRawText());
                break;
        }
    }
}
