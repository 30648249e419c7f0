using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;
using Velo.Formats;
using Velo.Inference;
using Velo.Models;
using Velo.Models.Bert;
using Velo.Runtime;
using Velo.Tensors;
using Velo.Text;
using Velo.Threading;

namespace Velo.Tests.Models;

/// <summary>all-MiniLM-L6-v2 converted from the package's ONNX file once for the class: F32 and Q8_0 GGUF files in a temp folder.</summary>
public sealed class MiniLMFixture : IDisposable
{
    public MiniLMFixture()
    {
        Directory.CreateDirectory(Folder);
        var options = new BertImportOptions { ConfigDir = MiniLMPackage.ConfigDir };
        BertOnnxImporter.Convert(MiniLMPackage.OnnxPath, MiniLMPackage.VocabPath, F32Path, options);
        BertOnnxImporter.Convert(MiniLMPackage.OnnxPath, MiniLMPackage.VocabPath, Q8Path, options with { Type = GgmlType.Q8_0 });
        BertOnnxImporter.Convert(MiniLMPackage.OnnxPath, MiniLMPackage.VocabPath, ClsPath, options with { Pooling = EmbeddingPooling.Cls });
    }

    public string Folder { get; } = Path.Combine(Path.GetTempPath(), $"velo-bert-{Guid.NewGuid():N}");
    public string F32Path => Path.Combine(Folder, "minilm-f32.gguf");
    public string Q8Path => Path.Combine(Folder, "minilm-q8_0.gguf");
    public string ClsPath => Path.Combine(Folder, "minilm-cls.gguf");

    public void Dispose() => Directory.Delete(Folder, recursive: true);
}

/// <summary>
/// all-MiniLM-L6-v2 through <c>velo convert</c> and the <c>bert</c> family against ONNX Runtime running the original
/// ONNX file on the same token ids: last hidden states and mean-pooled, normalized embeddings, on varied inputs.
/// </summary>
public sealed class BertOnnxTests(MiniLMFixture fixture) : IClassFixture<MiniLMFixture>
{
    private static readonly string LongText = string.Concat(Enumerable.Repeat(
        "The quick brown fox jumps over the lazy dog, while 42 onlookers (and a café owner named José) watch in disbelief. ", 12));

    public static readonly string[] Texts =
    [
        "", "a", "Hello world", "Hello World!", "hello, world.", "What is the capital of France?", "Paris is the capital of France.",
        "The cat sat on the mat.", "A man is eating food.", "A man is eating a piece of bread.", "The girl is carrying a baby.",
        "Numbers: 3.14159, 2,718 and 1e-12; 100% of $5 + €3 = ?", "Price: $1,234.56 (incl. 20% VAT)", "x = y + z * 2 / (a - b)",
        "email me at someone@example.com or visit https://example.org/path?q=1&r=2", "C++ and C# are programming languages; so is F#.",
        "Café, naïve, résumé, jalapeño, Zürich, São Paulo, Ångström", "ÉCOLE NORMALE SUPÉRIEURE", "Straße und Füße",
        "東京は日本の首都です。", "我喜欢吃苹果和香蕉", "한국어 문장도 있습니다", "Привет, как дела?", "Γειά σου Κόσμε", "مرحبا بالعالم",
        "I love pizza 🍕🍕 and emoji 😀👍🏽!", "🙂", "tabs\tand\nnewlines\r\nand   many    spaces", "ALL CAPS SENTENCE HERE",
        "unbelievably antidisestablishmentarianism supercalifragilisticexpialidocious", "don't won't can't it's y'all",
        "...!!!???---", "[CLS] [SEP] [MASK] are special in vocab.txt", "The 2024 Olympics were held in Paris, France.",
        "Machine learning models convert text into dense vectors for semantic search.", "  leading and trailing spaces  ",
        "Mixed: English, Français, Deutsch, 日本語, and emoji 🚀.", LongText, LongText + LongText,
        "A very short one.", "Embeddings capture meaning; cosine similarity compares them.",
    ];

    private static InferenceSession Session(int threads = 2) => Session(MiniLMPackage.OnnxPath, threads);

