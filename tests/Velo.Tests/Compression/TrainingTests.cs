using Velo.Formats;
using Velo.Inference;
using Velo.Runtime;
using Velo.Threading;
using Velo.Tools.Training;

namespace Velo.Tests.Compression;

public sealed class TrainingTests : IDisposable
{
    private readonly string _folder = Directory.CreateTempSubdirectory("velo-training-").FullName;

    public void Dispose() => Directory.Delete(_folder, recursive: true);

    /// <summary>The trainer's forward pass is the inference engine's: same logits on stories260K, so what it trains runs the same in Velo.</summary>
    [Fact]
    public void ForwardMatchesTheInferenceEngine()
    {
        int[] tokens = [1, 403, 407, 261, 378, 432];
        using var file = GgufFile.Open(TestPaths.Stories260K);
        var layout = new ParameterLayout(DecoderGguf.ReadShape(file));
        var parameters = DecoderGguf.ReadParameters(file, layout);
        var activations = new DecoderActivations<float>(layout.Shape, tokens.Length);
        new TrainableDecoder<float>(layout).Forward(parameters, tokens, activations);

        using var model = LanguageModel.Load(TestPaths.Stories260K);
        using var state = model.Model.CreateState(16, 16, maxLogitRows: tokens.Length);
        var batch = new ForwardBatch(tokens.Length);
        for (int i = 0; i < tokens.Length; i++) batch.Add(tokens[i], i, 0, wantLogits: true);
        model.Model.Forward(state, batch);
        int vocab = layout.Shape.VocabSize;
        for (int t = 0; t < tokens.Length; t++)
        {
            var expected = state.Output(t);
            for (int v = 0; v < vocab; v++) Assert.Equal(expected[v], activations.Logits[t * vocab + v], 1e-3f);
        }
        Assert.Equal(17.0235f, activations.Logits[403], 1e-3f); // ../shared/README.md: logits after BOS
    }

    private static List<int[]> StorySequences(LanguageModel model, int length) =>
        TrainingText.Chunks(model.Tokenizer.Encode(PerplexityTestsText(), addSpecial: true), length, model.Tokenizer.BosId);

    private static string PerplexityTestsText() => File.ReadAllText(TestPaths.SharedFile("eval", "tinystories-public.txt"));

    private static DecoderShape SmallStudent(LanguageModel teacher) =>
        new(Dim: 16, Layers: 2, Heads: 4, KvHeads: 2, HeadDim: 4, FfnDim: 32, VocabSize: teacher.Info.VocabSize, NormEpsilon: 1e-5f, RopeBase: 10000, TiedOutput: false);

    private static float[] Train(LanguageModel teacher, List<int[]> sequences, DistillationSettings settings, int threads, int steps,
        Func<Distiller, bool>? before = null)
    {
        var layout = new ParameterLayout(SmallStudent(teacher));
        using var pool = new WorkerPool(threads);
        using var distiller = new Distiller(teacher.Model, layout, layout.RandomParameters(settings.Seed), sequences, settings, pool);
        if (before != null && !before(distiller)) return [];
        for (int i = 0; i < steps; i++) Assert.NotNull(distiller.RunStep());
        return distiller.Parameters;
    }

    [Fact]
    public void TrainingIsDeterministicForAFixedSeedAndThreadCount()
    {
        using var teacher = LanguageModel.Load(TestPaths.Stories260K);
        var sequences = StorySequences(teacher, 32);
        var settings = new DistillationSettings { Steps = 3, BatchSequences = 5, Alpha = 0.7f, Temperature = 1.5f, LearningRate = 3e-3f };
        var first = Train(teacher, sequences, settings, threads: 2, steps: 3);
        var second = Train(teacher, sequences, settings, threads: 2, steps: 3);
        Assert.Equal(first, second);
        var otherSeed = Train(teacher, sequences, settings with { Seed = 7 }, threads: 2, steps: 3);
        Assert.NotEqual(first, otherSeed);
    }

    [Fact]
    public void LossFallsAndAResumedRunContinuesExactly()
    {
        using var teacher = LanguageModel.Load(TestPaths.Stories260K);
        var sequences = StorySequences(teacher, 32);
        var settings = new DistillationSettings { Steps = 4, BatchSequences = 4, LearningRate = 1e-2f };
        var straight = Train(teacher, sequences, settings, threads: 2, steps: 4);

        string directory = Path.Combine(_folder, "checkpoint");
        var layout = new ParameterLayout(SmallStudent(teacher));
        using var pool = new WorkerPool(2);
        double firstLoss, lastLoss;
        using (var distiller = new Distiller(teacher.Model, layout, layout.RandomParameters(settings.Seed), sequences, settings, pool))
        {
            firstLoss = distiller.RunStep()!.Loss;
            distiller.RunStep();
            TrainingCheckpoint.Save(directory, distiller);
        }
        var state = TrainingCheckpoint.Load(directory, layout.Shape);
        Assert.Equal(2, state.Step);
        using (var resumed = new Distiller(teacher.Model, layout, new float[layout.Count], state.Sequences, settings, pool))
        {
            resumed.Restore(state);
            resumed.RunStep();
            lastLoss = resumed.RunStep()!.Loss;
            Assert.Equal(straight, resumed.Parameters);
        }
        Assert.True(lastLoss < firstLoss, $"loss {firstLoss} → {lastLoss}");
    }

    [Fact]
    public void ANonFiniteLossStopsBeforeTheUpdate()
    {
        using var teacher = LanguageModel.Load(TestPaths.Stories260K);
        var sequences = StorySequences(teacher, 16);
        var layout = new ParameterLayout(SmallStudent(teacher));
        var parameters = layout.RandomParameters(1);
        parameters[layout["output.weight"].Offset + 3] = float.NaN;
        var before = (float[])parameters.Clone();
        using var pool = new WorkerPool(2);
        using var distiller = new Distiller(teacher.Model, layout, parameters, sequences, new DistillationSettings { BatchSequences = 2 }, pool);
        Assert.Null(distiller.RunStep());
        Assert.Equal(0, distiller.Step);
        Assert.Equal(before, distiller.Parameters);
    }

    [Fact]
    public void SettingsOutsideTheirRangesAreRefusedByName()
    {
        Assert.Contains("--alpha", Assert.Throws<ArgumentException>(() => new DistillationSettings { Alpha = 1.5f }.Validate()).Message);
        Assert.Contains("--lr", Assert.Throws<ArgumentException>(() => new DistillationSettings { LearningRate = float.NaN }.Validate()).Message);
        Assert.Contains("--distill-temp", Assert.Throws<ArgumentException>(() => new DistillationSettings { Temperature = 0 }.Validate()).Message);
    }

    [Fact]
    public void LearningRateWarmsUpThenDecaysByCosine()
    {
        var schedule = new LearningRateSchedule(1f, WarmupSteps: 4, TotalSteps: 14);
        Assert.Equal(0.25f, schedule.At(0), 1e-6f);
        Assert.Equal(1f, schedule.At(3), 1e-6f);
        Assert.Equal(1f, schedule.At(4), 1e-6f);
        Assert.Equal(0.55f, schedule.At(9), 1e-6f);
        Assert.Equal(0.1f, schedule.At(14), 1e-6f);
    }
}
