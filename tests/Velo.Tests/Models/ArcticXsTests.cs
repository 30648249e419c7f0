using Velo.Inference;
using Velo.Models;
using Velo.Models.Bert;
using Velo.Runtime;
using Velo.Tensors;
using Velo.Text;
using Velo.Threading;

namespace Velo.Tests.Models;

/// <summary>
/// snowflake-arctic-embed-xs converted from its package's ONNX file, F32 and Q8_0, with the sentence-transformers
/// configuration upstream publishes (12 heads, 512 tokens, [CLS] pooling, normalized) written to a temp folder.
/// </summary>
public sealed class ArcticXsFixture : IDisposable
{
    public ArcticXsFixture()
    {
        Directory.CreateDirectory(Path.Combine(ConfigDir, "1_Pooling"));
        File.WriteAllText(Path.Combine(ConfigDir, "config.json"),
            """{"_name_or_path": "Snowflake/snowflake-arctic-embed-xs", "hidden_size": 384, "num_attention_heads": 12, "num_hidden_layers": 6, "layer_norm_eps": 1e-12}""");
        File.WriteAllText(Path.Combine(ConfigDir, "sentence_bert_config.json"), """{"max_seq_length": 512, "do_lower_case": false}""");
        File.WriteAllText(Path.Combine(ConfigDir, "1_Pooling", "config.json"), """{"word_embedding_dimension": 384, "pooling_mode_cls_token": true, "pooling_mode_mean_tokens": false}""");
        File.WriteAllText(Path.Combine(ConfigDir, "modules.json"),
            """[{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"}, {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}, {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}]""");
        var options = new BertImportOptions { ConfigDir = ConfigDir };
        BertOnnxImporter.Convert(ArcticXsPackage.OnnxPath, ArcticXsPackage.VocabPath, F32Path, options);
        BertOnnxImporter.Convert(ArcticXsPackage.OnnxPath, ArcticXsPackage.VocabPath, Q8Path, options with { Type = GgmlType.Q8_0 });
    }

    public string Folder { get; } = Path.Combine(Path.GetTempPath(), $"velo-arctic-{Guid.NewGuid():N}");
    public string ConfigDir => Path.Combine(Folder, "config");
    public string F32Path => Path.Combine(Folder, "arctic-xs-f32.gguf");
    public string Q8Path => Path.Combine(Folder, "arctic-xs-q8_0.gguf");

    public void Dispose() => Directory.Delete(Folder, recursive: true);
}

/// <summary>snowflake-arctic-embed-xs against ONNX Runtime as all-MiniLM-L6-v2 is, with [CLS] pooling.</summary>
public sealed class ArcticXsTests(ArcticXsFixture fixture) : IClassFixture<ArcticXsFixture>
{
    [Fact]
    public void F32MatchesOnnxRuntimeWithClsPooling()
    {
        using var model = ModelRegistry.Load(fixture.F32Path);
        Assert.Equal(512, model.Info.MaxInputTokens);
        using var pool = new WorkerPool(2);
        using var embedder = new TextEmbedder(model, Tokenizer.FromGguf(model.File.Metadata), pool);
        using var state = (BertState)model.CreateState(512, 512, 1, 1, pool);
        using var session = BertOnnxTests.Session(ArcticXsPackage.OnnxPath, 2);
        var batch = new ForwardBatch(512);
        double worstHidden = 0, worstCosine = 1;
        foreach (string text in BertOnnxTests.Texts)
        {
            int[] ids = embedder.Tokenize(text);
            Assert.InRange(ids.Length, 2, 512);
            batch.Clear();
            for (int t = 0; t < ids.Length; t++) batch.Add(ids[t], t, 0, wantLogits: t == ids.Length - 1);
            model.Forward(state, batch);
            var expected = BertOnnxTests.OrtHidden(session, ids);
            for (int t = 0; t < ids.Length; t++)
            {
                var actual = state.LastHidden(t);
                for (int d = 0; d < actual.Length; d++) worstHidden = Math.Max(worstHidden, Math.Abs(actual[d] - expected[t][d]));
            }
            double cosine = BertOnnxTests.Cosine(BertOnnxTests.MeanNormalized([expected[0]]), state.Output(0).ToArray());
            worstCosine = Math.Min(worstCosine, cosine);
            Assert.True(worstHidden <= 1e-4, $"'{text[..Math.Min(40, text.Length)]}': a hidden state is {worstHidden:E2} from ORT's");
            Assert.True(cosine >= 0.99999, $"'{text[..Math.Min(40, text.Length)]}': cosine {cosine} to ORT's [CLS] embedding");
        }
        Console.WriteLine($"ArcticXs F32 vs ORT over {BertOnnxTests.Texts.Length} inputs: max |Δhidden| {worstHidden:E2}, min cosine {worstCosine:F8}");
    }

    [Fact]
    public void Q8_0EmbeddingsStayCloseToF32()
    {
        using var pool = new WorkerPool(2);
        using var f32 = ModelRegistry.Load(fixture.F32Path);
        using var q8 = ModelRegistry.Load(fixture.Q8Path);
        using var e32 = new TextEmbedder(f32, Tokenizer.FromGguf(f32.File.Metadata), pool);
        using var e8 = new TextEmbedder(q8, Tokenizer.FromGguf(q8.File.Metadata), pool);
        var a = e32.Embed(BertOnnxTests.Texts);
        var b = e8.Embed(BertOnnxTests.Texts);
        var cosines = a.Select((v, i) => BertOnnxTests.Cosine(v.Select(x => (double)x).ToArray(), b[i])).ToArray();
        Console.WriteLine($"ArcticXs Q8_0 vs F32: min cosine {cosines.Min():F6}, mean {cosines.Average():F6}");
        for (int i = 0; i < cosines.Length; i++) Assert.True(cosines[i] >= 0.999, $"input {i}: Q8_0 cosine {cosines[i]} to F32");
    }
}
