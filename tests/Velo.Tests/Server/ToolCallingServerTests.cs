using System.ClientModel;
using System.Text;
using System.Text.Json;
using Microsoft.AspNetCore.Builder;
using OpenAI;
using OpenAI.Chat;
using Velo.Generation;
using Velo.Inference;
using Velo.Server;
using Velo.Tests.ToolCalls;
using Velo.Threading;
using Velo.Tools;

namespace Velo.Tests.Server;

/// <summary>A server whose generator answers with scripted output: forces the tool calls a tiny model cannot write.</summary>
public sealed class ScriptedServer : IDisposable
{
    private readonly WorkerPool _pool = new(1);
    private readonly LanguageModel _model = LanguageModel.Load(TestPaths.Stories260K);
    private readonly BatchScheduler _scheduler;
    private readonly WebApplication _app;

    public ScriptedServer()
    {
        _scheduler = new BatchScheduler(_model, new BatchSchedulerOptions { Parallel = 1, ContextLength = 512 }, _pool, start: false);
        Generator = new ScriptedGenerator(_scheduler);
        _app = VeloServer.Build(new VeloEngine(Generator, TestServer.ModelId), "127.0.0.1", 0);
        _app.StartAsync().GetAwaiter().GetResult();
        Address = VeloServer.Address(_app);
    }

    public ScriptedGenerator Generator { get; }
    public Uri Address { get; }

    /// <summary>A client that does not retry: it would retry a 500 and consume the next scripted output.</summary>
    public ChatClient ChatClient() =>
        new(TestServer.ModelId, new ApiKeyCredential("no key needed"),
            new OpenAIClientOptions { Endpoint = new Uri(Address, "v1"), RetryPolicy = new System.ClientModel.Primitives.ClientRetryPolicy(0) });

    public void Dispose()
    {
        _app.StopAsync().GetAwaiter().GetResult();
        ((IDisposable)_app).Dispose();
        _scheduler.Dispose();
        _pool.Dispose();
        _model.Dispose();
    }
}

/// <summary>
/// tools, tool_choice and parallel_tool_calls through the official OpenAI client: the auto and none paths on
/// stories260K, calls parsed from forced output (whole and streamed), and request validation.
/// </summary>
public sealed class ToolCallingServerTests(SharedTestServer server, ScriptedServer scripted) : IClassFixture<SharedTestServer>, IClassFixture<ScriptedServer>
{
    private const string WeatherSchema = """{"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}""";
    private static readonly ChatTool Weather = ChatTool.CreateFunctionTool("get_weather", "Current weather for a city", BinaryData.FromString(WeatherSchema));
    private static readonly ToolDefinition WeatherDefinition = new("get_weather", "Current weather for a city", JsonDocument.Parse(WeatherSchema).RootElement.Clone());

    private static ChatCompletionOptions Options(ChatToolChoice? choice, int maxTokens = 16)
    {
        var options = new ChatCompletionOptions { Temperature = 0, MaxOutputTokenCount = maxTokens, ToolChoice = choice };
        options.Tools.Add(Weather);
        return options;
    }

    [Fact]
    public async Task Auto_offers_the_tools_in_the_prompt_and_plain_answers_stay_text()
    {
        var client = server.ChatClient();
        OpenAI.Chat.ChatMessage[] messages = [new UserChatMessage("Once upon a time")];
        ChatCompletion completion = await client.CompleteChatAsync(messages, Options(ChatToolChoice.CreateAutoChoice()));

        // The tools are in the prompt (stories260K has no template: ChatML with Velo's fallback tool prompt).
        var chat = server.Engine.Generator.Chat;
        Assert.Equal(chat.Format([new("user", "Once upon a time")], [WeatherDefinition]).Length, completion.Usage.InputTokenCount);
        Assert.True(completion.Usage.InputTokenCount > chat.Format([new("user", "Once upon a time")]).Length);
        Assert.Empty(completion.ToolCalls);
        Assert.NotEqual(ChatFinishReason.ToolCalls, completion.FinishReason);
        Assert.False(string.IsNullOrEmpty(completion.Content[0].Text));

        var streamed = new StringBuilder();
        await foreach (var update in client.CompleteChatStreamingAsync(messages, Options(ChatToolChoice.CreateAutoChoice())))
        {
            Assert.Empty(update.ToolCallUpdates);
            foreach (var part in update.ContentUpdate) streamed.Append(part.Text);
        }
        Assert.Equal(completion.Content[0].Text, streamed.ToString());
    }

