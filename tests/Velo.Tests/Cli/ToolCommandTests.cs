using System.Globalization;
using System.Text.RegularExpressions;
using Velo.Formats;
using Velo.Tests.Inference;

namespace Velo.Tests.Cli;

/// <summary><c>velo perplexity</c>, <c>velo quantize</c> and <c>velo synth</c> as a user runs them.</summary>
public sealed partial class ToolCommandTests : IDisposable
{
    private readonly string _folder = Directory.CreateTempSubdirectory("velo-tools-").FullName;

    public void Dispose() => Directory.Delete(_folder, recursive: true);

    private static string Text => TestPaths.SharedFile("eval", "tinystories-public.txt");

    private static CliRunner.Result Succeeds(params string[] args)
    {
        var r = CliRunner.Run(args);
        Assert.True(r.ExitCode == 0, $"velo {string.Join(' ', args)}: {r.Stderr}");
        return r;
    }

    private static void FailsWith(string message, params string[] args)
    {
        var r = CliRunner.Run(args);
        Assert.Equal(1, r.ExitCode);
        Assert.Contains(message, r.Stderr);
        Assert.DoesNotContain("   at ", r.Stderr); // no stack trace
    }

    [GeneratedRegex(@"\[(\d+)\](\d+\.\d{4}),")]
    private static partial Regex ChunkFigure();

    [GeneratedRegex(@"Final estimate: PPL = (\d+\.\d{4}) \+/- (\d+\.\d{5})")]
    private static partial Regex FinalFigure();

    private static double Number(Group g) => double.Parse(g.Value, CultureInfo.InvariantCulture);

    [Fact]
    public void PerplexityPrintsLlamaCppsRunningFiguresAndFinalEstimate()
    {
        var r = Succeeds("perplexity", "-m", TestPaths.Stories260K, "-f", Text, "-c", "128", "-b", "128", "-t", "2");
        var chunks = ChunkFigure().Matches(r.Stdout);
        Assert.Equal(5, chunks.Count);
        for (int i = 0; i < chunks.Count; i++)
        {
            Assert.Equal(i + 1, int.Parse(chunks[i].Groups[1].Value));
            Assert.Equal(PerplexityTests.LlamaCppF32CacheRunning[i], Number(chunks[i].Groups[2]), 1e-9);
        }
        var final = FinalFigure().Match(r.Stdout);
        Assert.True(final.Success, r.Stdout);
        Assert.Equal(3.4350, Number(final.Groups[1]), 5e-4);
        Assert.Contains("5 chunks", r.Stderr);
    }

    [Fact]
    public void KlDivergenceOfAModelAgainstItsOwnBase()
    {
        string basePath = Path.Combine(_folder, "base.kld");
        Succeeds("perplexity", "-m", TestPaths.Stories260K, "-f", Text, "-c", "128", "--kl-divergence-base", basePath);
        Assert.True(File.Exists(basePath));
        // Without -f the tokens come from the base file.
        var r = Succeeds("perplexity", "-m", TestPaths.Stories260K, "--kl-divergence-base", basePath, "--kl-divergence");
        // Float rounding may leave the mean a hair below zero (see PerplexityTests).
        Assert.Matches(@"Mean KLD: -?0\.000000", r.Stdout);
        Assert.Contains("99.0% KLD: 0.000000", r.Stdout);
        Assert.Contains("Same top token: 100.000 % of 315 positions", r.Stdout);

        var firstTwo = Succeeds("perplexity", "-m", TestPaths.Stories260K, "--kl-divergence-base", basePath, "--kl-divergence", "--chunks", "2");
        Assert.Contains("Same top token: 100.000 % of 126 positions", firstTwo.Stdout);
        Assert.Contains("[2]3.1691,", firstTwo.Stdout);
    }

    [Fact]
    public void PerplexityErrorsAreClear()
    {
        FailsWith("needs --kl-divergence-base", "perplexity", "-m", TestPaths.Stories260K, "-f", Text, "--kl-divergence");
        FailsWith("give the text to score with -f", "perplexity", "-m", TestPaths.Stories260K);
        FailsWith("needs at least 1024", "perplexity", "-m", TestPaths.Stories260K, "-f", Text, "-c", "512");
        FailsWith("not a Velo KL-divergence base file", "perplexity", "-m", TestPaths.Stories260K, "--kl-divergence-base", Text, "--kl-divergence");
    }

    [Theory]
    [InlineData("Q8_0", "Q8_0")]
    [InlineData("q4_k_m", "Q5_0")] // stories260K's rows of 64 fall back from Q4_K
    public void QuantizedFileLoadsInInfoAndRun(string type, string mainType)
    {
        string output = Path.Combine(_folder, $"stories-{type}.gguf");
        var q = Succeeds("quantize", TestPaths.Stories260K, output, type, "-t", "2");
        Assert.Contains("written", q.Stderr);

        var info = Succeeds("info", output);
        Assert.Contains(mainType, info.Stdout);
        var run = Succeeds("run", "-m", output, "-p", "Once upon a time", "-n", "16", "--temp", "0");
        Assert.StartsWith(" Once upon a time", run.Stdout);
        Assert.True(run.Stdout.Trim().Length > " Once upon a time".Length);
    }

