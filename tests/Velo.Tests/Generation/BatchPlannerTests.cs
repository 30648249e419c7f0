using Velo.Generation;
using Velo.Inference;
using Velo.Models;
using Velo.Threading;

namespace Velo.Tests.Generation;

/// <summary>
/// The planner gives a sequence several tokens with logits in one pass (verification of drafts): each logits row must
/// equal, bit for bit, what single decode steps of the same tokens give, and rejected drafts must leave the memory
/// as if they had never run.
/// </summary>
public sealed class BatchPlannerTests : IDisposable
{
    private const int Context = 64;
    private readonly LanguageModel _model = LanguageModel.Load(TestPaths.Stories260K);
    private readonly WorkerPool _pool = new(2);

    public void Dispose()
    {
        _pool.Dispose();
        _model.Dispose();
    }

    private int[] Prompt(string text) => _model.Tokenizer.Encode(text);

    private IModelState NewState(int sequences, int logitRows) =>
        _model.Model.CreateState(Context, maxBatch: 32, sequences: sequences, maxLogitRows: logitRows, pool: _pool);

    /// <summary>The logits after the prompt and then after each of <paramref name="tokens"/>, one decode pass per token.</summary>
    private List<float[]> SingleSteps(int[] prompt, int[] tokens)
    {
        using var state = NewState(1, 1);
        var planner = new BatchPlanner(_model.Model, state);
        var sequence = new BatchSequence(0, Context);
        planner.Start(sequence, prompt);
        planner.Run([sequence]);
        var logits = new List<float[]> { planner.Logits(sequence, 0).ToArray() };
        foreach (int token in tokens)
        {
            Assert.True(sequence.Append(token));
            planner.Settle(sequence);
            planner.Run([sequence]);
            Assert.Equal(1, planner.Batch.Count);
            logits.Add(planner.Logits(sequence, 0).ToArray());
        }
        return logits;
    }

    /// <summary>
    /// The server's prompt policy: decoding sequences first, then the room left to prompts in the order of the list
    /// (admission order), each taken to its end before the next starts, so the oldest request gets its first token first.
    /// </summary>
    [Fact]
    public void Prompt_chunks_go_to_the_oldest_prompt_until_it_ends_and_then_to_the_next()
    {
        using var state = NewState(3, 3);
        var planner = new BatchPlanner(_model.Model, state);
        var decoding = new BatchSequence(0, Context);
        var older = new BatchSequence(1, Context);
        var newer = new BatchSequence(2, Context);
        planner.Start(decoding, [1, 2, 3]);
        planner.Run([decoding]);
        decoding.Append(4);
        planner.Settle(decoding);
        planner.Start(older, [.. Enumerable.Range(10, 20)]);
        planner.Start(newer, [.. Enumerable.Range(40, 20)]);

        // 32 tokens: the decoding sequence's one, the older prompt's 20, and 11 of the newer one's.
        planner.Plan([decoding, older, newer]);
        int[] expected = [0, .. Enumerable.Repeat(1, 20), .. Enumerable.Repeat(2, 11)];
        Assert.Equal(expected, planner.Batch.Sequences[..planner.Batch.Count]);
        Assert.Equal((1, 1, 0), (decoding.LogitsRows, older.LogitsRows, newer.LogitsRows));
        Assert.Equal(11, newer.Cached);

        // The next pass: two decoding sequences, then the rest of the newer prompt, which now gets its logits.
        decoding.Append(5);
        older.Append(6);
        planner.Plan([decoding, older, newer]);
        int[] next = [0, 1, .. Enumerable.Repeat(2, 9)];
        Assert.Equal(next, planner.Batch.Sequences[..planner.Batch.Count]);
        Assert.Equal(1, newer.LogitsRows);
        Assert.Equal(20, newer.Cached);
    }

