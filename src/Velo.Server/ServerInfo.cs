using Microsoft.AspNetCore.Http;

namespace Velo.Server;

/// <summary><c>GET /props</c> (as llama.cpp's server names it): what the server serves and how.</summary>
internal static class ServerInfo
{
    /// <summary>The default model's properties, or those of the one named by <c>?model=</c> (llama-server's router does the same).</summary>
    public static async Task PropsAsync(HttpContext http, VeloEngine engine)
    {
        string? name = http.Request.Query["model"] is { Count: > 0 } named ? named.ToString() : null;
        using var lease = await engine.AcquireAsync(name, null, null, http.RequestAborted);
        var generator = lease.Model.Generator;
        await VeloEndpoints.WriteJsonAsync(http, 200, json =>
        {
            json.WriteStartObject();
            json.WriteString("model", lease.Model.Id);
            if (generator != null)
            {
                json.WriteString("architecture", generator.ModelInfo.Architecture);
                json.WriteNumber("n_ctx", generator.ContextLength);
                json.WriteNumber("n_ctx_train", generator.ModelInfo.ContextLength);
                json.WriteNumber("total_slots", generator.Parallel);
                json.WriteNumber("busy_slots", generator.ActiveSequences);
                json.WriteNumber("queued_requests", generator.QueueLength);
            }
            else
            {
                json.WriteNumber("n_ctx", lease.Embeddings.MaxInputTokens);
                json.WriteNumber("embedding_length", lease.Embeddings.Dimensions);
            }
            json.WriteString("build_info", Ollama.OllamaEndpoints.BuildInfo);
            json.WriteEndObject();
        });
    }

    /// <summary>What a request still generating when the server stops gets: a 503, or as a stream's last event.</summary>
    public static ApiException ShuttingDownError() => new(503, "the server is shutting down", code: "server_shutting_down");
}