    internal static InferenceSession Session(string onnx, int threads) =>
        new(onnx, new SessionOptions { IntraOpNumThreads = threads, InterOpNumThreads = 1 });

    /// <summary>ORT's last hidden state for the ids: [tokens][dim].</summary>
    internal static float[][] OrtHidden(InferenceSession session, int[] ids)
    {
        int n = ids.Length;
        var shape = new[] { 1, n };
        var inputs = new List<NamedOnnxValue>
        {
            NamedOnnxValue.CreateFromTensor("input_ids", new DenseTensor<long>(ids.Select(i => (long)i).ToArray(), shape)),
            NamedOnnxValue.CreateFromTensor("attention_mask", new DenseTensor<long>(Enumerable.Repeat(1L, n).ToArray(), shape)),
        };
        if (session.InputMetadata.ContainsKey("token_type_ids"))
            inputs.Add(NamedOnnxValue.CreateFromTensor("token_type_ids", new DenseTensor<long>(new long[n], shape)));
        string hiddenName = session.OutputMetadata.First(o => o.Value.Dimensions.Length == 3).Key;
        using var results = session.Run(inputs, [hiddenName]);
        var t = results.First().AsTensor<float>();
        int dim = t.Dimensions[2];
        return Enumerable.Range(0, n).Select(i => Enumerable.Range(0, dim).Select(d => t[0, i, d]).ToArray()).ToArray();
    }

    /// <summary>sentence-transformers' mean pooling and normalization, in double precision.</summary>
    internal static double[] MeanNormalized(float[][] rows)
    {
        var mean = new double[rows[0].Length];
        foreach (var r in rows)
            for (int d = 0; d < mean.Length; d++) mean[d] += r[d];
        double norm = Math.Sqrt(mean.Sum(v => v * v));
        return mean.Select(v => v / norm).ToArray();
    }

    internal static double Cosine(IReadOnlyList<double> a, IReadOnlyList<float> b)
    {
        double dot = 0, na = 0, nb = 0;
        for (int i = 0; i < a.Count; i++)
        {
            dot += a[i] * b[i];
            na += a[i] * a[i];
            nb += (double)b[i] * b[i];
        }
        return dot / Math.Sqrt(na * nb);
    }

    [Fact]
    public void ConvertedFileHasTheBertLayoutAndMetadata()
    {
        using var file = GgufFile.Open(fixture.F32Path);
        var m = file.Metadata;
        Assert.Equal("bert", file.Architecture);
        Assert.Equal(512u, m.RequireUInt32("bert.context_length"));
        Assert.Equal(384u, m.RequireUInt32("bert.embedding_length"));
        Assert.Equal(1536u, m.RequireUInt32("bert.feed_forward_length"));
        Assert.Equal(6u, m.RequireUInt32("bert.block_count"));
        Assert.Equal(12u, m.RequireUInt32("bert.attention.head_count"));
        Assert.Equal(1u, m.RequireUInt32("bert.pooling_type"));
        Assert.Equal(256u, m.RequireUInt32("bert.max_sequence_length"));
        Assert.True(m.TryGetBool("bert.attention.causal", out bool causal) && !causal);
        Assert.True(m.TryGetFloat32("bert.attention.layer_norm_epsilon", out float eps) && eps == 1e-12f);
        Assert.Equal("bert", m.GetString("tokenizer.ggml.model"));
        Assert.Equal(5 + 6 * 16, file.Tensors.Count);
        foreach (string name in (string[])["token_embd.weight", "position_embd.weight", "token_types.weight", "token_embd_norm.bias",
                     "blk.5.attn_q.weight", "blk.5.attn_output_norm.weight", "blk.5.ffn_up.bias", "blk.5.layer_output_norm.bias"])
            Assert.NotNull(file.FindTensor(name));
        Assert.Equal([384L, 1536], file.RequireTensor("blk.0.ffn_up.weight").Shape);
        Assert.Equal([1536L, 384], file.RequireTensor("blk.0.ffn_down.weight").Shape);
    }

