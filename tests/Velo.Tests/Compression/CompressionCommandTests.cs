using Velo.Formats;
using Velo.Tests.Cli;
using Velo.Tools.Training;

namespace Velo.Tests.Compression;

/// <summary>The prune, eval and distill commands as a user runs them, and their messages for bad input.</summary>
public sealed class CompressionCommandTests : IDisposable
{
    private readonly string _folder = Directory.CreateTempSubdirectory("velo-compress-cli-").FullName;

    public void Dispose() => Directory.Delete(_folder, recursive: true);

    private static string Text => TestPaths.SharedFile("eval", "tinystories-public.txt");

    private string In(string name) => Path.Combine(_folder, name);

    [Fact]
    public void PruneThenEvalThenHealByDistillation()
    {
        var prune = CliRunner.Run("prune", TestPaths.Stories260K, In("drop.gguf"), "--drop-layers", "1", "-c", "64", "--chunks", "2", "--eval-file", Text, "-t", "2");
        Assert.True(prune.ExitCode == 0, prune.Stderr);
        Assert.Contains("layers 5 → 4", prune.Stdout);
        Assert.Contains("block influence", prune.Stdout);
        Assert.Contains("mean KLD", prune.Stdout);

        var eval = CliRunner.Run("eval", "-m", TestPaths.Stories260K, "-m2", In("drop.gguf"), "-f", Text, "-c", "128", "-n", "4", "--json", "-t", "2");
        Assert.True(eval.ExitCode == 0, eval.Stderr);
        Assert.Contains("\"mean_kld\"", eval.Stdout);
        Assert.Contains("\"same_top_token\"", eval.Stdout);

        string checkpoint = In("ck");
        var distill = CliRunner.Run("distill", "--teacher", TestPaths.Stories260K, "--student", In("drop.gguf"), "-o", In("healed.gguf"),
            "--generate", "4", "-c", "32", "-b", "2", "--steps", "2", "--checkpoint", checkpoint, "-t", "2");
        Assert.True(distill.ExitCode == 0, distill.Stderr);
        Assert.Contains("step 2/2 loss", distill.Stderr);
        Assert.True(File.Exists(TrainingCheckpoint.PathIn(checkpoint)));
        var resumed = CliRunner.Run("distill", "--teacher", TestPaths.Stories260K, "--student", In("drop.gguf"), "-o", In("healed.gguf"),
            "--steps", "3", "-b", "2", "--checkpoint", checkpoint, "--resume", "-t", "2");
        Assert.True(resumed.ExitCode == 0, resumed.Stderr);
        Assert.Contains("resumed at step 2", resumed.Stderr);
        Assert.Contains("step 3/3 loss", resumed.Stderr);
    }

    [Fact]
    public void BadPruneArgumentsAreRefused()
    {
        var range = CliRunner.Run("prune", TestPaths.Stories260K, In("x.gguf"), "--drop-layers", "2,9");
        Assert.Equal(1, range.ExitCode);
        Assert.Contains("layer 9 is out of range; the model has layers 0 to 4", range.Stderr);
        var ratio = CliRunner.Run("prune", TestPaths.Stories260K, In("x.gguf"), "--ffn-keep", "0");
        Assert.Equal(1, ratio.ExitCode);
        Assert.Contains("--ffn-keep must be in (0, 1]", ratio.Stderr);
        Assert.False(File.Exists(In("x.gguf")));
    }

    /// <summary>A student whose token 300 reads differently from the teacher's.</summary>
    private string StudentWithAnotherTokenizer()
    {
        using var source = GgufFile.Open(TestPaths.Stories260K);
        var tokens = source.Metadata.GetStringArray("tokenizer.ggml.tokens")!.ToArray();
        tokens[300] = "<changed>";
        var writer = new GgufWriter();
        writer.SetAll(source.Metadata);
        writer.Set("tokenizer.ggml.tokens", tokens);
        foreach (var t in source.Tensors)
            writer.AddTensor(t.Name, t.Type, t.Shape.ToArray(), source.TensorBytes(t).ToArray());
        string path = In("other-tokenizer.gguf");
        writer.Write(path);
        return path;
    }

    [Fact]
    public void DistillRefusesMismatchedTokenizersAndStopsOnNaN()
    {
        var mismatch = CliRunner.Run("distill", "--teacher", TestPaths.Stories260K, "--student", StudentWithAnotherTokenizer(), "-o", In("out.gguf"), "--generate", "1");
        Assert.Equal(1, mismatch.ExitCode);
        Assert.Contains("do not share a tokenizer: token 300", mismatch.Stderr);

        using (var source = GgufFile.Open(TestPaths.Stories260K))
        {
            var layout = new ParameterLayout(DecoderGguf.ReadShape(source));
            var parameters = DecoderGguf.ReadParameters(source, layout);
            parameters[layout["output_norm.weight"].Offset] = float.NaN;
            DecoderGguf.Write(In("nan.gguf"), source, layout, parameters);
        }
        var nan = CliRunner.Run("distill", "--teacher", TestPaths.Stories260K, "--student", In("nan.gguf"), "-o", In("out.gguf"),
            "-f", Text, "-c", "32", "-b", "2", "--steps", "2", "--checkpoint", In("nan-ck"));
        Assert.Equal(1, nan.ExitCode);
        Assert.Contains("the loss became NaN or infinite at step 1", nan.Stderr);
        Assert.Contains("no checkpoint was written", nan.Stderr);
        Assert.False(File.Exists(In("out.gguf")));
    }

    [Fact]
    public void DistillNeedsAStudentAndText()
    {
        var noStudent = CliRunner.Run("distill", "--teacher", TestPaths.Stories260K, "-o", In("out.gguf"), "--generate", "1");
        Assert.Equal(1, noStudent.ExitCode);
        Assert.Contains("--student FILE or --student-shape", noStudent.Stderr);
        var noText = CliRunner.Run("distill", "--teacher", TestPaths.Stories260K, "--student-shape", "dim=16,heads=4,kv-heads=2", "-o", In("out.gguf"));
        Assert.Equal(1, noText.ExitCode);
        Assert.Contains("there is no training text", noText.Stderr);
        var resumeWithText = CliRunner.Run("distill", "--teacher", TestPaths.Stories260K, "--student", TestPaths.Stories260K, "-o", In("out.gguf"),
            "--checkpoint", In("ck"), "--resume", "--generate", "2");
        Assert.Equal(1, resumeWithText.ExitCode);
        Assert.Contains("leave out -f and --generate", resumeWithText.Stderr);
    }
}
