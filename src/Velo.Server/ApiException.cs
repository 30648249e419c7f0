using System.Text.Json;
using Microsoft.AspNetCore.Http;

namespace Velo.Server;

/// <summary>An error answered with OpenAI's error body: <c>{"error":{"message","type","param","code"}}</c>.</summary>
public sealed class ApiException(int status, string message, string? param = null, string? code = null, string? type = null) : Exception(message)
{
    public int Status { get; } = status;
    public string? Param { get; } = param;
    public string? Code { get; } = code;
    public string Type { get; } = type ?? (status >= 500 ? "server_error" : "invalid_request_error");

    public static ApiException BadRequest(string message, string? param = null, string? code = null) => new(400, message, param, code);

    public void WriteBody(Utf8JsonWriter json)
    {
        json.WriteStartObject();
        json.WriteStartObject("error");
        json.WriteString("message", Message);
        json.WriteString("type", Type);
        json.WriteString("param", Param);
        json.WriteString("code", Code);
        json.WriteEndObject();
        json.WriteEndObject();
    }

    public async Task WriteResponseAsync(HttpResponse response)
    {
        response.StatusCode = Status;
        response.ContentType = "application/json";
        await using var json = new Utf8JsonWriter(response.Body, JsonOutput.Options);
        WriteBody(json);
    }
}

internal static class JsonOutput
{
    /// <summary>Generated text goes out as written (no \u0027 for quotes); the bodies are JSON, never embedded in HTML.</summary>
    public static readonly JsonWriterOptions Options = new() { Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping };
}
