using Microsoft.AspNetCore.Http;

namespace Velo.Server;

/// <summary><c>GET /props</c> (as llama.cpp's server names it): what the server serves and how.</summary>
internal static class ServerInfo
{
    public static Task PropsAsync(HttpContext http, VeloEngine engine)
    {
        if (!engine.IsReady) throw engine.NotReadyError();
        var generator = engine.LoadedGenerator;
        return VeloEndpoints.WriteJsonAsync(http, 200, json =>
        {
            json.WriteStartObject();
            json.WriteString("model", engine.ModelId);
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
                json.WriteNumber("n_ctx", engine.Embeddings!.MaxInputTokens);
                json.WriteNumber("embedding_length", engine.Embeddings.Dimensions);
            }
            json.WriteString("build_info", Ollama.OllamaEndpoints.BuildInfo);
            json.WriteEndObject();
        });
    }

    /// <summary>What a request still generating when the server stops gets: a 503, or as a stream's last event.</summary>
    public static ApiException ShuttingDownError() => new(503, "the server is shutting down", code: "server_shutting_down");
}