    [Fact]
    public void VocabTxtTokenizesAsTheHuggingFaceTokenizerJson()
    {
        var fromVocab = Tokenizer.FromData(BertOnnxImporter.ReadVocabTxt(MiniLMPackage.VocabPath));
        var fromJson = Tokenizer.FromHuggingFace(Path.Combine(MiniLMPackage.ConfigDir, "tokenizer.json"));
        using var file = GgufFile.Open(fixture.F32Path);
        var fromGguf = Tokenizer.FromGguf(file.Metadata);
        foreach (string text in Texts)
        {
            int[] expected = fromJson.Encode(text);
            Assert.Equal(expected, fromVocab.Encode(text));
            Assert.Equal(expected, fromGguf.Encode(text));
        }
    }

    /// <summary>
    /// F32: every last hidden state within 1e-4 of ORT's and every embedding at cosine ≥ 0.99999 to ORT's pooled one,
    /// on inputs from empty to past the 256-token limit (cut as sentence-transformers cuts them).
    /// </summary>
    [Fact]
    public void F32MatchesOnnxRuntime()
    {
        using var model = ModelRegistry.Load(fixture.F32Path);
        Assert.Equal(ModelOutput.Embeddings, model.Info.Output);
        using var pool = new WorkerPool(2);
        using var embedder = new TextEmbedder(model, Tokenizer.FromGguf(model.File.Metadata), pool);
        using var state = (BertState)model.CreateState(256, 256, 1, 1, pool);
        using var session = Session();
        var batch = new ForwardBatch(256);
        double worstHidden = 0, worstCosine = 1;
        foreach (string text in Texts)
        {
            int[] ids = embedder.Tokenize(text);
            Assert.InRange(ids.Length, 2, 256);
            Assert.Equal(101, ids[0]);
            Assert.Equal(102, ids[^1]);
            batch.Clear();
            for (int t = 0; t < ids.Length; t++) batch.Add(ids[t], t, 0, wantLogits: t == ids.Length - 1);
            model.Forward(state, batch);

            var expected = OrtHidden(session, ids);
            for (int t = 0; t < ids.Length; t++)
            {
                var actual = state.LastHidden(t);
                for (int d = 0; d < actual.Length; d++) worstHidden = Math.Max(worstHidden, Math.Abs(actual[d] - expected[t][d]));
            }
            double cosine = Cosine(MeanNormalized(expected), state.Output(0).ToArray());
            worstCosine = Math.Min(worstCosine, cosine);
            Assert.True(worstHidden <= 1e-4, $"'{text[..Math.Min(40, text.Length)]}': a hidden state is {worstHidden:E2} from ORT's");
            Assert.True(cosine >= 0.99999, $"'{text[..Math.Min(40, text.Length)]}': cosine {cosine} to ORT's embedding");
        }
        Console.WriteLine($"F32 vs ORT over {Texts.Length} inputs: max |Δhidden| {worstHidden:E2}, min cosine {worstCosine:F8}");
    }

    /// <summary>--pooling cls: the embedding is the [CLS] row of ORT's last hidden state, normalized.</summary>
    [Fact]
    public void ClsPoolingTakesTheFirstRow()
    {
        using var model = ModelRegistry.Load(fixture.ClsPath);
        using var pool = new WorkerPool(2);
        using var embedder = new TextEmbedder(model, Tokenizer.FromGguf(model.File.Metadata), pool);
        using var session = Session();
        foreach (string text in Texts.Where((_, i) => i % 5 == 0))
        {
            int[] ids = embedder.Tokenize(text);
            var cls = OrtHidden(session, ids)[0];
            double cosine = Cosine(MeanNormalized([cls]), embedder.EmbedTokens([ids])[0]);
            Assert.True(cosine >= 0.99999, $"'{text}': cosine {cosine} to ORT's [CLS] row");
        }
    }

