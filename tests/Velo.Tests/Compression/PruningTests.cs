using Velo.Formats;
using Velo.Inference;
using Velo.Models;
using Velo.Tensors;
using Velo.Threading;
using Velo.Tools;
using Velo.Tools.Pruning;
using Velo.Tools.Training;

namespace Velo.Tests.Compression;

public sealed class PruningTests : IDisposable
{
    private readonly string _folder = Directory.CreateTempSubdirectory("velo-pruning-").FullName;

    public void Dispose() => Directory.Delete(_folder, recursive: true);

    private static string Text => File.ReadAllText(TestPaths.SharedFile("eval", "tinystories-public.txt"));

    private string Prune(string input, PruningRequest request, out PruningPlan plan, out IReadOnlyList<string> notes)
    {
        string output = Path.Combine(_folder, $"pruned-{Guid.NewGuid():N}.gguf");
        using var file = GgufFile.Open(input);
        var layout = new ParameterLayout(DecoderGguf.ReadShape(file));
        var parameters = DecoderGguf.ReadParameters(file, layout);
        using var model = LanguageModel.Load(input);
        var sequences = TrainingText.Chunks(model.Tokenizer.Encode(Text, addSpecial: true), 64, model.Tokenizer.BosId, maxSequences: 4);
        var scores = ImportanceScores.Measure(layout, parameters, sequences);
        plan = Pruner.Plan(layout.Shape, request, scores, parameters, layout);
        notes = Pruner.Write(file, plan, output);
        return output;
    }

    private static double Perplexity(string path)
    {
        using var model = LanguageModel.Load(path);
        using var pool = new WorkerPool(2);
        using var perplexity = new Perplexity(model.Model, new PerplexitySettings { ContextLength = 128, BatchSize = 128 }, pool);
        return perplexity.Run(model.Tokenizer.Encode(Text, addSpecial: true), model.Tokenizer.BosId).Perplexity;
    }

    [Fact]
    public void LayersChannelsAndHeadsGoAndTheFileLoadsWithItsNewShape()
    {
        string output = Prune(TestPaths.Stories260K, new PruningRequest { DropLayerCount = 1, FfnKeep = 0.75, HeadsKeep = 0.5 }, out var plan, out _);
        Assert.Equal(5, plan.LayerInfluence!.Length);
        // The least influential layer goes: the one whose output is closest to its input.
        int least = Array.IndexOf(plan.LayerInfluence, plan.LayerInfluence.Min());
        Assert.DoesNotContain(least, plan.KeptLayers);

        using var model = LanguageModel.Load(output);
        Assert.Equal(4, model.Info.Layers.Count);
        using var file = GgufFile.Open(output);
        Assert.Equal(129u, file.Metadata.RequireUInt32("llama.feed_forward_length"));
        Assert.Equal(4u, file.Metadata.RequireUInt32("llama.attention.head_count"));
        Assert.Equal(2u, file.Metadata.RequireUInt32("llama.attention.head_count_kv"));
        Assert.Equal(8u, file.Metadata.RequireUInt32("llama.attention.key_length"));
        Assert.Equal([64L, 129], file.RequireTensor("blk.3.ffn_gate.weight").Shape);
        Assert.Equal([129L, 64], file.RequireTensor("blk.3.ffn_down.weight").Shape);
        Assert.Equal([32L, 64], file.RequireTensor("blk.0.attn_output.weight").Shape);
        Assert.Null(file.FindTensor("blk.4.attn_q.weight"));
        double ppl = Perplexity(output);
        Assert.True(double.IsFinite(ppl) && ppl > 3.4352, $"perplexity {ppl}");
    }

    /// <summary>Keeping everything changes nothing: the same perplexity, and a layer named for removal goes exactly.</summary>
    [Fact]
    public void KeepingEverythingReproducesTheModelAndListedLayersGo()
    {
        string same = Prune(TestPaths.Stories260K, new PruningRequest { FfnKeep = 1, HeadsKeep = 1 }, out _, out _);
        Assert.Equal(Perplexity(TestPaths.Stories260K), Perplexity(same), 6);

        Prune(TestPaths.Stories260K, PruningRequest.WithLayers("0,3", new PruningRequest()), out var plan, out _);
        Assert.Equal([1, 2, 4], plan.KeptLayers);
    }

