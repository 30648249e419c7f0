using System.ClientModel;
using System.Text;
using System.Text.Json;
using System.Text.Json.Serialization;
using Json.Schema;
using Microsoft.Extensions.AI;
using OpenAI.Chat;
using Velo.Generation;

namespace Velo.Tests.Server;

public enum Weather { Sunny, Rainy, Snowy }

public enum Animal { Cat, Dog, Bird }

public sealed record Friend(Animal Kind, int Age, bool Happy);

public sealed record StoryPlan(Weather Weather, Friend Hero, Friend[] Friends, int Chapters);

/// <summary>Structured output over HTTP (OpenAI's response_format, llama.cpp's grammar and json_schema) and through
/// Microsoft.Extensions.AI's GetResponseAsync&lt;T&gt;, on the bundled stories260K model: a tiny model still emits only
/// valid JSON when its decoding is constrained.</summary>
public sealed class StructuredOutputServerTests(SharedTestServer server) : IClassFixture<SharedTestServer>
{
    private const string PersonSchema = """
        {"type":"object","properties":{"name":{"type":"string","maxLength":12},"age":{"type":"integer"},"pet":{"enum":["cat","dog"]},
         "tags":{"type":"array","items":{"type":"boolean"},"maxItems":3}},"required":["name","age","pet","tags"],"additionalProperties":false}
        """;

    private static bool Validates(string schema, string document)
    {
        using var parsed = JsonDocument.Parse(document);
        return JsonSchema.FromText(schema).Evaluate(parsed.RootElement).IsValid;
    }

    [Fact]
    public async Task Json_schema_response_format_through_the_OpenAI_client_always_validates()
    {
        var client = server.ChatClient();
        for (int seed = 1; seed <= 3; seed++)
        {
            var options = new ChatCompletionOptions
            {
                Temperature = 1, MaxOutputTokenCount = 300,
                ResponseFormat = OpenAI.Chat.ChatResponseFormat.CreateJsonSchemaFormat("person", BinaryData.FromString(PersonSchema), jsonSchemaIsStrict: true),
            };
#pragma warning disable OPENAI001 // Seed is marked experimental in the OpenAI client
            options.Seed = seed;
#pragma warning restore OPENAI001
            ChatCompletion completion = await client.CompleteChatAsync([new UserChatMessage("Describe a person as JSON.")], options);
            Assert.Equal(OpenAI.Chat.ChatFinishReason.Stop, completion.FinishReason);
            Assert.True(Validates(PersonSchema, completion.Content[0].Text), completion.Content[0].Text);
        }
    }

    [Fact]
    public async Task Streamed_json_schema_output_reassembles_to_a_valid_document()
    {
        string json = JsonSerializer.Serialize(new
        {
            messages = new[] { new { role = "user", content = "A person, please." } }, stream = true, max_tokens = 300, seed = 5,
            response_format = new { type = "json_schema", json_schema = new { name = "person", strict = true, schema = JsonDocument.Parse(PersonSchema).RootElement } },
        });
        using var response = await server.Http.PostAsync("/v1/chat/completions", TestServer.JsonContent(json));
        var text = new StringBuilder();
        string? finish = null;
        await foreach (var chunk in TestServer.EventsAsync(response))
            foreach (var choice in chunk.GetProperty("choices").EnumerateArray())
            {
                if (choice.GetProperty("delta").TryGetProperty("content", out var content)) text.Append(content.GetString());
                if (choice.GetProperty("finish_reason").ValueKind == JsonValueKind.String) finish = choice.GetProperty("finish_reason").GetString();
            }
        Assert.Equal("stop", finish);
        Assert.True(Validates(PersonSchema, text.ToString()), text.ToString());
    }

    [Fact]
    public async Task Json_object_grammar_and_json_schema_fields_work_on_completions()
    {
        var (status, body) = await server.PostAsync("/v1/completions", """{"prompt": "Once", "max_tokens": 400, "seed": 3, "response_format": {"type": "json_object"}}""");
        Assert.Equal(200, status);
        var choice = body.GetProperty("choices")[0];
        if (choice.GetProperty("finish_reason").GetString() == "stop")
            Assert.Equal(JsonValueKind.Object, JsonDocument.Parse(choice.GetProperty("text").GetString()!).RootElement.ValueKind);

        (status, body) = await server.PostAsync("/v1/completions", """{"prompt": "Once", "max_tokens": 20, "grammar": "root ::= (\"yes\" | \"no\") \"!\""}""");
        Assert.Equal(200, status);
        Assert.Contains(body.GetProperty("choices")[0].GetProperty("text").GetString(), (string[])["yes!", "no!"]);
        Assert.Equal("stop", body.GetProperty("choices")[0].GetProperty("finish_reason").GetString());

        (status, body) = await server.PostAsync("/v1/chat/completions",
            """{"messages": [{"role": "user", "content": "hi"}], "max_tokens": 50, "json_schema": {"type": "array", "items": {"enum": [1, 2]}, "minItems": 2, "maxItems": 2}}""");
        Assert.Equal(200, status);
        var numbers = JsonDocument.Parse(body.GetProperty("choices")[0].GetProperty("message").GetProperty("content").GetString()!).RootElement;
        Assert.Equal(2, numbers.GetArrayLength());
        Assert.All(numbers.EnumerateArray(), n => Assert.Contains(n.GetInt32(), (int[])[1, 2]));
    }

