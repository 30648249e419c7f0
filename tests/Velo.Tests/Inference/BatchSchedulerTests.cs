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
        int[] expected = generator.Generate(request.Prompt, request.Options).Select(p => p.Id).ToArray();
        using var scheduler = new BatchScheduler(_model, new BatchSchedulerOptions { Parallel = 2, ContextLength = 256 }, _pool);
        Assert.Equal(expected, await Tokens(scheduler.Submit(request)));
    }
}
