using System.Diagnostics;
using System.Globalization;
using System.Text;
using System.Text.Json;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;

namespace Velo.Server;

/// <summary>How <c>velo serve</c> writes its one line per request.</summary>
public enum RequestLogFormat
{
    None,
    Text,
    Json,
}

/// <summary>What a handler learned about its request (model, tokens, time to first token) for the request's log line.</summary>
internal sealed class RequestLogEntry
{
    public string? Model { get; set; }
    public int? PromptTokens { get; set; }
    public int? CompletionTokens { get; set; }
    public TimeSpan? TimeToFirstToken { get; set; }

    public static RequestLogEntry? Of(HttpContext http) => http.Features.Get<RequestLogEntry>();
}

/// <summary>
/// One line per request, written when the response has ended (a stream included): time, method, route, model,
/// status, prompt and completion tokens, time to first token and duration. It logs the route's pattern (or, for an
/// unknown route, its path), never the query string, headers or body, so no API key or prompt reaches the log.
/// </summary>
internal static class RequestLog
{
    private const int MaxLoggedPathChars = 200;

    public static IApplicationBuilder UseRequestLog(this IApplicationBuilder app, TextWriter writer, RequestLogFormat format)
    {
        if (format == RequestLogFormat.None) return app;
        var sync = new Lock();
        return app.Use(async (http, next) =>
        {
            var clock = Stopwatch.StartNew();
            var entry = new RequestLogEntry();
            http.Features.Set(entry);
            try
            {
                await next(http);
            }
            finally
            {
                string line = Format(format, DateTimeOffset.UtcNow, http, entry, clock.Elapsed);
                lock (sync)
                {
                    writer.WriteLine(line);
                    writer.Flush();
                }
            }
        });
    }

    internal static string Format(RequestLogFormat format, DateTimeOffset time, HttpContext http, RequestLogEntry entry, TimeSpan duration)
    {
        string route = Route(http);
        // A client that went away before the answer ended gets 499, as nginx logs it; the status it was sent is moot.
        int status = http.RequestAborted.IsCancellationRequested ? 499 : http.Response.StatusCode;
        if (format == RequestLogFormat.Json)
        {
            var buffer = new MemoryStream();
            using (var json = new Utf8JsonWriter(buffer, JsonOutput.Options))
            {
                json.WriteStartObject();
                json.WriteString("time", time.ToString("O", CultureInfo.InvariantCulture));
                json.WriteString("method", http.Request.Method);
                json.WriteString("route", route);
                if (entry.Model != null) json.WriteString("model", entry.Model);
                json.WriteNumber("status", status);
                if (entry.PromptTokens is { } prompt) json.WriteNumber("prompt_tokens", prompt);
                if (entry.CompletionTokens is { } completion) json.WriteNumber("completion_tokens", completion);
                if (entry.TimeToFirstToken is { } ttft) json.WriteNumber("ttft_ms", Math.Round(ttft.TotalMilliseconds, 1));
                json.WriteNumber("duration_ms", Math.Round(duration.TotalMilliseconds, 1));
                json.WriteEndObject();
            }
            return Encoding.UTF8.GetString(buffer.GetBuffer(), 0, (int)buffer.Length);
        }
        var text = new StringBuilder();
        text.Append(CultureInfo.InvariantCulture, $"{time:yyyy-MM-ddTHH:mm:ss.fffZ} {http.Request.Method} {route}");
        if (entry.Model != null) text.Append(" model=").Append(entry.Model);
        text.Append(CultureInfo.InvariantCulture, $" status={status}");
        if (entry.PromptTokens is { } p) text.Append(CultureInfo.InvariantCulture, $" prompt_tokens={p}");
        if (entry.CompletionTokens is { } c) text.Append(CultureInfo.InvariantCulture, $" completion_tokens={c}");
        if (entry.TimeToFirstToken is { } t) text.Append(CultureInfo.InvariantCulture, $" ttft_ms={t.TotalMilliseconds:F1}");
        text.Append(CultureInfo.InvariantCulture, $" duration_ms={duration.TotalMilliseconds:F1}");
        return text.ToString();
    }

    /// <summary>The matched route's pattern (<c>/v1/models/{id}</c>), else the path, cut short and stripped of anything
    /// that could break the line (a path is the client's text).</summary>
    private static string Route(HttpContext http)
    {
        if (http.GetEndpoint() is RouteEndpoint { RoutePattern.RawText: { } pattern }) return pattern.StartsWith('/') ? pattern : "/" + pattern;
        string path = http.Request.Path.Value ?? "/";
        if (path.Length > MaxLoggedPathChars) path = path[..MaxLoggedPathChars] + "…";
        var clean = new StringBuilder(path.Length);
        foreach (char ch in path) clean.Append(char.IsControl(ch) || char.IsWhiteSpace(ch) ? '?' : ch);
        return clean.ToString();
    }
}
