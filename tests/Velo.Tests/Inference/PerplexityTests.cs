using Velo.Inference;
using Velo.Models;
using Velo.Runtime;
using Velo.Threading;

namespace Velo.Tests.Inference;

public sealed class PerplexityTests : IDisposable
{
    /// <summary>llama.cpp's running perplexity after each chunk of the shared text with -c 128 (../shared/README.md).</summary>
    public static readonly double[] ReferenceRunning = [2.6807, 3.1685, 3.3884, 3.4913, 3.4350];

    private readonly string _folder = Directory.CreateTempSubdirectory("velo-perplexity-").FullName;

    public void Dispose() => Directory.Delete(_folder, recursive: true);

    public static string Text => File.ReadAllText(TestPaths.SharedFile("eval", "tinystories-public.txt"));

    public static PerplexityResult Stories260KPerplexity(
        string modelPath, int batchSize = 128, LogProbWriter? saveBase = null, LogProbReader? compareBase = null, KvCacheTypes cacheTypes = default)
    {
        using var model = LanguageModel.Load(modelPath);
        using var pool = new WorkerPool(2);
        using var perplexity = new Perplexity(model.Model, new PerplexitySettings { ContextLength = 128, BatchSize = batchSize, CacheTypes = cacheTypes }, pool);
        int[] tokens = model.Tokenizer.Encode(Text, addSpecial: true);
        return perplexity.Run(tokens, model.Tokenizer.BosId, saveBase, compareBase);
    }

    /// <summary>
    /// llama.cpp's figures for the same run with its KV cache in F32 and flash attention off, the precision Velo
    /// computes in (libllama of the npm package @node-llama-cpp/linux-x64 3.22.1, type_k = type_v = F32).
    /// </summary>
    public static readonly double[] LlamaCppF32CacheRunning = [2.6810, 3.1691, 3.3886, 3.4915, 3.4352];

    /// <summary>
    /// The README's reference came from llama.cpp's default fp16 KV cache, whose rounding of keys and values moves
    /// the fourth decimal by up to a unit in the third (and differs between llama.cpp builds: the npm build's
    /// defaults print 2.6818 3.1692 3.3890 3.4915 3.4351), so its chunks are held to ±0.001 and its final figure to
    /// ±0.0005; llama.cpp at Velo's precision is matched to the last printed digit.
    /// </summary>
    [Fact]
    public void Stories260KMatchesLlamaCppChunkByChunk()
    {
        var result = Stories260KPerplexity(TestPaths.Stories260K);
        Assert.Equal(5 * 63, result.ScoredTokens);
        Assert.Equal(ReferenceRunning.Length, result.RunningPerplexity.Count);
        for (int i = 0; i < ReferenceRunning.Length; i++)
        {
            double ppl = result.RunningPerplexity[i];
            Assert.True(Math.Abs(ppl - ReferenceRunning[i]) <= 1e-3, $"chunk {i + 1}: {ppl:F4}, README {ReferenceRunning[i]:F4}");
            Assert.True(Math.Abs(ppl - LlamaCppF32CacheRunning[i]) <= 5e-5 + 1e-9, $"chunk {i + 1}: {ppl:F5}, llama.cpp (F32 cache) {LlamaCppF32CacheRunning[i]:F4}");
        }
        Assert.Equal(3.4350, result.Perplexity, 5e-4);
        Assert.Equal(result.RunningPerplexity[^1], result.Perplexity, 1e-12);
        Assert.InRange(result.PerplexityError, 0.2, 0.4);
        Assert.Null(result.KlDivergence);
    }

    /// <summary>
    /// With an F16 KV cache, as the README's reference was made, every chunk comes within a unit or two of the fourth
    /// decimal of it, closer than the F32 cache's up to six.
    /// </summary>
    [Fact]
    public void Stories260KWithAnF16CacheMatchesTheReadmeReference()
    {
        var result = Stories260KPerplexity(TestPaths.Stories260K, cacheTypes: new KvCacheTypes(Velo.Tensors.GgmlType.F16, Velo.Tensors.GgmlType.F16));
        for (int i = 0; i < ReferenceRunning.Length; i++)
            Assert.True(Math.Abs(result.RunningPerplexity[i] - ReferenceRunning[i]) <= 2e-4, $"chunk {i + 1}: {result.RunningPerplexity[i]:F5}, README {ReferenceRunning[i]:F4}");
        Assert.Equal(3.4350, result.Perplexity, 1e-4);
    }

    /// <summary>Batches below a chunk split it across passes; batches of several chunks evaluate them side by side.</summary>
    [Theory]
    [InlineData(1)]
    [InlineData(37)]
    [InlineData(64)]
    [InlineData(256)]
    [InlineData(512)]
    public void BatchSizeDoesNotChangeTheFigures(int batchSize)
    {
        var whole = Stories260KPerplexity(TestPaths.Stories260K);
        var split = Stories260KPerplexity(TestPaths.Stories260K, batchSize);
        for (int i = 0; i < whole.RunningPerplexity.Count; i++)
            Assert.Equal(whole.RunningPerplexity[i], split.RunningPerplexity[i], 1e-4);
    }

