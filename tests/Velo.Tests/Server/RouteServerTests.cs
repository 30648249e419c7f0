using System.Net;
using System.Text.Json;
using Velo.Generation;
using Velo.Server;

namespace Velo.Tests.Server;

/// <summary>
/// A route between sizes served by name (<c>--route auto=stories,small</c>): with the threshold forced either way its
/// answer is the small or the large model's own, a latency budget sends a request straight to the large one, and
/// <c>/metrics</c> counts each path.
/// </summary>
public sealed class RouteServerTests(MultiModelServerTests.Files files) : IClassFixture<MultiModelServerTests.Files>
{
    private const string Completion = "\"prompt\": \"Once upon a time\", \"max_tokens\": 12, \"temperature\": 0";

    private VeloServerOptions Options(double threshold, TimeSpan? largeWithin = null) => new()
    {
        ModelPath = TestPaths.Stories260K,
        ModelId = "stories",
        Models = [new NamedModelFile("small", files.Small)],
        Routes = [new CascadeModelSource("auto", "stories", "small", new CascadeOptions { Threshold = threshold, LargeWithinBudget = largeWithin })],
        Parallel = 2,
        ContextLength = 128,
        Threads = 1,
    };

    private static async Task<string> TextAsync(HttpClient http, string model, string extra = "")
    {
        using var response = await http.PostAsync("/v1/completions", TestServer.JsonContent($"{{\"model\": \"{model}\", {Completion}{extra}}}"));
        string body = await response.Content.ReadAsStringAsync();
        Assert.True(response.StatusCode == HttpStatusCode.OK, body);
        using var json = JsonDocument.Parse(body);
        Assert.Equal(model, json.RootElement.GetProperty("model").GetString());
        return json.RootElement.GetProperty("choices")[0].GetProperty("text").GetString()!;
    }

    private static async Task<(Microsoft.AspNetCore.Builder.WebApplication, HttpClient)> StartAsync(VeloEngine engine)
    {
        var app = VeloServer.Build(engine, "127.0.0.1", 0);
        await app.StartAsync();
        for (int i = 0; i < 500 && !engine.IsReady && engine.LoadFailure == null; i++) await Task.Delay(20);
        Assert.Null(engine.LoadFailure);
        return (app, new HttpClient { BaseAddress = VeloServer.Address(app), Timeout = TimeSpan.FromMinutes(1) });
    }

    [Theory]
    [InlineData(double.NegativeInfinity, "stories", "small")]
    [InlineData(double.PositiveInfinity, "small", "escalated")]
    public async Task A_route_answers_as_the_model_its_threshold_picks_and_counts_the_path(double threshold, string answering, string path)
    {
        using var engine = new VeloEngine(Options(threshold));
        var (app, http) = await StartAsync(engine);
        await using var _ = app;
        using var __ = http;

        using (var models = JsonDocument.Parse(await http.GetStringAsync("/v1/models")))
            Assert.Contains("auto", models.RootElement.GetProperty("data").EnumerateArray().Select(m => m.GetProperty("id").GetString()));
        Assert.Equal(await TextAsync(http, answering), await TextAsync(http, "auto"));
        string metrics = await http.GetStringAsync("/metrics");
        Assert.Contains($"velo_route_requests_total{{route=\"auto\",path=\"{path}\"}} 1", metrics);
        Assert.Contains("velo_route_escalations_refused_total{route=\"auto\"} 0", metrics);
    }

    [Fact]
    public async Task A_latency_budget_past_the_routes_limit_goes_straight_to_the_large_model()
    {
        using var engine = new VeloEngine(Options(double.NegativeInfinity, largeWithin: TimeSpan.FromSeconds(10)));
        var (app, http) = await StartAsync(engine);
        await using var _ = app;
        using var __ = http;

        Assert.Equal(await TextAsync(http, "small"), await TextAsync(http, "auto", ", \"latency_budget\": 30"));
        Assert.Equal(await TextAsync(http, "stories"), await TextAsync(http, "auto", ", \"latency_budget\": 2"));
        string metrics = await http.GetStringAsync("/metrics");
        Assert.Contains("velo_route_requests_total{route=\"auto\",path=\"large\"} 1", metrics);
        Assert.Contains("velo_route_requests_total{route=\"auto\",path=\"small\"} 1", metrics);

        using var bad = await http.PostAsync("/v1/completions", TestServer.JsonContent($"{{\"model\": \"auto\", {Completion}, \"latency_budget\": -1}}"));
        Assert.Equal(HttpStatusCode.BadRequest, bad.StatusCode);
        Assert.Contains("latency_budget", await bad.Content.ReadAsStringAsync());
    }
}
