using System.Buffers;
using System.Runtime.InteropServices;
using System.Text.Json;
using System.Text.Unicode;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.Features;

namespace Velo.Server;

/// <summary>A JSON request body with typed getters that turn every malformed field into a 400 naming the field.</summary>
internal sealed class RequestBody : IDisposable
{
    private readonly JsonDocument _document;

    private RequestBody(JsonDocument document) => _document = document;

    public JsonElement Root => _document.RootElement;

    /// <summary>
    /// Reads and parses the body, refusing with 413 as soon as it is known to exceed <paramref name="maxBytes"/>: at once
    /// from Content-Length, else once that many bytes have arrived, so a huge body is never buffered or parsed.
    /// </summary>
    public static async Task<RequestBody> ReadAsync(HttpRequest request, long maxBytes, CancellationToken cancellation)
    {
        if (request.ContentLength > maxBytes) throw TooLarge(maxBytes);
        // The server then stops the read itself (and replaces its own default limit, 30 MB in Kestrel).
        if (request.HttpContext.Features.Get<IHttpMaxRequestBodySizeFeature>() is { IsReadOnly: false } limit) limit.MaxRequestBodySize = maxBytes;
        var bytes = await ReadAllAsync(request.Body, (int)(request.ContentLength ?? 0), maxBytes, cancellation);
        // Checked once here so that no string read later can meet bytes it cannot transcode.
        if (!Utf8.IsValid(bytes.Span)) throw ApiException.BadRequest("the request body is not valid UTF-8");
        JsonDocument document;
        try
        {
            document = JsonDocument.Parse(bytes, new JsonDocumentOptions { MaxDepth = 64 });
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
        if (FindUndecodableText(document.RootElement) is { } path)
        {
            document.Dispose();
            throw ApiException.BadRequest(
                $"{(path.Length > 0 ? $"'{path}'" : "a field name")} is not valid Unicode text: it holds an unpaired surrogate escape such as \\ud800",
                path.Length > 0 ? path : null);
        }
        return new RequestBody(document);
    }

    /// <summary>
    /// The path (<c>messages[1].content</c>) of the first string, or of the object holding the first field name, that
    /// is valid JSON but no valid text: an escaped lone surrogate such as <c>"\ud800"</c>, which System.Text.Json refuses
    /// to decode; "" for a name in <paramref name="element"/> itself, null when all decode. Checked once here, so that
    /// no string read or field lookup later fails on one.
    /// </summary>
    private static string? FindUndecodableText(JsonElement element)
    {
        switch (element.ValueKind)
        {
            case JsonValueKind.String:
                return Decodes(element) ? null : "";
            case JsonValueKind.Object:
                foreach (var property in element.EnumerateObject())
                {
                    if (!Decodes(property)) return "";
                    if (FindUndecodableText(property.Value) is { } inner) return property.Name + (inner is "" or ['[', ..] ? inner : "." + inner);
                }
                return null;
            case JsonValueKind.Array:
                int index = 0;
                foreach (var item in element.EnumerateArray())
                {
                    if (FindUndecodableText(item) is { } inner) return $"[{index}]" + (inner is "" or ['[', ..] ? inner : "." + inner);
                    index++;
                }
                return null;
            default:
                return null;
        }
    }

    // Only escaped text can fail to decode (the raw bytes are valid UTF-8), so the rest is not decoded just to check.
    private static bool Decodes(JsonElement text)
    {
        if (!JsonMarshal.GetRawUtf8Value(text).Contains((byte)'\\')) return true;
        try
        {
            text.GetString();
            return true;
        }
        catch (InvalidOperationException)
        {
            return false;
        }
    }

    private static bool Decodes(JsonProperty property)
    {
        if (!JsonMarshal.GetRawUtf8PropertyName(property).Contains((byte)'\\')) return true;
        try
        {
            _ = property.Name;
            return true;
        }
        catch (InvalidOperationException)
        {
            return false;
        }
    }

    private static async Task<ReadOnlyMemory<byte>> ReadAllAsync(Stream body, int expectedBytes, long maxBytes, CancellationToken cancellation)
    {
        // Not disposed: the parsed document goes on reading its buffer.
        var data = new MemoryStream(expectedBytes);
        byte[] chunk = ArrayPool<byte>.Shared.Rent(16 << 10);
        try
        {
            int read;
            while ((read = await body.ReadAsync(chunk, cancellation)) > 0)
            {
                if (data.Length + read > maxBytes) throw TooLarge(maxBytes);
                data.Write(chunk, 0, read);
            }
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(chunk);
        }
        return data.GetBuffer().AsMemory(0, (int)data.Length);
    }

    private static ApiException TooLarge(long maxBytes) => new(413, $"the request body is larger than this route's limit of {maxBytes} bytes");

    /// <summary>The field, or null when it is absent or JSON null.</summary>
    /// <summary>Refuses the first top-level field (not null) outside <paramref name="known"/> with a 400 naming it, so
    /// that no request field is silently ignored.</summary>
    public void RefuseUnknownFields(IReadOnlySet<string> known, string route)
    {
        foreach (var field in Root.EnumerateObject())
            if (field.Value.ValueKind != JsonValueKind.Null && !known.Contains(field.Name))
                throw ApiException.BadRequest($"unknown field '{field.Name}': {route} does not support it", field.Name);
    }

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
        if (value.ValueKind != JsonValueKind.Number || !value.TryGetDouble(out double number) || !double.IsFinite(number))
            throw WrongType(name, "a finite number");
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