    [Fact]
    public void A_sequence_verifying_k_drafts_gets_the_logits_of_k_plus_one_single_steps_bit_for_bit()
    {
        int[] prompt = Prompt("Once upon a time");
        int[] other = Prompt("Lily and Ben went to the park");
        int[] tokens = [310, 27, 401, 95, 12];  // the token sampled after the prompt, then four drafts
        var expected = SingleSteps(prompt, tokens);
        var otherExpected = SingleSteps(other, []);

        using var state = NewState(2, 8);
        var planner = new BatchPlanner(_model.Model, state);
        var drafting = new BatchSequence(0, Context);
        var prefilling = new BatchSequence(1, Context);
        planner.Start(drafting, prompt);
        planner.Run([drafting]);
        Assert.Equal(expected[0], planner.Logits(drafting, 0).ToArray());
        drafting.Append(tokens[0]);
        planner.Settle(drafting);

        // One pass: the drafting sequence's token and four drafts, then the other sequence's whole prompt.
        drafting.Drafts.AddRange(tokens[1..]);
        planner.Start(prefilling, other);
        planner.Run([prefilling, drafting]);
        Assert.Equal(tokens.Length + other.Length, planner.Batch.Count);
        Assert.Equal(tokens, planner.Batch.Tokens[..tokens.Length]);
        Assert.Equal(4, drafting.PlannedDrafts);
        Assert.Equal(5, drafting.LogitsRows);
        Assert.Equal(1, prefilling.LogitsRows);
        Assert.Empty(drafting.Drafts);
        for (int row = 0; row < tokens.Length; row++) Assert.Equal(expected[1 + row], planner.Logits(drafting, row).ToArray());
        Assert.Equal(otherExpected[0], planner.Logits(prefilling, 0).ToArray());

        // All drafts accepted and one more token sampled after them: nothing to roll back.
        foreach (int token in tokens[1..]) Assert.True(drafting.Append(token));
        Assert.True(drafting.Append(7));
        planner.Settle(drafting);
        Assert.Equal(prompt.Length + tokens.Length, planner.Cache.Length(drafting.Slot));
        Assert.True(drafting.IsDecoding);
    }

    [Fact]
    public void Rejected_drafts_are_rolled_back_and_decoding_continues_like_a_fresh_run()
    {
        int[] prompt = Prompt("The cat sat");
        int first = 310, accepted = 27, rejected = 401, instead = 55;
        var expected = SingleSteps(prompt, [first, accepted, instead, 9]);

        using var state = NewState(1, 8);
        var planner = new BatchPlanner(_model.Model, state);
        var sequence = new BatchSequence(0, Context);
        planner.Start(sequence, prompt);
        planner.Run([sequence]);
        sequence.Append(first);
        planner.Settle(sequence);
        sequence.Drafts.AddRange([accepted, rejected, 200]);
        planner.Run([sequence]);
        Assert.Equal(prompt.Length + 4, planner.Cache.Length(sequence.Slot));

        // The first draft is confirmed, the second is not: what followed it leaves the memory.
        Assert.True(sequence.Append(accepted));
        Assert.False(sequence.Append(instead));
        planner.Settle(sequence);
        Assert.Equal(prompt.Length + 2, planner.Cache.Length(sequence.Slot));
        Assert.Equal([.. prompt, first, accepted, instead], sequence.History.ToArray());

        planner.Run([sequence]);
        Assert.Equal(1, planner.Batch.Count);
        Assert.Equal(expected[3], planner.Logits(sequence, 0).ToArray());
        sequence.Append(9);
        planner.Settle(sequence);
        planner.Run([sequence]);
        Assert.Equal(expected[4], planner.Logits(sequence, 0).ToArray());
    }

    /// <summary>
    /// Speculative decoding through the request pipeline: drafts taken from the known greedy output, some of them
    /// spoiled on purpose, give exactly the greedy output, in fewer passes than tokens.
    /// </summary>
    [Fact]
    public void Greedy_generation_verifying_drafts_produces_the_same_tokens_in_fewer_passes()
    {
        var request = new GenerationRequest
        {
            Prompt = Prompt("Once upon a time"),
            Options = new GenerationOptions { MaxTokens = 40, IgnoreEos = true, Sampling = SamplerOptions.Greedy },
        };
        int[] greedy;
        using (var generator = new TextGenerator(_model, Context, pool: _pool))
            greedy = generator.Generate(request).Select(p => p.TokenId).ToArray();

        using var state = NewState(1, 8);
        var planner = new BatchPlanner(_model.Model, state);
        var sequence = new BatchSequence(0, Context);
        var pieces = new List<GeneratedPiece>();
        var pipeline = new RequestPipeline(request, _model.Tokenizer, _model.Info.VocabSize, Context, pieces.Add);
        planner.Start(sequence, request.Prompt);
        int passes = 0;
        FinishReason? end = null;
        while (end == null)
        {
            if (sequence.IsDecoding)
            {
                int done = sequence.Count - request.Prompt.Count;
                for (int i = done; i < Math.Min(done + 3, greedy.Length); i++)
                    sequence.Drafts.Add(passes % 3 == 2 && i == done + 1 ? (greedy[i] + 1) % _model.Info.VocabSize : greedy[i]);
            }
            planner.Run([sequence]);
            passes++;
            end = pipeline.Advance(planner, sequence);
        }
        Assert.Equal(FinishReason.Length, end);
        Assert.Equal(greedy, pieces.Select(p => p.TokenId).ToArray());
        Assert.True(passes < greedy.Length / 2, $"{passes} passes for {greedy.Length} tokens");
    }
}
