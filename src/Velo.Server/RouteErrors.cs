using Microsoft.AspNetCore.Http;

namespace Velo.Server;

/// <summary>
/// The body of a 404 for a route that does not exist and of a 405 for a method a route does not take (ASP.NET Core
/// sends both empty): OpenAI's error body, or Ollama's under <c>/api/</c>.
/// </summary>
internal static class RouteErrors
{
    public static Task WriteAsync(HttpContext http)
    {
        int status = http.Response.StatusCode;
        string path = http.Request.Path.Value ?? "/";
        if (path.Length > 200) path = path[..200] + "…";
        string message = status switch
        {
            404 => $"no route {http.Request.Method} {path}; see the README for the routes velo serve offers",
            405 => $"{http.Request.Method} is not allowed on {path}" +
                   (http.Response.Headers.Allow.ToString() is { Length: > 0 } allow ? $"; use {allow}" : ""),
            _ => $"the request failed with status {status}",
        };
        if (path.StartsWith("/api/", StringComparison.Ordinal)) return Ollama.OllamaEndpoints.WriteErrorAsync(http.Response, status, message);
        string? code = status switch { 404 => "route_not_found", 405 => "method_not_allowed", _ => null };
        return new ApiException(status, message, code: code).WriteResponseAsync(http.Response);
    }
}
