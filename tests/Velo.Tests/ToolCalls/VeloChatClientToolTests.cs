using System.ComponentModel;
using Microsoft.Extensions.AI;
using Velo.Generation;
using Velo.Inference;
using Velo.Threading;

namespace Velo.Tests.ToolCalls;

/// <summary>
/// <see cref="VeloChatClient"/> with <see cref="ChatOptions.Tools"/>: calls come back as <see cref="FunctionCallContent"/>,
/// results go back to the model, and MEAI's <c>UseFunctionInvocation()</c> runs the loop. Outputs are scripted where
/// stories260K could not write a call.
/// </summary>
public sealed class VeloChatClientToolTests : IDisposable
{
    private readonly LanguageModel _model = LanguageModel.Load(TestPaths.Stories260K);
    private readonly WorkerPool _pool = new(1);
    private readonly BatchScheduler _scheduler;
    private readonly ScriptedGenerator _scripted;

    public VeloChatClientToolTests()
    {
        _scheduler = new BatchScheduler(_model, new BatchSchedulerOptions { Parallel = 1, ContextLength = 1024 }, _pool);
        _scripted = new ScriptedGenerator(_scheduler);
    }

    public void Dispose()
    {
        _scheduler.Dispose();
        _pool.Dispose();
        _model.Dispose();
    }

    private readonly List<string> _cities = [];

    [Description("Current weather for a city")]
    private string GetWeather(string city)
    {
        _cities.Add(city);
        return $"21 degrees in {city}";
    }

    private ChatOptions Options(ChatToolMode? mode) => new() { Tools = [AIFunctionFactory.Create(GetWeather, "get_weather")], ToolMode = mode };

    private const string Call = "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>";

    [Fact]
    public async Task UseFunctionInvocation_calls_the_required_tool_and_finishes()
    {
        _scripted.Enqueue(Call, "It is 21 degrees in Paris.");
        using var client = new ChatClientBuilder(new VeloChatClient(_scripted)).UseFunctionInvocation().Build();
        var response = await client.GetResponseAsync("Weather in Paris?", Options(ChatToolMode.RequireAny));

        Assert.Equal(["Paris"], _cities);
        Assert.Equal("It is 21 degrees in Paris.", response.Text);
        // The second request carried the call and its result back to the model.
        var second = _scripted.Requests.Last();
        string prompt = _model.Tokenizer.Decode(second.Prompt.ToArray());
        Assert.Contains("<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\":\"Paris\"}}\n</tool_call>", prompt);
        Assert.Contains("<tool_response>\n21 degrees in Paris\n</tool_response>", prompt);
    }

    [Fact]
    public async Task A_call_is_function_call_content_whole_and_streamed()
    {
        _scripted.Enqueue(Call, Call);
        var client = new VeloChatClient(_scripted);
        var response = await client.GetResponseAsync("Weather?", Options(ChatToolMode.Auto));
        Assert.Equal(ChatFinishReason.ToolCalls, response.FinishReason);
        var call = Assert.Single(response.Messages[0].Contents.OfType<FunctionCallContent>());
        Assert.Equal("get_weather", call.Name);
        Assert.StartsWith("call_", call.CallId);
        Assert.Equal("Paris", call.Arguments!["city"]!.ToString());

        var updates = new List<ChatResponseUpdate>();
        await foreach (var update in client.GetStreamingResponseAsync("Weather?", Options(ChatToolMode.Auto))) updates.Add(update);
        var streamed = Assert.Single(updates.SelectMany(u => u.Contents).OfType<FunctionCallContent>());
        Assert.Equal("get_weather", streamed.Name);
        Assert.Equal("Paris", streamed.Arguments!["city"]!.ToString());
        Assert.Equal(ChatFinishReason.ToolCalls, updates.Last().FinishReason);
    }

    [Fact]
    public async Task None_mode_neither_offers_tools_nor_reads_calls()
    {
        _scripted.Enqueue(Call);
        var response = await new VeloChatClient(_scripted).GetResponseAsync("Weather?", Options(ChatToolMode.None));
        Assert.Equal(Call, response.Text);
        Assert.Empty(response.Messages[0].Contents.OfType<FunctionCallContent>());
        Assert.Equal(_scripted.Chat.Format([new("user", "Weather?")]), _scripted.Requests.Last().Prompt);
    }

    [Fact]
    public async Task Bad_tool_options_and_unmet_forced_calls_are_errors()
    {
        var client = new VeloChatClient(_scripted);
        await Assert.ThrowsAsync<ArgumentException>(() => client.GetResponseAsync("Weather?", Options(ChatToolMode.RequireSpecific("get_time"))));
        var hosted = new ChatOptions { Tools = [new HostedWebSearchTool()] };
        Assert.Contains("HostedWebSearchTool", (await Assert.ThrowsAsync<NotSupportedException>(() => client.GetResponseAsync("Weather?", hosted))).Message);
        _scripted.Enqueue("It is sunny.");
        await Assert.ThrowsAsync<ToolChoiceNotMetException>(() => client.GetResponseAsync("Weather?", Options(ChatToolMode.RequireSpecific("get_weather"))));
    }

    [Fact]
    public async Task UseFunctionInvocation_with_a_required_tool_works_on_stories260K()
    {
        using var client = new ChatClientBuilder(new VeloChatClient(_scheduler)).UseFunctionInvocation().Build();
        var options = Options(ChatToolMode.RequireAny);
        options.MaxOutputTokens = 200;
        options.Temperature = 0;
        var response = await client.GetResponseAsync("Weather in Paris?", options);
        Assert.Single(_cities);
        Assert.NotEmpty(response.Messages);
    }
}