    [Fact]
    public async Task None_leaves_the_tools_out_of_the_prompt_and_never_calls()
    {
        var client = server.ChatClient();
        OpenAI.Chat.ChatMessage[] messages = [new UserChatMessage("Once upon a time")];
        ChatCompletion withNone = await client.CompleteChatAsync(messages, Options(ChatToolChoice.CreateNoneChoice()));
        ChatCompletion without = await client.CompleteChatAsync(messages, new ChatCompletionOptions { Temperature = 0, MaxOutputTokenCount = 16 });
        Assert.Equal(without.Usage.InputTokenCount, withNone.Usage.InputTokenCount);
        Assert.Equal(without.Content[0].Text, withNone.Content[0].Text);
        Assert.Empty(withNone.ToolCalls);

        // Even output that reads as a call stays text: the output is not parsed for calls.
        scripted.Generator.Enqueue("<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>");
        ChatCompletion forced = await scripted.ChatClient().CompleteChatAsync(messages, Options(ChatToolChoice.CreateNoneChoice()));
        Assert.Empty(forced.ToolCalls);
        Assert.StartsWith("<tool_call>", forced.Content[0].Text);
        Assert.Equal(ChatFinishReason.Stop, forced.FinishReason);
    }

    [Fact]
    public async Task A_call_comes_back_as_tool_calls_with_finish_reason_tool_calls()
    {
        scripted.Generator.Enqueue("<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>");
        ChatCompletion completion = await scripted.ChatClient().CompleteChatAsync([new UserChatMessage("Weather in Paris?")], Options(ChatToolChoice.CreateAutoChoice()));
        Assert.Equal(ChatFinishReason.ToolCalls, completion.FinishReason);
        Assert.Empty(completion.Content);
        var call = Assert.Single(completion.ToolCalls);
        Assert.Matches("^call_[A-Za-z0-9]{24}$", call.Id);
        Assert.Equal("get_weather", call.FunctionName);
        Assert.Equal("{\"city\": \"Paris\"}", call.FunctionArguments.ToString());
        // The request showed the format's markers although they may be control tokens.
        Assert.Contains("<tool_call>", scripted.Generator.Requests.Last().Options.ShownControlTokens);
    }

    [Fact]
    public async Task Streamed_tool_call_deltas_reassemble_to_the_same_calls()
    {
        const string output = "Checking.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>\n" +
            "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Rome\"}}\n</tool_call>";
        scripted.Generator.Enqueue(output, output);
        var client = scripted.ChatClient();
        OpenAI.Chat.ChatMessage[] messages = [new UserChatMessage("Weather in Paris and Rome?")];
        ChatCompletion whole = await client.CompleteChatAsync(messages, Options(ChatToolChoice.CreateAutoChoice()));

        var content = new StringBuilder();
        var ids = new Dictionary<int, string>();
        var names = new Dictionary<int, string>();
        var arguments = new Dictionary<int, StringBuilder>();
        ChatFinishReason? finish = null;
        await foreach (var update in client.CompleteChatStreamingAsync(messages, Options(ChatToolChoice.CreateAutoChoice())))
        {
            foreach (var part in update.ContentUpdate) content.Append(part.Text);
            foreach (var delta in update.ToolCallUpdates)
            {
                if (delta.ToolCallId != null) ids[delta.Index] = delta.ToolCallId;
                if (delta.FunctionName != null) names[delta.Index] = delta.FunctionName;
                if (delta.FunctionArgumentsUpdate != null && !delta.FunctionArgumentsUpdate.ToMemory().IsEmpty)
                    (arguments.TryGetValue(delta.Index, out var sb) ? sb : arguments[delta.Index] = new StringBuilder()).Append(delta.FunctionArgumentsUpdate);
            }
            finish ??= update.FinishReason;
        }
        Assert.Equal(ChatFinishReason.ToolCalls, finish);
        Assert.Equal(whole.Content[0].Text, content.ToString());
        Assert.Equal("Checking.", content.ToString());
        Assert.Equal(whole.ToolCalls.Select(c => (c.FunctionName, c.FunctionArguments.ToString())),
            Enumerable.Range(0, 2).Select(i => (names[i], arguments[i].ToString())));
        Assert.All(ids.Values, id => Assert.StartsWith("call_", id));
    }

