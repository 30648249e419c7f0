using Velo.Inference;
using Velo.Models;
using Velo.Runtime;

namespace Velo.Tests.Models;

/// <summary>The real stories260K model against the reference outputs in ../shared/README.md.</summary>
public class Stories260KTests
{
    [Fact]
    public void LogitsAfterBosMatchTheReferenceTopFive()
    {
        using var model = ModelRegistry.Load(TestPaths.Stories260K);
        using var state = model.CreateState(contextLength: 64);
        var batch = new ForwardBatch(1);
        batch.Add(1, 0, wantLogits: true);
        model.Forward(state, batch);
        var logits = state.Output(0).ToArray();
        var top = logits.Select((l, i) => (l, i)).OrderByDescending(p => p.l).Take(5).ToArray();
        (int Id, float Logit)[] expected = [(403, 17.0235f), (385, 15.4062f), (410, 13.1083f), (317, 12.7692f), (407, 12.4181f)];
        for (int r = 0; r < 5; r++)
        {
            Assert.Equal(expected[r].Id, top[r].i);
            Assert.Equal(expected[r].Logit, top[r].l, 1e-3);
        }
    }

    [Fact]
    public void GreedyFromBosMatchesTheReferenceIds()
    {
        int[] expected = [403, 407, 261, 378, 432, 383, 286, 261, 376, 298, 315, 421, 395, 317, 426, 338, 401, 396, 267, 337];
        using var model = ModelRegistry.Load(TestPaths.Stories260K);
        using var state = model.CreateState(contextLength: 64);
        var batch = new ForwardBatch(1);
        var sampler = new Sampler(SamplerOptions.Greedy, model.Info.VocabSize);
        int token = 1;
        var generated = new List<int>();
        for (int pos = 0; pos < expected.Length; pos++)
        {
            batch.Clear();
            batch.Add(token, pos, wantLogits: true);
            model.Forward(state, batch);
            token = sampler.Sample(state.Output(0), []);
            generated.Add(token);
        }
        Assert.Equal(expected, generated);
    }
}