    /// <summary>velo convert, velo embed and velo bench end to end: the JSON vector is the in-process one.</summary>
    [Fact]
    public void ConvertAndEmbedCommands()
    {
        string output = Path.Combine(fixture.Folder, "cli.gguf");
        var convert = Velo.Tests.Cli.CliRunner.Run("convert", MiniLMPackage.OnnxPath, "--vocab", MiniLMPackage.VocabPath, "-o", output,
            "--config", MiniLMPackage.ConfigDir, "--type", "f16");
        Assert.True(convert.ExitCode == 0, convert.Stderr);
        var embed = Velo.Tests.Cli.CliRunner.Run("embed", "-m", output, "--text", "Hello world", "--json", "-t", "1");
        Assert.True(embed.ExitCode == 0, embed.Stderr);
        using var json = System.Text.Json.JsonDocument.Parse(embed.Stdout);
        var row = json.RootElement[0];
        Assert.Equal(4, row.GetProperty("tokens").GetInt32());
        float[] vector = row.GetProperty("embedding").EnumerateArray().Select(e => e.GetSingle()).ToArray();
        using var model = ModelRegistry.Load(fixture.F32Path);
        using var embedder = new TextEmbedder(model, Tokenizer.FromGguf(model.File.Metadata));
        Assert.True(Cosine(embedder.Embed("Hello world").Select(v => (double)v).ToArray(), vector) >= 0.9999);

        var bench = Velo.Tests.Cli.CliRunner.Run("bench", "-m", output, "-t", "1", "-r", "1", "--json");
        Assert.True(bench.ExitCode == 0, bench.Stderr);
        using var benchJson = System.Text.Json.JsonDocument.Parse(bench.Stdout);
        var tests = benchJson.RootElement.GetProperty("results").EnumerateArray().ToArray();
        Assert.Equal(["embed 1×16", "embed 32×128"], tests.Select(t => t.GetProperty("test").GetString()));
        Assert.All(tests, t => Assert.True(t.GetProperty("inputs_per_second").GetDouble() > 0));

        var bad = Velo.Tests.Cli.CliRunner.Run("convert", MiniLMPackage.VocabPath, "--vocab", MiniLMPackage.VocabPath, "-o", output + ".bad");
        Assert.NotEqual(0, bad.ExitCode);
        Assert.Contains("error:", bad.Stderr);
        Assert.False(File.Exists(output + ".bad"));
    }

    /// <summary>Microsoft.Extensions.AI's embedding generator: the embedder's vectors, dimensions cut and renormalized, usage counted.</summary>
    [Fact]
    public async Task EmbeddingGeneratorGivesTheEmbeddersVectors()
    {
        using var model = ModelRegistry.Load(fixture.F32Path);
        using var embedder = new TextEmbedder(model, Tokenizer.FromGguf(model.File.Metadata));
        using Microsoft.Extensions.AI.IEmbeddingGenerator<string, Microsoft.Extensions.AI.Embedding<float>> generator = new VeloEmbeddingGenerator(embedder, "minilm");
        string[] texts = ["Hello world", "", "東京は日本の首都です。"];
        var generated = await generator.GenerateAsync(texts);
        Assert.Equal(3, generated.Count);
        for (int i = 0; i < texts.Length; i++) Assert.Equal(embedder.Embed(texts[i]), generated[i].Vector.ToArray());
        Assert.Equal(texts.Sum(t => embedder.Tokenize(t).Length), generated.Usage!.InputTokenCount);
        Assert.Equal(384, ((Microsoft.Extensions.AI.EmbeddingGeneratorMetadata)generator.GetService(typeof(Microsoft.Extensions.AI.EmbeddingGeneratorMetadata))!).DefaultModelDimensions);

        var cut = await generator.GenerateAsync(texts, new Microsoft.Extensions.AI.EmbeddingGenerationOptions { Dimensions = 128 });
        float[] full = generated[0].Vector.ToArray(), head = cut[0].Vector.ToArray();
        Assert.Equal(128, head.Length);
        Assert.Equal(1, Math.Sqrt(head.Sum(v => (double)v * v)), 1e-5);
        Assert.Equal(1, Cosine(full[..128].Select(v => (double)v).ToArray(), head), 1e-6);
        await Assert.ThrowsAsync<ArgumentOutOfRangeException>(() =>
            generator.GenerateAsync(texts, new Microsoft.Extensions.AI.EmbeddingGenerationOptions { Dimensions = 385 }));
    }