    [Fact]
    public async Task Parallel_tool_calls_false_keeps_the_first_call()
    {
        scripted.Generator.Enqueue("<tool_call>{\"name\": \"get_weather\", \"arguments\": {\"city\": \"A\"}}</tool_call><tool_call>{\"name\": \"get_weather\", \"arguments\": {\"city\": \"B\"}}</tool_call>");
        var options = Options(ChatToolChoice.CreateAutoChoice());
        options.AllowParallelToolCalls = false;
        ChatCompletion completion = await scripted.ChatClient().CompleteChatAsync([new UserChatMessage("Weather?")], options);
        Assert.Equal("{\"city\": \"A\"}", Assert.Single(completion.ToolCalls).FunctionArguments.ToString());
    }

    [Fact]
    public async Task Required_and_named_choices_pass_a_matching_call_and_refuse_anything_else()
    {
        var client = scripted.ChatClient();
        OpenAI.Chat.ChatMessage[] messages = [new UserChatMessage("Weather?")];
        const string call = "<tool_call>{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Oslo\"}}</tool_call>";
        scripted.Generator.Enqueue(call, call);
        Assert.Single((await client.CompleteChatAsync(messages, Options(ChatToolChoice.CreateRequiredChoice()))).Value.ToolCalls);
        Assert.Single((await client.CompleteChatAsync(messages, Options(ChatToolChoice.CreateFunctionChoice("get_weather")))).Value.ToolCalls);
        Assert.NotNull(scripted.Generator.Requests.Last().Options);

        // Without constrained decoding a model may answer in prose: that is an error, never a 200 passed off as the call.
        scripted.Generator.Enqueue("It is sunny.", "It is sunny.");
        var refused = await Assert.ThrowsAsync<ClientResultException>(() => client.CompleteChatAsync(messages, Options(ChatToolChoice.CreateRequiredChoice())));
        Assert.Equal(500, refused.Status);
        Assert.Contains("tool_choice_not_met", refused.Message);
        // Streamed, the refusal is the stream's error event, and none of the prose went out before it.
        using var http = new HttpClient { BaseAddress = scripted.Address };
        const string body = """{"messages": [{"role": "user", "content": "Weather?"}], "stream": true, "tool_choice": "required", "tools": [""" + Tool + "]}";
        using var response = await http.PostAsync("/v1/chat/completions", TestServer.JsonContent(body));
        string events = await response.Content.ReadAsStringAsync();
        Assert.Contains("\"code\":\"tool_choice_not_met\"", events);
        Assert.DoesNotContain("sunny", events);
    }

