using Velo.Generation;
using Velo.Inference;
using Velo.Threading;

namespace Velo.Tests.Generation;

/// <summary>
/// Speculative decoding in <see cref="TextGenerator"/>: whatever proposes the drafts (a random-weight draft that is
/// mostly wrong, the target itself, prompt lookup), greedy output is the target's own token for token, and sampled
/// output follows the target's distribution.
/// </summary>
public sealed class SpeculativeDecodingTests : IDisposable
{
    private const int Context = 256;
    private readonly string _folder = Directory.CreateTempSubdirectory("velo-speculation-").FullName;
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

    private LanguageModel RandomDraft(bool sameVocabulary = true)
    {
        var model = LanguageModel.Load(RandomDraftModel.Path(_folder, _target.Info.VocabSize, Context, sameVocabulary));
        _loaded.Add(model);
        return model;
    }

    private static GenerationOptions Greedy(int tokens) => new() { MaxTokens = tokens, IgnoreEos = true, Sampling = SamplerOptions.Greedy };

    private int[] Generate(TextGenerator generator, string prompt, GenerationOptions options) =>
        generator.Generate(_target.Tokenizer.Encode(prompt), options).Where(p => p.TokenId >= 0).Select(p => p.TokenId).ToArray();

    private int[] Plain(string prompt, GenerationOptions options)
    {
        using var generator = new TextGenerator(_target, Context, pool: _pool);
        return Generate(generator, prompt, options);
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(4)]
    [InlineData(16)]
    public void Greedy_output_with_a_draft_that_disagrees_often_is_the_targets_own(int draftMax)
    {
        var options = Greedy(120);
        int[] expected = Plain("Once upon a time", options);
        var speculation = new SpeculationOptions { DraftMax = draftMax, DraftPMin = 0 };
        using var generator = new TextGenerator(_target, Context, pool: _pool, speculation: speculation, draft: RandomDraft());
        Assert.Equal(expected, Generate(generator, "Once upon a time", options));
        var stats = generator.LastStats;
        Assert.True(stats.DraftedTokens > stats.AcceptedDrafts, $"{stats.AcceptedDrafts} of {stats.DraftedTokens} drafts accepted: rollback was not exercised");
        // The memory rolled back correctly if a second prompt, sharing a prefix with the first, gives the plain output too.
        Assert.Equal(Plain("Once upon a time there", options), Generate(generator, "Once upon a time there", options));
    }

    [Theory]
    [InlineData(1)]
    [InlineData(4)]
    [InlineData(16)]
    public void Greedy_output_with_the_target_as_its_own_draft_accepts_every_draft(int draftMax)
    {
        var options = Greedy(100);
        int[] expected = Plain("Lily and Ben", options);
        using var generator = new TextGenerator(_target, Context, pool: _pool,
            speculation: new SpeculationOptions { DraftMax = draftMax, DraftPMin = 0 }, draft: _target);
        Assert.Equal(expected, Generate(generator, "Lily and Ben", options));
        var stats = generator.LastStats;
        Assert.True(stats.DraftedTokens > 0);
        Assert.Equal(stats.DraftedTokens, stats.AcceptedDrafts);
        Assert.True(stats.DecodePasses <= (expected.Length + draftMax) / (draftMax + 1) + 1, $"{stats.DecodePasses} passes for {expected.Length} tokens");
    }

    [Theory]
    [InlineData(1, 4)]
    [InlineData(2, 16)]
    [InlineData(3, 8)]
    public void Greedy_output_with_prompt_lookup_is_the_targets_own(int n, int draftMax)
    {
        // The tiny model loops on its own phrases, so lookups find continuations, right and wrong.
        const string prompt = "Once upon a time, there was a little girl named Lily. She loved to play outside in the park. Once upon a time";
        var options = Greedy(150);
        int[] expected = Plain(prompt, options);
        using var generator = new TextGenerator(_target, Context, pool: _pool, speculation: new SpeculationOptions { NGram = n, DraftMax = draftMax });
        Assert.Equal(expected, Generate(generator, prompt, options));
        Assert.True(generator.LastStats.AcceptedDrafts > 0, "prompt lookup never proposed a right token");
    }

    [Fact]
    public void A_draft_with_another_vocabulary_is_refused_with_a_clear_error()
    {
        var draft = RandomDraft(sameVocabulary: false);
        var error = Assert.Throws<ArgumentException>(() =>
            new TextGenerator(_target, Context, pool: _pool, speculation: new SpeculationOptions(), draft: draft));
        Assert.Contains("do not share a vocabulary", error.Message);
    }

    /// <summary>
    /// The third generated token (the second verified by speculation, after the first verified draft) over 3000 seeds
    /// against 3000 seeds of plain sampling: a two-sample chi-square test over the tokens seen at least 10 times in all
    /// (the rest pooled in one bin). The bound is the 0.999 quantile of chi-square with the bins' degrees of freedom
    /// (Wilson-Hilferty): a correct implementation fails for one set of seeds in a thousand, and the fixed seeds make
    /// the result repeatable. A random draft is mostly wrong and tests the acceptance ratio (always accepting gives a
    /// statistic of thousands); prompt lookup's point-mass proposals on a repetitive prompt are often likely tokens and
    /// test the resampling from the residual (resampling from the target's own distribution fails).
    /// </summary>
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Sampled_output_with_speculation_follows_the_targets_distribution(bool promptLookup)
    {
        const int draws = 3000, position = 2;
        var sampling = new SamplerOptions { Temperature = 1.0f, TopK = 0, TopP = 1, MinP = 0.02f };
        int[] prompt = _target.Tokenizer.Encode("Once upon a time, there was a little girl. She was a little girl. Once upon a time, there was a");

        int[] Draws(TextGenerator generator)
        {
            var tokens = new int[draws];
            for (int i = 0; i < draws; i++)
            {
                var options = new GenerationOptions { MaxTokens = position + 1, IgnoreEos = true, Sampling = sampling with { Seed = (ulong)(1000 + i) } };
                tokens[i] = generator.Generate(prompt, options).Where(p => p.TokenId >= 0).ElementAt(position).TokenId;
            }
            return tokens;
        }

        int[] plain, speculative;
        using (var generator = new TextGenerator(_target, Context, pool: _pool))
            plain = Draws(generator);
        var speculation = promptLookup ? new SpeculationOptions { NGram = 1, DraftMax = 4 } : new SpeculationOptions { DraftMax = 4, DraftPMin = 0 };
        using (var generator = new TextGenerator(_target, Context, pool: _pool, speculation: speculation, draft: promptLookup ? null : RandomDraft()))
        {
            speculative = Draws(generator);
            Assert.True(generator.LastStats.DraftedTokens > 0);
        }

        SameDistribution.Assert(plain, speculative);
    }
}