    /// <summary>Packed batches (several inputs per forward pass, each its own sequence) give each input's own embedding.</summary>
    [Fact]
    public void PackedInputsMatchInputsAlone()
    {
        using var model = ModelRegistry.Load(fixture.F32Path);
        using var pool = new WorkerPool(2);
        using var packed = new TextEmbedder(model, Tokenizer.FromGguf(model.File.Metadata), pool, maxBatchTokens: 600, maxSequences: 7);
        using var alone = new TextEmbedder(model, Tokenizer.FromGguf(model.File.Metadata), pool, maxSequences: 1);
        var together = packed.Embed(Texts);
        for (int i = 0; i < Texts.Length; i++)
        {
            var single = alone.Embed(Texts[i]);
            for (int d = 0; d < single.Length; d++) Assert.Equal(single[d], together[i][d], 1e-5);
        }
    }

    /// <summary>
    /// Q8_0 weights (activations quantized to 8 bits in the products, as llama.cpp does; the value projections kept
    /// F16) against F32: every input at cosine ≥ 0.999, the near-empty ones ([CLS] [SEP] alone, a lone [UNK]) the
    /// most sensitive.
    /// </summary>
    [Fact]
    public void Q8_0EmbeddingsStayCloseToF32()
    {
        using var pool = new WorkerPool(2);
        using var f32 = ModelRegistry.Load(fixture.F32Path);
        using var q8 = ModelRegistry.Load(fixture.Q8Path);
        using var e32 = new TextEmbedder(f32, Tokenizer.FromGguf(f32.File.Metadata), pool);
        using var e8 = new TextEmbedder(q8, Tokenizer.FromGguf(q8.File.Metadata), pool);
        var a = e32.Embed(Texts);
        var b = e8.Embed(Texts);
        var cosines = Enumerable.Range(0, Texts.Length).Select(i => Cosine(a[i].Select(v => (double)v).ToArray(), b[i])).ToArray();
        for (int i = 0; i < Texts.Length; i++) Assert.True(cosines[i] >= 0.999, $"input {i}: Q8_0 cosine {cosines[i]} to F32");
        Assert.True(cosines.Average() >= 0.9996, $"mean Q8_0 cosine {cosines.Average()} to F32");
        using var file = GgufFile.Open(fixture.Q8Path);
        Assert.Equal(GgmlType.F16, file.RequireTensor("blk.0.attn_v.weight").Type);
        Assert.Equal(GgmlType.Q8_0, file.RequireTensor("blk.0.attn_k.weight").Type);
        Console.WriteLine($"Q8_0 vs F32 over {Texts.Length} inputs: min cosine {cosines.Min():F6}, mean {cosines.Average():F6}");
    }

    /// <summary>A truncated ONNX file is an <see cref="OnnxFormatException"/> that says so, wherever it is cut.</summary>
    [Fact]
    public void TruncatedOnnxIsAClearError()
    {
        byte[] bytes = File.ReadAllBytes(MiniLMPackage.OnnxPath);
        var random = new Random(3);
        int[] cuts = [1, 2, 10, 100, 1000, 100_000, bytes.Length / 2, bytes.Length - 1, .. Enumerable.Range(0, 8).Select(_ => random.Next(1, bytes.Length))];
        foreach (int cut in cuts)
        {
            var ex = Record.Exception(() =>
            {
                var onnx = OnnxModel.Parse(bytes.AsMemory(0, cut), "cut.onnx");
                BertOnnxImporter.Build(onnx, BertOnnxImporter.ReadVocabTxt(MiniLMPackage.VocabPath), new BertImportOptions());
            });
            var format = Assert.IsType<OnnxFormatException>(ex);
            Assert.StartsWith("cut.onnx: ", format.Message);
        }
        Assert.Throws<OnnxFormatException>(() => OnnxModel.Parse(new byte[] { 0x3A, 0xFF, 0xFF, 0xFF, 0xFF, 0x0F }, "huge.onnx"));
    }

