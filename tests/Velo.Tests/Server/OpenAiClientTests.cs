#pragma warning disable OPENAI001 // Seed is marked experimental in the OpenAI client
using System.ClientModel;
using System.Text;
using OpenAI.Chat;
using Velo.Generation;
using Velo.Text.ChatTemplates;

namespace Velo.Tests.Server;

/// <summary>The server driven by the official OpenAI .NET client, as an application would use it.</summary>
public sealed class OpenAiClientTests(SharedTestServer server) : OpenAiClientContract(server), IClassFixture<SharedTestServer>;

/// <summary>What the official OpenAI .NET client sees of a server: run against a node (<see cref="OpenAiClientTests"/>)
/// and through a gateway in front of one (<see cref="Gateway.GatewayOpenAiClientTests"/>), with the same results.</summary>
public abstract class OpenAiClientContract(TestServer server)
{
    private static ChatCompletionOptions Greedy(int maxTokens) => new() { Temperature = 0, MaxOutputTokenCount = maxTokens };

    private static async Task<(string Text, ChatTokenUsage? Usage, ChatFinishReason? Finish)> StreamAsync(ChatClient client, IEnumerable<OpenAI.Chat.ChatMessage> messages,
        ChatCompletionOptions options, CancellationToken cancellation = default)
    {
        var text = new StringBuilder();
        ChatTokenUsage? usage = null;
        ChatFinishReason? finish = null;
        await foreach (var update in client.CompleteChatStreamingAsync(messages, options, cancellation))
        {
            foreach (var part in update.ContentUpdate) text.Append(part.Text);
            usage ??= update.Usage;
            finish ??= update.FinishReason;
        }
        return (text.ToString(), usage, finish);
    }

    [Fact]
    public async Task Chat_completion_returns_text_and_exact_usage()
    {
        var client = server.ChatClient();
        ChatCompletion completion = await client.CompleteChatAsync([new SystemChatMessage("You tell stories."), new UserChatMessage("Tell me about a cat.")], Greedy(24));

        int promptTokens = server.Engine.Generator.Chat.Format([new("system", "You tell stories."), new("user", "Tell me about a cat.")]).Length;
        Assert.Equal(ChatFinishReason.Length, completion.FinishReason);
        Assert.Equal(promptTokens, completion.Usage.InputTokenCount);
        Assert.Equal(24, completion.Usage.OutputTokenCount);
        Assert.Equal(promptTokens + 24, completion.Usage.TotalTokenCount);
        Assert.Equal(ChatMessageRole.Assistant, completion.Role);
        Assert.False(string.IsNullOrWhiteSpace(completion.Content[0].Text));
    }

    [Fact]
    public async Task Streamed_chat_equals_the_whole_answer_and_ends_with_usage()
    {
        var client = server.ChatClient();
        OpenAI.Chat.ChatMessage[] messages = [new UserChatMessage("Once upon a time there was a dog.")];
        ChatCompletion whole = await client.CompleteChatAsync(messages, Greedy(30));
        var (text, usage, finish) = await StreamAsync(client, messages, Greedy(30));

        Assert.Equal(whole.Content[0].Text, text);
        Assert.Equal(whole.FinishReason, finish);
        Assert.NotNull(usage);
        Assert.Equal(whole.Usage.InputTokenCount, usage.InputTokenCount);
        Assert.Equal(whole.Usage.OutputTokenCount, usage.OutputTokenCount);
    }

    [Fact]
    public async Task A_stop_string_ends_the_answer_before_it()
    {
        var client = server.ChatClient();
        OpenAI.Chat.ChatMessage[] messages = [new UserChatMessage("Tell me a story.")];
        string full = (await client.CompleteChatAsync(messages, Greedy(40))).Value.Content[0].Text;
        string stop = full.Substring(full.Length / 2, 3);
        string expected = full[..full.IndexOf(stop, StringComparison.Ordinal)];

        var options = Greedy(40);
        options.StopSequences.Add(stop);
        ChatCompletion stopped = await client.CompleteChatAsync(messages, options);
        Assert.Equal(expected, stopped.Content[0].Text);
        Assert.Equal(ChatFinishReason.Stop, stopped.FinishReason);

        var (streamed, _, finish) = await StreamAsync(client, messages, options);
        Assert.Equal(expected, streamed);
        Assert.Equal(ChatFinishReason.Stop, finish);
    }

    [Fact]
    public async Task The_same_seed_gives_the_same_sampled_answer()
    {
        var client = server.ChatClient();
        OpenAI.Chat.ChatMessage[] messages = [new UserChatMessage("Tell me a story.")];
        ChatCompletionOptions Seeded(long seed) => new() { Temperature = 1.5f, TopP = 1, MaxOutputTokenCount = 40, Seed = seed };

        string first = (await client.CompleteChatAsync(messages, Seeded(7))).Value.Content[0].Text;
        string again = (await client.CompleteChatAsync(messages, Seeded(7))).Value.Content[0].Text;
        Assert.Equal(first, again);
        var others = new List<string>();
        foreach (long seed in new long[] { 8, 9, 10 }) others.Add((await client.CompleteChatAsync(messages, Seeded(seed))).Value.Content[0].Text);
        Assert.Contains(others, other => other != first);
    }

