using System.Net.Http.Json;
using System.Text.Json;
using Velo.Generation;
using Velo.Inference;
using Velo.Server;
using Velo.Threading;

namespace Velo.Tests.Generation;

/// <summary>
/// Speculative decoding inside continuous batching (<see cref="BatchScheduler"/>): one draft state with a KV sequence
/// per slot, or prompt lookup per sequence, all sequences' verification rows in one target pass. Greedy output is the
/// target's own, alone and among other sequences; sampled output follows the target's distribution.
/// </summary>
public sealed class SchedulerSpeculationTests : IDisposable
{
    private const int Context = 256;

    private static readonly string[] Prompts =
    [
        "Once upon a time", "Lily and Ben went to the park", "The cat sat", "One day, a little bird",
        "Tom had a red ball", "There was a big tree", "Mom said", "The sun was hot and the dog",
    ];

    private readonly string _folder = Directory.CreateTempSubdirectory("velo-scheduler-speculation-").FullName;
    private readonly LanguageModel _target = LanguageModel.Load(TestPaths.Stories260K);
    private readonly WorkerPool _pool = new(2);
    private readonly List<LanguageModel> _loaded = [];

    public void Dispose()
    {
        foreach (var model in _loaded) model.Dispose();
        _pool.Dispose();
        _target.Dispose();
        Directory.Delete(_folder, recursive: true);
    }

    private string RandomDraftPath(bool sameVocabulary = true) =>
        RandomDraftModel.Path(_folder, _target.Info.VocabSize, Context, sameVocabulary);

    private LanguageModel RandomDraft(bool sameVocabulary = true)
    {
        var model = LanguageModel.Load(RandomDraftPath(sameVocabulary));
        _loaded.Add(model);
        return model;
    }

