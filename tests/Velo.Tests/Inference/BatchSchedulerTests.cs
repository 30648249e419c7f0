using Velo.Generation;
using Velo.Inference;
using Velo.Threading;

namespace Velo.Tests.Inference;

public sealed class BatchSchedulerTests : IDisposable
{
    private static readonly string[] Prompts =
    [
        "Once upon a time", "Lily and Ben went to the park", "The cat sat", "One day, a little bird",
        "Tom had a red ball", "There was a big tree", "Mom said", "The sun was hot and the dog",
    ];

    private readonly LanguageModel _model = LanguageModel.Load(TestPaths.Stories260K);
    private readonly WorkerPool _pool = new(2);

    public void Dispose()
    {
        _pool.Dispose();
        _model.Dispose();
    }

    private GenerationRequest Greedy(string prompt, int maxTokens = 48) => new()
    {
        Prompt = _model.Tokenizer.Encode(prompt),
        Options = new GenerationOptions { MaxTokens = maxTokens, IgnoreEos = true, Sampling = SamplerOptions.Greedy },
    };

    private static async Task<int[]> Tokens(GenerationStream stream)
    {
        var ids = new List<int>();
        await foreach (var piece in stream.Pieces.ReadAllAsync())
            if (piece.TokenId >= 0) ids.Add(piece.TokenId);
        await stream.Completion;
        return ids.ToArray();
    }

    [Fact]
    public async Task Eight_concurrent_greedy_sequences_each_match_the_same_request_alone()
    {
        using var scheduler = new BatchScheduler(_model, new BatchSchedulerOptions { Parallel = 8, ContextLength = 256 }, _pool);
        var alone = new int[Prompts.Length][];
        for (int i = 0; i < Prompts.Length; i++) alone[i] = await Tokens(scheduler.Submit(Greedy(Prompts[i], 40 + 3 * i)));

        // Fresh slots, so no prompt prefix is reused from the runs above.
        using var busy = new BatchScheduler(_model, new BatchSchedulerOptions { Parallel = 8, ContextLength = 256, MaxBatchTokens = 5 }, _pool, start: false);
        var streams = Prompts.Select((p, i) => busy.Submit(Greedy(p, 40 + 3 * i))).ToArray();
        busy.Start();
        var together = await Task.WhenAll(streams.Select(Tokens));

        for (int i = 0; i < Prompts.Length; i++)
        {
            Assert.Equal(40 + 3 * i, alone[i].Length);
            Assert.Equal(alone[i], together[i]);
        }
    }

    [Fact]
    public async Task Greedy_output_matches_the_single_sequence_generator()
    {
        var request = Greedy("Once upon a time", 60);
        using var generator = new TextGenerator(_model, 256, pool: _pool);
        int[] expected = generator.Generate(request.Prompt, request.Options).Select(p => p.TokenId).ToArray();
        using var scheduler = new BatchScheduler(_model, new BatchSchedulerOptions { Parallel = 2, ContextLength = 256 }, _pool);
        Assert.Equal(expected, await Tokens(scheduler.Submit(request)));
    }

    [Fact]
    public async Task A_prompt_extending_a_finished_one_reuses_its_cache_and_generates_the_same_tokens()
    {
        var first = Greedy("Once upon a time, there was a little girl named Lily", 20);
        var second = Greedy("Once upon a time, there was a little girl named Lily. She liked to play", 30);
        using var reusing = new BatchScheduler(_model, new BatchSchedulerOptions { Parallel = 2, ContextLength = 256 }, _pool);
        await Tokens(reusing.Submit(first));
        var resumed = reusing.Submit(second);
        int[] resumedTokens = await Tokens(resumed);

        using var fresh = new BatchScheduler(_model, new BatchSchedulerOptions { Parallel = 2, ContextLength = 256 }, _pool);
        var cold = fresh.Submit(second);
        Assert.Equal(await Tokens(cold), resumedTokens);
        Assert.Equal(0, (await cold.Completion).CachedPromptTokens);
        Assert.True((await resumed.Completion).CachedPromptTokens >= first.Prompt.Count - 1);
    }

    [Fact]
    public async Task A_request_cancelled_while_queued_never_runs_and_the_others_still_do()
    {
        using var scheduler = new BatchScheduler(_model, new BatchSchedulerOptions { Parallel = 1, ContextLength = 256, QueueCapacity = 1 }, _pool, start: false);
        using var cancel = new CancellationTokenSource();
        var kept = scheduler.Submit(Greedy("Once upon a time", 8));
        var dropped = scheduler.Submit(Greedy("The cat sat", 8), cancel.Token);
        Assert.Throws<SchedulerBusyException>(() => scheduler.Submit(Greedy("Mom said", 8)));
        cancel.Cancel();
        scheduler.Start();

        Assert.Equal(8, (await Tokens(kept)).Length);
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => Tokens(dropped));
        Assert.True(dropped.Completion.IsCanceled);
        Assert.Equal(1, scheduler.CancelledRequests);
    }

    [Fact]
    public void Requests_the_model_cannot_run_are_refused_at_submission()
    {
        using var scheduler = new BatchScheduler(_model, new BatchSchedulerOptions { Parallel = 1, ContextLength = 16 }, _pool);
        Assert.Throws<PromptTooLongException>(() => scheduler.Submit(new GenerationRequest { Prompt = new int[16] }));
        Assert.Throws<ArgumentException>(() => scheduler.Submit(new GenerationRequest { Prompt = [] }));
        Assert.Throws<ArgumentException>(() => scheduler.Submit(new GenerationRequest { Prompt = [1, 512] }));
        Assert.Throws<ArgumentException>(() => scheduler.Submit(new GenerationRequest { Prompt = [1], TopLogprobs = 21 }));
        Assert.Throws<ArgumentException>(() => scheduler.Submit(new GenerationRequest { Prompt = [1], LogitBias = new Dictionary<int, float> { [600] = 1 } }));
    }
}