    [Fact]
    public async Task Calls_and_results_in_the_history_are_rendered_back()
    {
        // The scripted server, since the prompt outgrows stories260K's 512-token test context.
        scripted.Generator.Enqueue("It is 21 degrees.");
        var client = scripted.ChatClient();
        OpenAI.Chat.ChatMessage[] messages =
        [
            new UserChatMessage("Weather in Paris?"),
            new AssistantChatMessage([ChatToolCall.CreateFunctionToolCall("call_1", "get_weather", BinaryData.FromString("{\"city\": \"Paris\"}"))]),
            new ToolChatMessage("call_1", "{\"temp\": 21}"),
        ];
        ChatCompletion completion = await client.CompleteChatAsync(messages, Options(ChatToolChoice.CreateAutoChoice()));
        Assert.Equal("It is 21 degrees.", completion.Content[0].Text);
        var history = new List<Velo.Text.ChatTemplates.ChatMessage>
        {
            new("user", "Weather in Paris?"),
            new("assistant", "") { ToolCalls = [new ToolCall("call_1", "get_weather", "{\"city\": \"Paris\"}")] },
            new("tool", "{\"temp\": 21}") { ToolCallId = "call_1" },
        };
        var chat = scripted.Generator.Chat;
        Assert.Equal(chat.Format(history, [WeatherDefinition]), scripted.Generator.Requests.Last().Prompt);
        string prompt = chat.Render(history, tools: [WeatherDefinition]);
        Assert.Contains("<|im_start|>assistant\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call><|im_end|>", prompt);
        Assert.Contains("<|im_start|>user\n<tool_response>\n{\"temp\": 21}\n</tool_response><|im_end|>", prompt);
    }

    [Fact]
    public async Task Required_choice_makes_stories260K_emit_a_valid_call()
    {
        // Velo's fallback tool prompt alone takes ~450 of stories260K's tokens: give the call room beyond the shared 512.
        using var roomy = new TestServer(parallel: 1, contextLength: 1024);
        var client = roomy.ChatClient();
        OpenAI.Chat.ChatMessage[] messages = [new UserChatMessage("Once upon a time")];
        ChatCompletion completion = await client.CompleteChatAsync(messages, Options(ChatToolChoice.CreateFunctionChoice("get_weather"), maxTokens: 200));
        var call = Assert.Single(completion.ToolCalls);
        Assert.Equal("get_weather", call.FunctionName);
        using var arguments = JsonDocument.Parse(call.FunctionArguments.ToString());
        Assert.Equal(JsonValueKind.String, arguments.RootElement.GetProperty("city").ValueKind);

        var names = new Dictionary<int, string>();
        var argumentText = new StringBuilder();
        await foreach (var update in client.CompleteChatStreamingAsync(messages, Options(ChatToolChoice.CreateRequiredChoice(), maxTokens: 200)))
            foreach (var delta in update.ToolCallUpdates)
            {
                if (delta.FunctionName != null) names[delta.Index] = delta.FunctionName;
                if (delta.FunctionArgumentsUpdate != null) argumentText.Append(delta.FunctionArgumentsUpdate);
            }
        Assert.Equal("get_weather", Assert.Single(names).Value);
        using var streamed = JsonDocument.Parse(argumentText.ToString());
        Assert.Equal(JsonValueKind.String, streamed.RootElement.GetProperty("city").ValueKind);
    }

    private static void AssertBadRequest(int status, JsonElement body, string param)
    {
        Assert.Equal(400, status);
        Assert.Equal(param, body.GetProperty("error").GetProperty("param").GetString());
    }

    private const string Tool = """{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}""";

