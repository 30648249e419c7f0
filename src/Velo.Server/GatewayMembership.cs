using System.Net.Http.Headers;
using System.Net.Http.Json;
using System.Text.Json;
using Microsoft.Extensions.Hosting;

namespace Velo.Server;

/// <summary>
/// <c>velo serve --join GATEWAY</c>: announces this server to a <c>velo gateway</c> and keeps announcing it (the
/// heartbeat), at the interval the gateway asks for, so the gateway adds it, and adds it again after it was away.
/// The gateway checks the announced address before adding it; its refusal (an address it cannot reach) is reported.
/// </summary>
public sealed class GatewayMembership(Uri gateway, Uri advertisedAddress, string? apiKey, Action<string> report) : BackgroundService
{
    /// <summary>The gateway's route for announcements (<c>Velo.Gateway.VeloGateway.JoinRoute</c>).</summary>
    public const string JoinRoute = "gateway/join";

    private static readonly TimeSpan RetryInterval = TimeSpan.FromSeconds(2);

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        using var http = new HttpClient { Timeout = TimeSpan.FromSeconds(10) };
        string? lastOutcome = null;
        while (!stoppingToken.IsCancellationRequested)
        {
            var (outcome, next) = await AnnounceAsync(http, stoppingToken);
            // Each change is reported once: a heartbeat every few seconds must not fill the log.
            if (outcome != lastOutcome) report(outcome);
            lastOutcome = outcome;
            try
            {
                await Task.Delay(next, stoppingToken);
            }
            catch (OperationCanceledException)
            {
                return;
            }
        }
    }

    private async Task<(string Outcome, TimeSpan Next)> AnnounceAsync(HttpClient http, CancellationToken cancellation)
    {
        try
        {
            using var request = new HttpRequestMessage(HttpMethod.Post, new Uri(gateway, JoinRoute))
            {
                Content = JsonContent.Create(new Dictionary<string, string> { ["url"] = advertisedAddress.ToString() }),
            };
            if (apiKey != null) request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", apiKey);
            using var response = await http.SendAsync(request, cancellation);
            string text = await response.Content.ReadAsStringAsync(cancellation);
            using var body = JsonDocument.Parse(text);
            if (!response.IsSuccessStatusCode)
            {
                string message = body.RootElement.TryGetProperty("error", out var error) && error.TryGetProperty("message", out var m) ? m.ToString() : text;
                return ($"the gateway {gateway} refused this node ({(int)response.StatusCode}): {message}", RetryInterval);
            }
            double seconds = body.RootElement.TryGetProperty("heartbeat_seconds", out var h) && h.TryGetDouble(out double s) ? Math.Clamp(s, 0.1, 300) : 5;
            return ($"joined the gateway {gateway} as {advertisedAddress}", TimeSpan.FromSeconds(seconds));
        }
        catch (Exception e) when (e is HttpRequestException or TaskCanceledException or JsonException && !cancellation.IsCancellationRequested)
        {
            return ($"cannot reach the gateway {gateway}: {e.Message}; retrying", RetryInterval);
        }
    }
}
