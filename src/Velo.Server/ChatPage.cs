using System.Collections.Frozen;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;

namespace Velo.Server;

/// <summary>
/// The chat page (<c>ChatPage/</c>, embedded in this assembly): <c>GET /</c> and its three files under <c>/chat/</c>.
/// It calls the API routes mapped beside it by relative URLs, so map both on the same app or group.
/// </summary>
public static class ChatPage
{
    private sealed record Asset(byte[] Content, string ContentType);

    private static readonly FrozenDictionary<string, Asset> Assets = new Dictionary<string, Asset>
    {
        ["index.html"] = Load("index.html", "text/html; charset=utf-8"),
        ["chat.css"] = Load("chat.css", "text/css; charset=utf-8"),
        ["chat.js"] = Load("chat.js", "text/javascript; charset=utf-8"),
        ["markdown.js"] = Load("markdown.js", "text/javascript; charset=utf-8"),
    }.ToFrozenDictionary();

    /// <summary>
    /// Only this origin's own files run, and the page talks only to this origin: model output that slipped past the
    /// page's escaping still could not load or send anything.
    /// </summary>
    private const string ContentSecurityPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

    public static IEndpointRouteBuilder MapVeloChatPage(this IEndpointRouteBuilder endpoints)
    {
        endpoints.MapGet("/", (HttpContext http) =>
        {
            // Under a group (/llm) the page must be /llm/, so that its relative URLs stay inside the group.
            if (!http.Request.Path.Value!.EndsWith('/'))
            {
                http.Response.Redirect(http.Request.PathBase + http.Request.Path + "/" + http.Request.QueryString);
                return Task.CompletedTask;
            }
            return WriteAsync(http, Assets["index.html"]);
        });
        endpoints.MapGet("/chat/{file}", (HttpContext http, string file) =>
        {
            if (file == "index.html" || !Assets.TryGetValue(file, out var asset))
                return new ApiException(404, $"no file '{file}' on the chat page", code: "not_found").WriteResponseAsync(http.Response);
            return WriteAsync(http, asset);
        });
        return endpoints;
    }

    private static Task WriteAsync(HttpContext http, Asset asset)
    {
        var headers = http.Response.Headers;
        headers.ContentType = asset.ContentType;
        headers.CacheControl = "no-cache";
        headers.ContentSecurityPolicy = ContentSecurityPolicy;
        headers.XContentTypeOptions = "nosniff";
        headers["Referrer-Policy"] = "no-referrer";
        http.Response.ContentLength = asset.Content.Length;
        return http.Response.Body.WriteAsync(asset.Content, http.RequestAborted).AsTask();
    }

    private static Asset Load(string name, string contentType)
    {
        using var stream = typeof(ChatPage).Assembly.GetManifestResourceStream("ChatPage/" + name)
            ?? throw new InvalidOperationException($"the chat page's '{name}' is not embedded in {typeof(ChatPage).Assembly.GetName().Name}");
        var content = new byte[stream.Length];
        stream.ReadExactly(content);
        return new Asset(content, contentType);
    }
}