    [Theory]
    [InlineData("\"response_format\": {\"type\": \"json_schema\", \"json_schema\": {\"name\": \"x\", \"schema\": {\"type\": \"string\", \"pattern\": \"a+\"}}}", "response_format.json_schema.schema", "'pattern'")]
    [InlineData("\"response_format\": {\"type\": \"json_schema\", \"json_schema\": {\"name\": \"x\", \"schema\": {\"type\": \"object\", \"properties\": {\"a\": {\"type\": \"numbr\"}}}}}", "response_format.json_schema.schema", "$.properties.a.type")]
    [InlineData("\"response_format\": {\"type\": \"json_schema\", \"json_schema\": {\"schema\": {}}}", "response_format.json_schema.name", "name")]
    [InlineData("\"response_format\": {\"type\": \"json_schema\"}", "response_format.json_schema", "required")]
    [InlineData("\"response_format\": {\"type\": \"yaml\"}", "response_format.type", "yaml")]
    [InlineData("\"response_format\": \"json\"", "response_format", "object")]
    [InlineData("\"grammar\": \"root ::= missing\"", "grammar", "'missing' is used but never defined")]
    [InlineData("\"grammar\": 5", "grammar", "GBNF")]
    [InlineData("\"json_schema\": {\"oneOf\": []}", "json_schema", "'oneOf'")]
    [InlineData("\"grammar\": \"root ::= \\\"a\\\"\", \"response_format\": {\"type\": \"json_object\"}", "grammar", "only one of")]
    public async Task Bad_schemas_and_grammars_are_400s_naming_the_problem(string field, string param, string message)
    {
        foreach (string json in (string[])[$"{{\"messages\": [{{\"role\": \"user\", \"content\": \"hi\"}}], {field}}}", $"{{\"prompt\": \"hi\", {field}}}"])
        {
            var (status, body) = await server.PostAsync(json.StartsWith("{\"messages\"") ? "/v1/chat/completions" : "/v1/completions", json);
            Assert.Equal(400, status);
            var error = body.GetProperty("error");
            Assert.Equal(param, error.GetProperty("param").GetString());
            Assert.Contains(message, error.GetProperty("message").GetString());
        }
    }

    [Fact]
    public async Task A_grammar_that_cannot_finish_within_max_tokens_ends_with_length()
    {
        var (status, body) = await server.PostAsync("/v1/chat/completions",
            """{"messages": [{"role": "user", "content": "hi"}], "max_tokens": 5, "json_schema": {"type": "string", "minLength": 40}}""");
        Assert.Equal(200, status);
        Assert.Equal("length", body.GetProperty("choices")[0].GetProperty("finish_reason").GetString());
        Assert.Equal(5, body.GetProperty("usage").GetProperty("completion_tokens").GetInt32());
    }

    [Fact]
    public async Task GetResponseAsync_of_a_record_returns_a_valid_instance_in_process_and_over_http()
    {
        var messages = new[] { new Microsoft.Extensions.AI.ChatMessage(ChatRole.User, "Plan a story.") };
        var options = new ChatOptions { Temperature = 0.8f, Seed = 11, MaxOutputTokens = 400 };
        using var local = new VeloChatClient(server.Scheduler);
        var localResponse = await local.GetResponseAsync<StoryPlan>(messages, options);
        AssertPlan(localResponse);

        using IChatClient remote = server.ChatClient().AsIChatClient();
        var remoteResponse = await remote.GetResponseAsync<StoryPlan>(messages, options);
        AssertPlan(remoteResponse);
        // Same seed, same model, same schema: the server and the in-process client generate the same plan.
        Assert.Equal(localResponse.Text, remoteResponse.Text);
    }

    private static void AssertPlan(ChatResponse<StoryPlan> response)
    {
        Assert.True(response.TryGetResult(out var plan), response.Text + "\n" + AIJsonUtilities.CreateJsonSchema(typeof(StoryPlan)));
        Assert.NotNull(plan.Hero);
        Assert.NotNull(plan.Friends);
        Assert.True(Enum.IsDefined(plan.Weather));
        Assert.True(Enum.IsDefined(plan.Hero.Kind));
        Assert.All(plan.Friends, friend => Assert.True(Enum.IsDefined(friend.Kind)));
    }
}
