using Velo.Models;
using Velo.Tests.Formats;

namespace Velo.Tests.Cli;

/// <summary><c>velo convert DIR</c>, and <c>run</c> and <c>info</c> on a Hugging Face folder, as a user runs them.</summary>
public sealed class HuggingFaceCommandTests : IDisposable
{
    private readonly string _root = Directory.CreateTempSubdirectory("velo-hf-cli-").FullName;

    public void Dispose() => Directory.Delete(_root, recursive: true);

    private static readonly SynthSpec Spec = new()
    {
        Architecture = "llama", Dim = 64, Layers = 2, Heads = 4, KvHeads = 2, FfnDim = 96, VocabSize = 288, ContextLength = 256,
        TiedEmbeddings = false, NormJitter = 0.1f, WeightStd = 0.05f,
    };

    [Fact]
    public void RunOnAFolderGeneratesWhatTheConvertedFileGenerates()
    {
        string folder = Path.Combine(_root, "tiny-llama");
        HuggingFaceFolder.Write(folder, Spec, matrixDType: "F16");
        string converted = Path.Combine(_root, "tiny.gguf");
        var convert = CliRunner.Run("convert", folder, "-o", converted, "-t", "2");
        Assert.True(convert.ExitCode == 0, convert.Stderr);

        string? previous = Environment.GetEnvironmentVariable("VELO_CACHE_DIR");
        Environment.SetEnvironmentVariable("VELO_CACHE_DIR", Path.Combine(_root, "cache"));
        try
        {
            string[] generate = ["-p", "ab ab", "-n", "8", "--temp", "0", "--ignore-eos", "-t", "1"];
            var fromFolder = CliRunner.Run(["run", "-m", folder, .. generate]);
            var fromFile = CliRunner.Run(["run", "-m", converted, .. generate]);
            Assert.True(fromFolder.ExitCode == 0, fromFolder.Stderr);
            Assert.Equal(fromFile.Stdout, fromFolder.Stdout);
            Assert.Contains("converting", fromFolder.Stderr);
            Assert.Single(Directory.GetFiles(Path.Combine(_root, "cache", "hf"), "*.gguf"));

            var info = CliRunner.Run("info", folder);
            Assert.True(info.ExitCode == 0, info.Stderr);
            Assert.Contains("llama", info.Stdout);
        }
        finally
        {
            Environment.SetEnvironmentVariable("VELO_CACHE_DIR", previous);
        }
    }

    [Fact]
    public void BadFoldersGetOneClearLine()
    {
        string folder = Path.Combine(_root, "mamba");
        HuggingFaceFolder.Write(folder, Spec, modelClass: "MambaForCausalLM");
        var unknown = CliRunner.Run("convert", folder, "-o", Path.Combine(_root, "x.gguf"));
        Assert.Equal(1, unknown.ExitCode);
        Assert.StartsWith("error: ", unknown.Stderr);
        Assert.Contains("'MambaForCausalLM'", unknown.Stderr);

        var onnxOption = CliRunner.Run("convert", folder, "-o", Path.Combine(_root, "x.gguf"), "--vocab", "vocab.txt");
        Assert.Equal(1, onnxOption.ExitCode);
        Assert.Contains("--vocab applies to ONNX models", onnxOption.Stderr);
    }
}
