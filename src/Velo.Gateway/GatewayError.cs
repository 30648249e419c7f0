using System.Buffers;
using System.Text.Json;
using Microsoft.AspNetCore.Http;

namespace Velo.Gateway;

/// <summary>An error the gateway answers itself, in OpenAI's shape: <c>{"error":{"message","type","param","code"}}</c>.</summary>
public sealed class GatewayError(int status, string message, string? param = null, string? code = null) : Exception(message)
{
    public int Status { get; } = status;
    public string? Param { get; } = param;
    public string? Code { get; } = code;

    /// <summary>Text as written (no \u0027 for quotes): the bodies are JSON, never embedded in HTML.</summary>
    public static readonly JsonWriterOptions JsonOptions = new() { Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping };

    public static GatewayError BadRequest(string message, string? param = null) => new(400, message, param);

    public void WriteBody(Utf8JsonWriter json)
    {
        json.WriteStartObject();
        json.WriteStartObject("error");
        json.WriteString("message", Message);
        json.WriteString("type", Status >= 500 ? "server_error" : "invalid_request_error");
        json.WriteString("param", Param);
        json.WriteString("code", Code);
        json.WriteEndObject();
        json.WriteEndObject();
    }

    /// <summary>The error as one server-sent event, for a stream whose status line has already gone out.</summary>
    public byte[] ToEvent()
    {
        var buffer = new ArrayBufferWriter<byte>();
        buffer.Write("data: "u8);
        using (var json = new Utf8JsonWriter(buffer, JsonOptions)) WriteBody(json);
        buffer.Write("\n\n"u8);
        return buffer.WrittenSpan.ToArray();
    }

    public async Task WriteResponseAsync(HttpResponse response)
    {
        response.StatusCode = Status;
        response.ContentType = "application/json";
        await using var json = new Utf8JsonWriter(response.Body, JsonOptions);
        WriteBody(json);
    }
}
