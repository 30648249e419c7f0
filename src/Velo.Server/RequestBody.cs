using System.Text.Json;
using Microsoft.AspNetCore.Http;

namespace Velo.Server;

/// <summary>A JSON request body with typed getters that turn every malformed field into a 400 naming the field.</summary>
internal sealed class RequestBody : IDisposable
{
    private readonly JsonDocument _document;

    private RequestBody(JsonDocument document) => _document = document;

    public JsonElement Root => _document.RootElement;

    public static async Task<RequestBody> ReadAsync(HttpRequest request, CancellationToken cancellation)
    {
        JsonDocument document;
        try
        {
            document = await JsonDocument.ParseAsync(request.Body, new JsonDocumentOptions { MaxDepth = 64 }, cancellation);
        }
        catch (JsonException e)
        {
            throw ApiException.BadRequest($"the request body is not valid JSON: {e.Message}");
        }
        if (document.RootElement.ValueKind != JsonValueKind.Object)
        {
            document.Dispose();
            throw ApiException.BadRequest("the request body must be a JSON object");
        }
        return new RequestBody(document);
    }

    /// <summary>The field, or null when it is absent or JSON null.</summary>
    public JsonElement? Field(string name) =>
        Root.TryGetProperty(name, out var value) && value.ValueKind != JsonValueKind.Null ? value : null;

    public string? String(string name)
    {
        if (Field(name) is not { } value) return null;
        if (value.ValueKind != JsonValueKind.String) throw WrongType(name, "a string");
        return value.GetString();
    }

    public bool? Bool(string name)
    {
        if (Field(name) is not { } value) return null;
        if (value.ValueKind is not (JsonValueKind.True or JsonValueKind.False)) throw WrongType(name, "a boolean");
        return value.GetBoolean();
    }

    public double? Number(string name, double min, double max)
    {
        if (Field(name) is not { } value) return null;
        if (value.ValueKind != JsonValueKind.Number) throw WrongType(name, "a number");
        double number = value.GetDouble();
        if (!(number >= min && number <= max)) throw ApiException.BadRequest($"'{name}' must be between {min} and {max}, got {number}", name);
        return number;
    }

    public long? Integer(string name, long min, long max)
    {
        if (Field(name) is not { } value) return null;
        if (value.ValueKind != JsonValueKind.Number || !value.TryGetInt64(out long number)) throw WrongType(name, "an integer");
        if (number < min || number > max) throw ApiException.BadRequest($"'{name}' must be between {min} and {max}, got {number}", name);
        return number;
    }

    public static ApiException WrongType(string name, string expected) => ApiException.BadRequest($"'{name}' must be {expected}", name);

    public void Dispose() => _document.Dispose();
}