    private GenerationRequest Greedy(string prompt, int maxTokens) => new()
    {
        Prompt = _target.Tokenizer.Encode(prompt),
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

    /// <summary>Each prompt's greedy output from a scheduler without speculation; lengths differ, so sequences end at different steps.</summary>
    private async Task<int[][]> Plain(string[] prompts)
    {
        using var scheduler = new BatchScheduler(_target, new BatchSchedulerOptions { Parallel = 8, ContextLength = Context }, _pool);
        return await Task.WhenAll(prompts.Select((p, i) => Tokens(scheduler.Submit(Greedy(p, 40 + 3 * i)))));
    }

    /// <summary>All prompts submitted before the loop starts, so they run together from the first step.</summary>
    private async Task<int[][]> Together(BatchScheduler scheduler, string[] prompts)
    {
        var streams = prompts.Select((p, i) => scheduler.Submit(Greedy(p, 40 + 3 * i))).ToArray();
        scheduler.Start();
        return await Task.WhenAll(streams.Select(Tokens));
    }

    [Fact]
    public async Task Greedy_output_with_a_draft_that_disagrees_often_is_the_targets_own_for_draft_lengths_1_to_16_alone_and_among_7_others()
    {
        int[][] expected = await Plain(Prompts);
        var draft = RandomDraft();
        for (int draftMax = 1; draftMax <= 16; draftMax++)
        {
            // Odd lengths with a pass too small for every sequence's drafts, so the budget is shared and cut.
            var options = new BatchSchedulerOptions
            {
                Parallel = 8, ContextLength = Context, MaxBatchTokens = draftMax % 2 == 1 ? 20 : 512,
                Speculation = new SpeculationOptions { DraftMax = draftMax, DraftPMin = 0 },
            };
            using (var alone = new BatchScheduler(_target, options, _pool, draft: draft))
            {
                Assert.Equal(expected[0], await Tokens(alone.Submit(Greedy(Prompts[0], 40))));
                var counters = alone.Speculation;
                Assert.True(counters.DraftedTokens > counters.AcceptedDrafts, $"draft length {draftMax}: {counters.AcceptedDrafts} of {counters.DraftedTokens} accepted, no rollback");
            }
            using var together = new BatchScheduler(_target, options, _pool, start: false, draft: draft);
            var outputs = await Together(together, Prompts);
            for (int i = 0; i < Prompts.Length; i++) Assert.Equal(expected[i], outputs[i]);
            Assert.True(together.Speculation.DraftedTokens > together.Speculation.AcceptedDrafts);
        }
    }

    [Fact]
    public async Task The_target_as_its_own_draft_has_every_draft_of_eight_concurrent_sequences_accepted()
    {
        int[][] expected = await Plain(Prompts);
        var options = new BatchSchedulerOptions
        {
            Parallel = 8, ContextLength = Context, Speculation = new SpeculationOptions { DraftMax = 6, DraftPMin = 0 },
        };
        using var scheduler = new BatchScheduler(_target, options, _pool, start: false, draft: _target);
        var outputs = await Together(scheduler, Prompts);
        for (int i = 0; i < Prompts.Length; i++) Assert.Equal(expected[i], outputs[i]);
        var counters = scheduler.Speculation;
        Assert.True(counters.DraftedTokens > 0);
        Assert.Equal(counters.DraftedTokens, counters.AcceptedDrafts);
        Assert.True(counters.TokensPerStep > 4, $"{counters.TokensPerStep:F2} tokens per step with drafts of 6 always accepted");
    }

    [Fact]
    public async Task Greedy_output_with_prompt_lookup_among_concurrent_sequences_is_the_targets_own()
    {
        // The tiny model loops on its own phrases, so lookups find continuations, right and wrong.
        string[] prompts = [.. Prompts.Select(p => $"{p}. Once upon a time, there was a little girl named Lily. She loved to play. {p}")];
        int[][] expected = await Plain(prompts);
        var options = new BatchSchedulerOptions
        {
            Parallel = 8, ContextLength = Context, Speculation = new SpeculationOptions { NGram = 2, DraftMax = 8 },
        };
        using var scheduler = new BatchScheduler(_target, options, _pool, start: false);
        var outputs = await Together(scheduler, prompts);
        for (int i = 0; i < prompts.Length; i++) Assert.Equal(expected[i], outputs[i]);
        var counters = scheduler.Speculation;
        Assert.True(counters.AcceptedDrafts > 0 && counters.DraftedTokens > counters.AcceptedDrafts,
            $"{counters.AcceptedDrafts} of {counters.DraftedTokens} lookups accepted: both outcomes should occur");
    }

    [Fact]
    public void A_draft_with_another_vocabulary_is_refused_when_the_scheduler_is_built()
    {
        var options = new BatchSchedulerOptions { Parallel = 2, ContextLength = Context, Speculation = new SpeculationOptions() };
        var error = Assert.Throws<ArgumentException>(() => new BatchScheduler(_target, options, _pool, draft: RandomDraft(sameVocabulary: false)));
        Assert.Contains("do not share a vocabulary", error.Message);
    }

    [Fact]
    public void A_draft_that_does_not_fit_beside_the_model_is_refused_with_what_would_fit()
    {
        var options = new BatchSchedulerOptions { Parallel = 2, ContextLength = Context, Speculation = new SpeculationOptions() };
        // The model's own plan as the scheduler makes it (512 tokens a pass, a logits row per sequence and draft), with a
        // tenth more for the reserve: room for the model, far too little for a draft as large beside it.
        long model = MemoryPlan.For(_target.Model, Context, 2, 512, 2 * 17, default).TotalBytes;
        var error = Assert.Throws<NotEnoughMemoryException>(() =>
            new BatchScheduler(_target, options with { AvailableMemoryBytes = model * 10 / 9 + 4096 }, _pool, draft: _target));
        Assert.StartsWith($"the draft model {_target.Path} does not fit beside the model: this configuration needs", error.Message);
    }

    [Fact]
    public void A_server_with_a_draft_of_another_vocabulary_fails_to_load_with_the_reason()
    {
        using var engine = new VeloEngine(new VeloServerOptions
        {
            ModelPath = TestPaths.Stories260K, ContextLength = Context, Parallel = 2, Threads = 1,
            DraftModelPath = RandomDraftPath(sameVocabulary: false), Speculation = new SpeculationOptions(),
        });
        var error = Assert.Throws<ArgumentException>(engine.Load);
        Assert.Contains("do not share a vocabulary", error.Message);
        Assert.Same(error, engine.LoadFailure);
    }

    /// <summary>
    /// The third generated token (the second verified by speculation) over 2400 seeds with a random draft, eight requests
    /// at a time in the scheduler, against 2400 seeds of plain sampling: a two-sample chi-square test over the tokens seen
    /// at least 10 times in all (the rest pooled in one bin), bounded by the 0.999 quantile of chi-square with the bins'
    /// degrees of freedom (Wilson-Hilferty). A correct implementation fails for one set of seeds in a thousand; the fixed
    /// seeds make the result repeatable. Always accepting the mostly wrong drafts gives a statistic in the thousands.
    /// </summary>
    [Fact]
    public async Task Sampled_output_with_a_draft_among_concurrent_sequences_follows_the_targets_distribution()
    {
        const int draws = 2400, position = 2;
        var sampling = new SamplerOptions { Temperature = 1.0f, TopK = 0, TopP = 1, MinP = 0.02f };
        int[] prompt = _target.Tokenizer.Encode("Once upon a time, there was a little girl. She was a little girl. Once upon a time, there was a");

        async Task<int[]> Draws(BatchScheduler scheduler)
        {
            var tokens = new int[draws];
            for (int first = 0; first < draws; first += 8)
            {
                var streams = Enumerable.Range(first, 8).Select(i => scheduler.Submit(new GenerationRequest
                {
                    Prompt = prompt,
                    Options = new GenerationOptions { MaxTokens = position + 1, IgnoreEos = true, Sampling = sampling with { Seed = (ulong)(1000 + i) } },
                })).ToArray();
                var outputs = await Task.WhenAll(streams.Select(Tokens));
                for (int j = 0; j < outputs.Length; j++) tokens[first + j] = outputs[j][position];
            }
            return tokens;
        }

        int[] plain, speculative;
        using (var scheduler = new BatchScheduler(_target, new BatchSchedulerOptions { Parallel = 8, ContextLength = Context }, _pool))
            plain = await Draws(scheduler);
        var options = new BatchSchedulerOptions
        {
            Parallel = 8, ContextLength = Context, Speculation = new SpeculationOptions { DraftMax = 4, DraftPMin = 0 },
        };
        using (var scheduler = new BatchScheduler(_target, options, _pool, draft: RandomDraft()))
        {
            speculative = await Draws(scheduler);
            Assert.True(scheduler.Speculation.DraftedTokens > 0);
        }

        SameDistribution.Assert(plain, speculative);
    }

    [Fact]
    public async Task A_server_with_a_draft_answers_eight_concurrent_greedy_completions_as_the_target_alone_and_reports_the_drafts_in_metrics()
    {
        string[] expected = await CompletionTexts(speculation: null);
        string[] speculative = await CompletionTexts(new SpeculationOptions { DraftMax = 5, DraftPMin = 0 }, metrics =>
        {
            Assert.Matches(@"velo_draft_tokens_total [1-9]", metrics);
            Assert.Matches(@"velo_draft_tokens_accepted_total \d", metrics);
            Assert.Matches(@"velo_decode_tokens_per_step \d", metrics);
        });
        Assert.Equal(expected, speculative);
    }

    private async Task<string[]> CompletionTexts(SpeculationOptions? speculation, Action<string>? checkMetrics = null)
    {
        using var engine = new VeloEngine(new VeloServerOptions
        {
            ModelPath = TestPaths.Stories260K, ContextLength = Context, Parallel = 8, Threads = 2,
            DraftModelPath = speculation != null ? RandomDraftPath() : null, Speculation = speculation,
        });
        engine.Load();
        var app = VeloServer.Build(engine, "127.0.0.1", 0);
        await app.StartAsync();
        try
        {
            using var http = new HttpClient { BaseAddress = VeloServer.Address(app), Timeout = TimeSpan.FromMinutes(2) };
            var texts = await Task.WhenAll(Prompts.Select(async (prompt, i) =>
            {
                using var response = await http.PostAsJsonAsync("/v1/completions",
                    new { prompt, max_tokens = 40 + 3 * i, temperature = 0, ignore_eos = true });
                response.EnsureSuccessStatusCode();
                using var body = JsonDocument.Parse(await response.Content.ReadAsStringAsync());
                return body.RootElement.GetProperty("choices")[0].GetProperty("text").GetString()!;
            }));
            checkMetrics?.Invoke(await http.GetStringAsync("/metrics"));
            return texts;
        }
        finally
        {
            await app.StopAsync();
            await app.DisposeAsync();
        }
    }
}