    /// <summary>Without --config the head count comes from the graph's attention reshape: 12 heads of 32, not 6 of 64.</summary>
    [Fact]
    public void TheHeadCountIsReadFromTheGraph()
    {
        var onnx = OnnxModel.Load(MiniLMPackage.OnnxPath);
        var writer = BertOnnxImporter.Build(onnx, BertOnnxImporter.ReadVocabTxt(MiniLMPackage.VocabPath), new BertImportOptions());
        string path = Path.Combine(fixture.Folder, "no-config.gguf");
        writer.WriteAtomically(path);
        using var file = GgufFile.Open(path);
        Assert.Equal(12u, file.Metadata.RequireUInt32("bert.attention.head_count"));
    }

    [Fact]
    public void AnOnnxThatIsNotBertNamesWhatIsMissing()
    {
        // A graph with one initializer: an ONNX file, but not a BERT encoder.
        byte[] tensor = [0x42, 0x03, (byte)'f', (byte)'o', (byte)'o'];                // TensorProto.name = "foo"
        byte[] graph = [0x2A, (byte)tensor.Length, .. tensor];                        // GraphProto.initializer
        byte[] model = [0x08, 0x07, 0x3A, (byte)graph.Length, .. graph];              // ir_version 7, ModelProto.graph
        var onnx = OnnxModel.Parse(model, "other.onnx");
        var ex = Assert.Throws<OnnxFormatException>(() =>
            BertOnnxImporter.Build(onnx, BertOnnxImporter.ReadVocabTxt(MiniLMPackage.VocabPath), new BertImportOptions()));
        Assert.Contains("embeddings.word_embeddings.weight", ex.Message);
    }
}

/// <summary>
/// Speed against ONNX Runtime on the same model, reported and not asserted (timings on a shared machine are not a
/// test): set VELO_BENCH=1 to run. Both on 2 threads; the median of several runs after a warm-up.
/// </summary>
public sealed class BertSpeedTests(MiniLMFixture fixture) : IClassFixture<MiniLMFixture>
{
    [Fact]
    public void ReportSpeedAgainstOnnxRuntime()
    {
        if (Environment.GetEnvironmentVariable("VELO_BENCH") != "1") return;
        const int threads = 2, runs = 7;
        var random = new Random(1);
        int[] Input(int length) => [101, .. Enumerable.Range(0, length - 2).Select(_ => random.Next(1000, 29000)), 102];
        int[][] batch = Enumerable.Range(0, 32).Select(_ => Input(128)).ToArray();
        int[] single = Input(16);

        double Median(Action run)
        {
            run();
            var times = new double[runs];
            for (int i = 0; i < runs; i++)
            {
                var clock = System.Diagnostics.Stopwatch.StartNew();
                run();
                times[i] = clock.Elapsed.TotalMilliseconds;
            }
            Array.Sort(times);
            return times[runs / 2];
        }

        using var session = new InferenceSession(MiniLMPackage.OnnxPath, new SessionOptions { IntraOpNumThreads = threads, InterOpNumThreads = 1 });
        void Ort(int[][] inputs)
        {
            int n = inputs[0].Length;
            var shape = new[] { inputs.Length, n };
            var ids = new DenseTensor<long>(inputs.SelectMany(i => i).Select(i => (long)i).ToArray(), shape);
            using var results = session.Run(
            [
                NamedOnnxValue.CreateFromTensor("input_ids", ids),
                NamedOnnxValue.CreateFromTensor("attention_mask", new DenseTensor<long>(Enumerable.Repeat(1L, inputs.Length * n).ToArray(), shape)),
                NamedOnnxValue.CreateFromTensor("token_type_ids", new DenseTensor<long>(new long[inputs.Length * n], shape)),
            ]);
        }
        double ortBatch = Median(() => Ort(batch)), ortSingle = Median(() => Ort([single]));

        using var pool = new WorkerPool(threads);
        foreach (var (name, path) in new[] { ("F32", fixture.F32Path), ("Q8_0", fixture.Q8Path) })
        {
            using var model = ModelRegistry.Load(path);
            using var embedder = new TextEmbedder(model, Tokenizer.FromGguf(model.File.Metadata), pool);
            double veloBatch = Median(() => embedder.EmbedTokens(batch)), veloSingle = Median(() => embedder.EmbedTokens([single]));
            Console.WriteLine($"{name}: 32×128 tokens {veloBatch:F1} ms ({32000 / veloBatch:F1} inputs/s, {ortBatch / veloBatch:F2}× ORT F32's {ortBatch:F1} ms); " +
                              $"one 16-token input {veloSingle:F2} ms (ORT {ortSingle:F2} ms)");
        }
        Console.WriteLine($"load average: {File.ReadAllText("/proc/loadavg").Trim()}");
    }
}

