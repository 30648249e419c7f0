using Microsoft.AspNetCore.Http;
using Velo.Generation;

namespace Velo.Server;

/// <summary>
/// Watches one request's generation for the server's metrics (time to first token, time per token, token counts)
/// and its request log line. Every generating route, OpenAI's and Ollama's, reports through one.
/// </summary>
internal sealed class GenerationObserver
{
    private readonly ServerMetrics _metrics;
    private readonly RequestLogEntry? _log;
    private TimeSpan? _last;

    public GenerationObserver(VeloEngine engine, string modelId, HttpContext http)
    {
        _metrics = engine.Metrics;
        _log = RequestLogEntry.Of(http);
        _log?.Model = modelId;
    }

    /// <summary>From submission to the first generated token, queueing included; null until one came.</summary>
    public TimeSpan? FirstToken { get; private set; }

    public void Observe(GeneratedPiece piece)
    {
        if (piece.TokenId < 0) return;
        if (_last is { } last)
        {
            _metrics.TimePerOutputToken.Observe((piece.Elapsed - last).TotalSeconds);
        }
        else
        {
            _metrics.TimeToFirstToken.Observe(piece.Elapsed.TotalSeconds);
            FirstToken = piece.Elapsed;
            _log?.TimeToFirstToken = piece.Elapsed;
        }
        _last = piece.Elapsed;
    }

    public void Finish(GenerationSummary summary)
    {
        _metrics.CountTokens(summary.PromptTokens, summary.GeneratedTokens);
        if (_log == null) return;
        _log.PromptTokens = summary.PromptTokens;
        _log.CompletionTokens = summary.GeneratedTokens;
    }
}