    [Fact]
    public void KlDivergenceOfAModelAgainstItselfIsZeroWithFullTopTokenAgreement()
    {
        string basePath = Path.Combine(_folder, "base.kld");
        PerplexityResult recorded;
        using (var writer = new LogProbWriter(basePath)) recorded = Stories260KPerplexity(TestPaths.Stories260K, saveBase: writer);
        Assert.Equal(20 + 4 * 5 * 128 + 315 * (12 + 2 * 512), new FileInfo(basePath).Length);

        using var reader = new LogProbReader(basePath);
        var compared = Stories260KPerplexity(TestPaths.Stories260K, compareBase: reader);
        var kl = compared.KlDivergence!;
        Assert.Equal(315, kl.Positions);
        Assert.Equal(1.0, kl.TopTokenAgreement);
        // Only the 16-bit rounding of the stored log-probabilities remains: second order, about 1e-8. Float rounding
        // of the two log-softmaxes adds noise of about 1e-9 of either sign, so the mean may come out just below 0.
        Assert.InRange(kl.Mean, -1e-8, 1e-6);
        Assert.InRange(kl.Percentile99, 0, 1e-5);
        Assert.Equal(recorded.Perplexity, compared.Perplexity);
    }

    [Fact]
    public void KlDivergenceAgainstAQuantizedModelIsPositiveAndOrdered()
    {
        string basePath = Path.Combine(_folder, "base.kld");
        using (var writer = new LogProbWriter(basePath)) Stories260KPerplexity(TestPaths.Stories260K, saveBase: writer);
        string q4 = Path.Combine(_folder, "q4_0.gguf");
        using (var input = Velo.Formats.GgufFile.Open(TestPaths.Stories260K)) ModelQuantizer.Quantize(input, q4, ModelFileType.Q4_0, 2);

        using var reader = new LogProbReader(basePath);
        var kl = Stories260KPerplexity(q4, compareBase: reader).KlDivergence!;
        Assert.InRange(kl.Mean, 1e-4, 1.0);
        Assert.True(kl.Median <= kl.Percentile99 && kl.Percentile99 <= kl.Maximum);
        Assert.InRange(kl.TopTokenAgreement, 0.5, 1.0);
    }

    [Fact]
    public void ComparingWithADifferentContextIsRefused()
    {
        string basePath = Path.Combine(_folder, "base.kld");
        using (var writer = new LogProbWriter(basePath)) Stories260KPerplexity(TestPaths.Stories260K, saveBase: writer);
        using var model = LanguageModel.Load(TestPaths.Stories260K);
        using var perplexity = new Perplexity(model.Model, new PerplexitySettings { ContextLength = 64 });
        using var reader = new LogProbReader(basePath);
        var e = Assert.Throws<ArgumentException>(() => perplexity.Run(model.Tokenizer.Encode(Text), model.Tokenizer.BosId, compareBase: reader));
        Assert.Contains("context of 128", e.Message);
    }

    [Fact]
    public void ATruncatedBaseFileIsReported()
    {
        string basePath = Path.Combine(_folder, "base.kld");
        using (var writer = new LogProbWriter(basePath)) Stories260KPerplexity(TestPaths.Stories260K, saveBase: writer);
        using (var stream = File.OpenWrite(basePath)) stream.SetLength(stream.Length - 100);
        using var reader = new LogProbReader(basePath);
        var e = Assert.Throws<FormatException>(() => Stories260KPerplexity(TestPaths.Stories260K, compareBase: reader));
        Assert.Contains("truncated", e.Message);
    }

    [Fact]
    public void ATextShorterThanTwoChunksIsRefused()
    {
        using var model = LanguageModel.Load(TestPaths.Stories260K);
        using var perplexity = new Perplexity(model.Model, new PerplexitySettings { ContextLength = 512 });
        var e = Assert.Throws<ArgumentException>(() => perplexity.Run(model.Tokenizer.Encode(Text), model.Tokenizer.BosId));
        Assert.Contains("needs at least 1024", e.Message);
    }

    [Fact]
    public void LogSoftmaxAndKlDivergenceOfKnownDistributions()
    {
        float[] logits = [0, MathF.Log(3)];
        var logProbs = new float[2];
        Assert.Equal(1, Perplexity.LogSoftmax(logits, logProbs));
        Assert.Equal(Math.Log(0.25), logProbs[0], 1e-6);
        Assert.Equal(Math.Log(0.75), logProbs[1], 1e-6);

        float[] uniform = [MathF.Log(0.5f), MathF.Log(0.5f)];
        // D((½, ½) ‖ (¼, ¾)) = ½ ln 2 + ½ ln ⅔
        Assert.Equal(0.5 * Math.Log(2) + 0.5 * Math.Log(2.0 / 3), Perplexity.KlDivergence(uniform, logProbs), 1e-6);
        Assert.Equal(0, Perplexity.KlDivergence(logProbs, logProbs));
    }
}