    [Fact]
    public async Task Logprobs_list_every_token_with_its_alternatives()
    {
        var client = server.ChatClient();
        var options = Greedy(12);
        options.IncludeLogProbabilities = true;
        options.TopLogProbabilityCount = 3;
        ChatCompletion completion = await client.CompleteChatAsync([new UserChatMessage("Hello")], options);

        Assert.Equal(completion.Usage.OutputTokenCount, completion.ContentTokenLogProbabilities.Count);
        Assert.Equal(completion.Content[0].Text, string.Concat(completion.ContentTokenLogProbabilities.Select(t => t.Token)));
        foreach (var token in completion.ContentTokenLogProbabilities)
        {
            Assert.Equal(3, token.TopLogProbabilities.Count);
            // Greedy picks the most likely token.
            Assert.Equal(token.TopLogProbabilities[0].Token, token.Token);
            Assert.Equal(token.TopLogProbabilities[0].LogProbability, token.LogProbability);
            Assert.True(token.LogProbability <= 0);
            Assert.True(token.TopLogProbabilities[1].LogProbability <= token.TopLogProbabilities[0].LogProbability);
        }
    }

    [Fact]
    public async Task The_models_list_names_the_served_model()
    {
        var models = server.Client().GetOpenAIModelClient();
        var list = await models.GetModelsAsync();
        Assert.Equal([TestServer.ModelId], list.Value.Select(m => m.Id));
        Assert.Equal(TestServer.ModelId, (await models.GetModelAsync(TestServer.ModelId)).Value.Id);
        var missing = await Assert.ThrowsAsync<ClientResultException>(() => models.GetModelAsync("gpt-4"));
        Assert.Equal(404, missing.Status);
    }

    [Fact]
    public async Task An_unknown_model_name_is_a_404()
    {
        var error = await Assert.ThrowsAsync<ClientResultException>(() => server.ChatClient("gpt-4").CompleteChatAsync([new UserChatMessage("Hi")], Greedy(4)));
        Assert.Equal(404, error.Status);
        Assert.Contains("model_not_found", error.GetRawResponse()!.Content.ToString());
    }

    [Fact]
    public async Task A_prompt_longer_than_the_context_is_a_400()
    {
        string longText = string.Join(' ', Enumerable.Repeat("The little dog ran to the park.", 200));
        var error = await Assert.ThrowsAsync<ClientResultException>(() => server.ChatClient().CompleteChatAsync([new UserChatMessage(longText)], Greedy(4)));
        Assert.Equal(400, error.Status);
        Assert.Contains("context_length_exceeded", error.GetRawResponse()!.Content.ToString());
    }

    [Fact]
    public async Task Cancelling_a_stream_mid_way_frees_its_sequence()
    {
        // Its own server, so no other test's requests share the counters; a long context and a banned end-of-text
        // token make the generation run for thousands of steps unless it is cancelled. The client must really close its
        // connection: a default HttpClient would keep reading (draining) the abandoned stream, which is not a disconnect.
        using var http = TestServer.HttpClientWithoutDrain();
        using var longServer = new TestServer(parallel: 2, contextLength: 4096);
        var options = new ChatCompletionOptions { Temperature = 0, MaxOutputTokenCount = 4000 };
        options.LogitBiases[longServer.Model.Tokenizer.EosId] = -100;
        using var cancel = new CancellationTokenSource();
        int updates = 0;
        await Assert.ThrowsAnyAsync<OperationCanceledException>(async () =>
        {
            await foreach (var _ in longServer.DisconnectingChatClient(http).CompleteChatStreamingAsync([new UserChatMessage("Tell me a long story.")], options, cancel.Token))
                if (++updates == 3) cancel.Cancel();
        });
        Assert.Equal(3, updates);
        await Eventually(() => longServer.Scheduler.CancelledRequests == 1);
        Assert.Equal(0, longServer.Scheduler.ActiveSequences);
        var after = await longServer.ChatClient().CompleteChatAsync([new UserChatMessage("Hello")], Greedy(5));
        Assert.Equal(5, after.Value.Usage.OutputTokenCount);
    }

    /// <summary>Waits for a condition the server reaches asynchronously; fails after a generous bound, never asserts a duration.</summary>
    internal static async Task Eventually(Func<bool> condition)
    {
        for (int i = 0; i < 3000 && !condition(); i++) await Task.Delay(10);
        Assert.True(condition());
    }

    [Fact]
    public async Task Eight_concurrent_greedy_streams_each_equal_the_same_request_alone()
    {
        var client = server.ChatClient();
        string[] prompts =
        [
            "Tell me about a cat.", "Lily went to the park.", "What did the bird say?", "Tom had a red ball.",
            "The sun was hot.", "Mom made a cake.", "A big tree fell down.", "Sam and his dog played.",
        ];
        var alone = new List<string>();
        foreach (string prompt in prompts) alone.Add((await StreamAsync(client, [new UserChatMessage(prompt)], Greedy(48))).Text);

        var together = await Task.WhenAll(prompts.Select(p => StreamAsync(client, [new UserChatMessage(p)], Greedy(48))));
        for (int i = 0; i < prompts.Length; i++) Assert.Equal(alone[i], together[i].Text);
        Assert.True(alone.Distinct().Count() > 1, "different prompts should give different answers");
    }
}