    [Fact]
    public void QuantizeErrorsAreClear()
    {
        string q8 = Path.Combine(_folder, "q8.gguf");
        Succeeds("quantize", TestPaths.Stories260K, q8, "Q8_0");
        FailsWith("already quantized (Q8_0)", "quantize", q8, Path.Combine(_folder, "again.gguf"), "Q4_0");
        FailsWith("unknown type 'Q3_X'", "quantize", TestPaths.Stories260K, Path.Combine(_folder, "x.gguf"), "Q3_X");
        FailsWith("model file not found", "quantize", Path.Combine(_folder, "missing.gguf"), Path.Combine(_folder, "x.gguf"), "Q8_0");
        FailsWith("no tensors", "quantize", TestPaths.SharedFile("tokenizers", "vocab", "ggml-vocab-llama-spm.gguf"), Path.Combine(_folder, "x.gguf"), "Q8_0");
        Assert.False(File.Exists(Path.Combine(_folder, "x.gguf")));
    }

    /// <summary>The smallest real shape: 110M parameters, a few seconds to write in Q4_0.</summary>
    [Fact]
    public void SynthesizedTiny110MLoadsInInfoAndRun()
    {
        string output = Path.Combine(_folder, "tiny.gguf");
        var s = Succeeds("synth", "--shape", "tiny-110M", "-t", "Q4_0", "-o", output, "--vocab", TestPaths.SharedFile("tokenizers", "vocab", "ggml-vocab-llama-spm.gguf"));
        Assert.Contains("tiny-110M Q4_0", s.Stderr);
        using (var file = GgufFile.Open(output))
        {
            Assert.Equal(Velo.Tensors.GgmlType.Q6_K, file.RequireTensor("token_embd.weight").Type);
            Assert.Equal(Velo.Tensors.GgmlType.Q4_0, file.RequireTensor("blk.11.ffn_down.weight").Type);
            Assert.Equal("llama", file.Metadata.GetString("tokenizer.ggml.model"));
        }
        var info = Succeeds("info", output);
        Assert.Contains("tied to the token embedding", info.Stdout);
        var run = Succeeds("run", "-m", output, "-p", "Once upon a time", "-n", "4", "--temp", "0", "-t", "2");
        Assert.StartsWith(" Once upon a time", run.Stdout);
    }

    /// <summary>The Gemma shapes through every command that runs a model: info, run, bench, perplexity.</summary>
    [Theory]
    [InlineData("gemma2-tiny", "Q8_0", "soft caps        │ attention 50, logits 30")]
    [InlineData("gemma3-tiny", "Q4_K_M", "sliding window   │ 64 on 5 of 6 layers")]
    public void SynthesizedGemmaRunsInInfoRunBenchAndPerplexity(string shape, string type, string infoLine)
    {
        string output = Path.Combine(_folder, $"{shape}.gguf");
        var s = Succeeds("synth", "--shape", shape, "-t", type, "-o", output, "--vocab", TestPaths.SharedFile("tokenizers", "vocab", "ggml-vocab-llama-spm.gguf"));
        Assert.Contains($"{shape} {type}", s.Stderr);
        Assert.Contains(infoLine, Succeeds("info", output).Stdout);
        var run = Succeeds("run", "-m", output, "-p", "Once upon a time", "-n", "4", "--temp", "0", "-t", "2");
        Assert.StartsWith(" Once upon a time", run.Stdout);
        var bench = Succeeds("bench", "-m", output, "-p", "16", "-n", "8", "-t", "2", "-r", "1", "--json");
        Assert.Contains("\"Test\": \"tg8\"", bench.Stdout);
        var ppl = Succeeds("perplexity", "-m", output, "-f", Text, "-c", "128", "-t", "2", "--chunks", "2");
        var final = FinalFigure().Match(ppl.Stdout);
        Assert.True(final.Success, ppl.Stdout);
        Assert.True(double.IsFinite(Number(final.Groups[1])));
    }

    [Fact]
    public void SynthErrorsAreClear()
    {
        string output = Path.Combine(_folder, "x.gguf");
        FailsWith("unknown shape 'llama-70B'", "synth", "--shape", "llama-70B", "-t", "Q4_0", "-o", output);
        FailsWith("unknown type 'Q4'", "synth", "--shape", "tiny-110M", "-t", "Q4", "-o", output);
        FailsWith("model file not found", "synth", "--shape", "tiny-110M", "-t", "Q4_0", "-o", output, "--vocab", Path.Combine(_folder, "none.gguf"));
        Assert.False(File.Exists(output));
    }
}