    /// <summary>Rows cut keep their quantized type; columns cut are requantized, or stored as F16 when the block no longer divides the width.</summary>
    [Fact]
    public void QuantizedTensorsKeepTheirTypeWhereTheBlocksAllow()
    {
        string q8 = Path.Combine(_folder, "q8.gguf");
        using (var input = GgufFile.Open(TestPaths.Stories260K)) ModelQuantizer.Quantize(input, q8, QuantizationRecipe.Parse("Q8_0"), threads: 2);
        string output = Prune(q8, new PruningRequest { FfnKeep = 0.75, HeadsKeep = 0.5 }, out _, out var notes);
        using (var file = GgufFile.Open(output))
        {
            Assert.Equal(GgmlType.Q8_0, file.RequireTensor("blk.0.attn_output.weight").Type); // 32 of 64 columns
            Assert.Equal(GgmlType.Q8_0, file.RequireTensor("blk.0.ffn_gate.weight").Type);     // rows
            Assert.Equal(GgmlType.F16, file.RequireTensor("blk.0.ffn_down.weight").Type);      // F16 in the input already
            Assert.Empty(notes);
        }
        Assert.True(double.IsFinite(Perplexity(output)));

        string uneven = Prune(q8, new PruningRequest { HeadsKeep = 0.75 }, out _, out notes);
        using (var file = GgufFile.Open(uneven))
            Assert.Equal(GgmlType.F16, file.RequireTensor("blk.0.attn_output.weight").Type); // 48 columns: not whole Q8_0 blocks
        Assert.Contains(notes, n => n.Contains("attn_output") && n.Contains("stored as F16"));
        Assert.True(double.IsFinite(Perplexity(uneven)));
    }

    [Fact]
    public void BadRequestsGetClearMessages()
    {
        var shape = GradientTests.SmallShape(tied: false) with { Layers = 5 };
        Assert.Contains("layer 5 is out of range; the model has layers 0 to 4",
            Assert.Throws<ArgumentException>(() => PruningRequest.WithLayers("1,5", new PruningRequest()).Validate(shape)).Message);
        Assert.Contains("between 0 and 4", Assert.Throws<ArgumentException>(() => new PruningRequest { DropLayerCount = 5 }.Validate(shape)).Message);
        Assert.Contains("--ffn-keep must be in (0, 1]", Assert.Throws<ArgumentException>(() => new PruningRequest { FfnKeep = 0 }.Validate(shape)).Message);
        Assert.Contains("--heads-keep must be in (0, 1]", Assert.Throws<ArgumentException>(() => new PruningRequest { HeadsKeep = 1.2 }.Validate(shape)).Message);
        Assert.Contains("names a layer twice", Assert.Throws<ArgumentException>(() => PruningRequest.WithLayers("1,1", new PruningRequest()).Validate(shape)).Message);
        Assert.Contains("count or a list", Assert.Throws<ArgumentException>(() => PruningRequest.WithLayers("-1", new PruningRequest())).Message);
    }

    [Fact]
    public void ComparisonReportsDivergenceFromTheFirstModel()
    {
        string pruned = Prune(TestPaths.Stories260K, new PruningRequest { DropLayerCount = 1 }, out _, out _);
        var reports = ModelComparison.Compare([TestPaths.Stories260K, pruned], Text, new PerplexitySettings { ContextLength = 128, BatchSize = 128 }, 2, decodeTokens: 8);
        Assert.Null(reports[0].Divergence);
        Assert.Equal(3.4352, reports[0].Perplexity, 3);
        Assert.True(reports[1].Divergence!.Mean > 0);
        Assert.True(reports[1].FileBytes < reports[0].FileBytes);
        Assert.True(reports[1].DecodeTokensPerSecond > 0);
    }
}