/// <summary>The onnx fuzz target on its hand-built seed and on cut and mutated copies: converted, or a clean rejection.</summary>
public sealed class OnnxHostileInputTests
{
    [Fact]
    public void TheSeedConvertsAndMutantsAreConvertedOrCleanlyRejected()
    {
        var (_, seed) = Velo.Fuzz.FuzzSeeds.For("onnx", TestPaths.Shared).Single();
        Assert.Equal("ok", Velo.Fuzz.FuzzTargets.Run("onnx", seed));
        var random = new Random(17);
        for (int i = 0; i < 300; i++)
        {
            byte[] mutant = i % 3 == 0 ? seed[..random.Next(seed.Length)] : (byte[])seed.Clone();
            if (i % 3 != 0)
                for (int k = 0; k < 1 + i % 5; k++)
                    mutant[random.Next(Math.Min(mutant.Length, i % 2 == 0 ? 4096 : mutant.Length))] = (byte)random.Next(256);
            string result = Velo.Fuzz.FuzzTargets.Run("onnx", mutant);
            Assert.True(result == "ok" || result.StartsWith("rejected: OnnxFormatException", StringComparison.Ordinal), result);
        }
    }
}

/// <summary>A random-weight BERT from the synthesizer: the family's layout round-trips, and attention looks both ways.</summary>
public sealed class SyntheticBertTests
{
    [Fact]
    public void EarlierTokensSeeLaterOnesAndInputsDoNotMix()
    {
        string path = Path.Combine(Path.GetTempPath(), $"velo-synth-bert-{Guid.NewGuid():N}.gguf");
        try
        {
            ModelSynthesizer.Write(path, new SynthSpec { Architecture = "bert", Dim = 32, Layers = 2, Heads = 4, FfnDim = 64, VocabSize = 260, ContextLength = 16 }, threads: 1);
            using var model = ModelRegistry.Load(path);
            Assert.Equal(ModelOutput.Embeddings, model.Info.Output);
            using var state = (BertState)model.CreateState(16, 16, 2, 2);
            var batch = new ForwardBatch(16);
            float[] FirstHidden(int[] tokens)
            {
                batch.Clear();
                for (int t = 0; t < tokens.Length; t++) batch.Add(tokens[t], t, 0, wantLogits: t == tokens.Length - 1);
                model.Forward(state, batch);
                return state.LastHidden(0).ToArray();
            }
            float[] a = FirstHidden([1, 5, 9, 13]), b = FirstHidden([1, 5, 9, 14]);
            Assert.NotEqual(a, b);

            // Two inputs packed in one pass give each its own embedding, of unit length.
            batch.Clear();
            foreach (var (token, position) in new[] { (1, 0), (5, 1), (9, 2), (13, 3) }) batch.Add(token, position, 0, wantLogits: position == 3);
            foreach (var (token, position) in new[] { (2, 0), (7, 1) }) batch.Add(token, position, 1, wantLogits: position == 1);
            model.Forward(state, batch);
            float[] packed0 = state.Output(0).ToArray(), packed1 = state.Output(1).ToArray();
            FirstHidden([1, 5, 9, 13]);
            Assert.Equal(state.Output(0).ToArray(), packed0);
            FirstHidden([2, 7]);
            Assert.Equal(state.Output(0).ToArray(), packed1);
            Assert.Equal(1, Math.Sqrt(packed0.Sum(v => (double)v * v)), 1e-5);

            // An input must come whole: a batch starting a sequence past position 0 is refused.
            batch.Clear();
            batch.Add(3, 1, 0, wantLogits: true);
            Assert.Throws<ArgumentException>(() => model.Forward(state, batch));
        }
        finally
        {
            File.Delete(path);
        }
    }
}
