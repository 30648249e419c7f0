using System.Text;
using Microsoft.Extensions.AI;
using Velo.Generation;
using Velo.Inference;
using Velo.Threading;

namespace Velo.Tests.Inference;

public sealed class VeloChatClientTests : IDisposable
{
    private readonly LanguageModel _model = LanguageModel.Load(TestPaths.Stories260K);
    private readonly WorkerPool _pool = new(2);
    private readonly BatchScheduler _scheduler;
    private readonly IChatClient _client;

    public VeloChatClientTests()
    {
        _scheduler = new BatchScheduler(_model, new BatchSchedulerOptions { Parallel = 4, ContextLength = 512 }, _pool);
        _client = new VeloChatClient(_scheduler);
    }

    public void Dispose()
    {
        _client.Dispose();
        _scheduler.Dispose();
        _pool.Dispose();
        _model.Dispose();
    }

    private static readonly ChatMessage[] Conversation = [new(ChatRole.System, "You tell stories."), new(ChatRole.User, "Tell me about a dog.")];

    [Fact]
    public async Task A_response_has_the_text_usage_and_finish_reason_of_the_generation()
    {
        var response = await _client.GetResponseAsync(Conversation, new ChatOptions { Temperature = 0, MaxOutputTokens = 20 });

        int promptTokens = new ChatPromptFormatter(_model).Format([new("system", "You tell stories."), new("user", "Tell me about a dog.")]).Length;
        Assert.Equal(ChatFinishReason.Length, response.FinishReason);
        Assert.Equal(promptTokens, response.Usage!.InputTokenCount);
        Assert.Equal(20, response.Usage.OutputTokenCount);
        Assert.Equal(ChatRole.Assistant, response.Messages.Single().Role);
        Assert.Equal("stories260K", response.ModelId);

        var expected = _scheduler.Submit(new GenerationRequest
        {
            Prompt = new ChatPromptFormatter(_model).Format([new("system", "You tell stories."), new("user", "Tell me about a dog.")]),
            Options = new GenerationOptions { MaxTokens = 20, Sampling = SamplerOptions.Greedy },
        });
        var text = new StringBuilder();
        await foreach (var piece in expected.Pieces.ReadAllAsync()) text.Append(piece.Text);
        Assert.Equal(text.ToString(), response.Text);
    }

    [Fact]
    public async Task Streaming_gives_the_same_text_and_ends_with_usage()
    {
        var options = new ChatOptions { Temperature = 0, MaxOutputTokens = 25 };
        var whole = await _client.GetResponseAsync(Conversation, options);
        var text = new StringBuilder();
        UsageDetails? usage = null;
        ChatFinishReason? finish = null;
        await foreach (var update in _client.GetStreamingResponseAsync(Conversation, options))
        {
            text.Append(update.Text);
            usage ??= update.Contents.OfType<UsageContent>().FirstOrDefault()?.Details;
            finish ??= update.FinishReason;
        }
        Assert.Equal(whole.Text, text.ToString());
        Assert.Equal(whole.Usage!.OutputTokenCount, usage!.OutputTokenCount);
        Assert.Equal(whole.FinishReason, finish);
    }

    [Fact]
    public async Task Chat_options_reach_the_sampler()
    {
        var greedy = new ChatOptions { Temperature = 0, MaxOutputTokens = 30 };
        string full = (await _client.GetResponseAsync(Conversation, greedy)).Text;
        string stop = full.Substring(full.Length / 2, 3);
        var stopped = await _client.GetResponseAsync(Conversation, new ChatOptions { Temperature = 0, MaxOutputTokens = 30, StopSequences = [stop] });
        Assert.Equal(full[..full.IndexOf(stop, StringComparison.Ordinal)], stopped.Text);
        Assert.Equal(ChatFinishReason.Stop, stopped.FinishReason);

        ChatOptions Seeded(long seed) => new() { Temperature = 1.5f, TopP = 1, TopK = 0, MaxOutputTokens = 30, Seed = seed };
        string first = (await _client.GetResponseAsync(Conversation, Seeded(3))).Text;
        Assert.Equal(first, (await _client.GetResponseAsync(Conversation, Seeded(3))).Text);
        var others = new List<string>();
        foreach (long seed in new long[] { 4, 5, 6 }) others.Add((await _client.GetResponseAsync(Conversation, Seeded(seed))).Text);
        Assert.Contains(others, other => other != first);

        // Instructions become a system message, exactly as if the caller had written one.
        var withInstructions = await _client.GetResponseAsync([new ChatMessage(ChatRole.User, "Tell me about a dog.")],
            new ChatOptions { Temperature = 0, MaxOutputTokens = 30, Instructions = "You tell stories." });
        Assert.Equal(full, withInstructions.Text);
    }

    [Fact]
    public void Metadata_names_the_model()
    {
        var metadata = _client.GetService<ChatClientMetadata>();
        Assert.Equal("velo", metadata!.ProviderName);
        Assert.Equal("stories260K", metadata.DefaultModelId);
        Assert.Same(_scheduler, _client.GetService<BatchScheduler>());
    }
}