    [Theory]
    [InlineData("\"tools\": {}", "tools")]
    [InlineData("\"tools\": [5]", "tools[0]")]
    [InlineData("\"tools\": [{\"type\": \"retrieval\"}]", "tools[0].type")]
    [InlineData("\"tools\": [{\"type\": \"function\"}]", "tools[0].function")]
    [InlineData("\"tools\": [{\"type\": \"function\", \"function\": {}}]", "tools[0].function.name")]
    [InlineData("\"tools\": [{\"type\": \"function\", \"function\": {\"name\": \"get weather\"}}]", "tools[0].function.name")]
    [InlineData("\"tools\": [" + Tool + ", " + Tool + "]", "tools[1].function.name")]
    [InlineData("\"tools\": [{\"type\": \"function\", \"function\": {\"name\": \"f\", \"description\": 1}}]", "tools[0].function.description")]
    [InlineData("\"tools\": [{\"type\": \"function\", \"function\": {\"name\": \"f\", \"parameters\": \"object\"}}]", "tools[0].function.parameters")]
    [InlineData("\"tools\": [{\"type\": \"function\", \"function\": {\"name\": \"f\", \"strict\": true}}]", "tools[0].function.strict")]
    [InlineData("\"tools\": [" + Tool + "], \"tool_choice\": \"sometimes\"", "tool_choice")]
    [InlineData("\"tools\": [" + Tool + "], \"tool_choice\": 1", "tool_choice")]
    [InlineData("\"tools\": [" + Tool + "], \"tool_choice\": {\"type\": \"function\", \"function\": {\"name\": \"other\"}}", "tool_choice.function.name")]
    [InlineData("\"tools\": [" + Tool + "], \"tool_choice\": {\"type\": \"tool\"}", "tool_choice.type")]
    [InlineData("\"tool_choice\": \"required\"", "tool_choice")]
    [InlineData("\"tool_choice\": {\"type\": \"function\", \"function\": {\"name\": \"f\"}}", "tool_choice")]
    [InlineData("\"tools\": [" + Tool + "], \"parallel_tool_calls\": \"yes\"", "parallel_tool_calls")]
    [InlineData("\"functions\": [{\"name\": \"f\"}]", "functions")]
    [InlineData("\"tools\": [" + Tool + "], \"tool_choice\": \"required\", \"response_format\": {\"type\": \"json_object\"}", "tool_choice")]
    public async Task Bad_tool_fields_are_400s_naming_them(string fields, string param)
    {
        var (status, body) = await server.PostAsync("/v1/chat/completions", $"{{\"messages\": [{{\"role\": \"user\", \"content\": \"hi\"}}], \"max_tokens\": 1, {fields}}}");
        AssertBadRequest(status, body, param);
    }

    [Theory]
    [InlineData("{\"role\": \"tool\", \"content\": \"21\"}", "messages[1].tool_call_id")]
    [InlineData("{\"role\": \"assistant\", \"tool_calls\": {}}", "messages[1].tool_calls")]
    [InlineData("{\"role\": \"assistant\", \"tool_calls\": [{\"type\": \"function\", \"function\": {\"name\": \"f\", \"arguments\": \"{}\"}}]}", "messages[1].tool_calls[0].id")]
    [InlineData("{\"role\": \"assistant\", \"tool_calls\": [{\"id\": \"c\", \"type\": \"function\", \"function\": {\"name\": \"f\", \"arguments\": {}}}]}", "messages[1].tool_calls[0].function.arguments")]
    [InlineData("{\"role\": \"user\", \"content\": \"x\", \"tool_calls\": []}", "messages[1].tool_calls")]
    public async Task Bad_tool_messages_are_400s_naming_them(string message, string param)
    {
        var (status, body) = await server.PostAsync("/v1/chat/completions", $"{{\"messages\": [{{\"role\": \"user\", \"content\": \"hi\"}}, {message}], \"max_tokens\": 1}}");
        AssertBadRequest(status, body, param);
    }

    [Theory]
    [InlineData("tools", "[" + Tool + "]")]
    [InlineData("tool_choice", "\"auto\"")]
    [InlineData("parallel_tool_calls", "true")]
    public async Task Tool_fields_on_text_completions_are_400s(string field, string value)
    {
        var (status, body) = await server.PostAsync("/v1/completions", $"{{\"prompt\": \"hi\", \"max_tokens\": 1, \"{field}\": {value}}}");
        AssertBadRequest(status, body, field);
    }
}
