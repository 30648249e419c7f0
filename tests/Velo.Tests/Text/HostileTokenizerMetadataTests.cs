using Velo.Formats;
using Velo.Tests.Formats;
using Velo.Text;

namespace Velo.Tests.Text;

/// <summary>
/// <c>tokenizer.ggml.*</c> arrays that disagree in length with the token list: indexed by token id, each must be
/// refused with an <see cref="InvalidDataException"/> naming the key, whatever the model is called.
/// </summary>
public class HostileTokenizerMetadataTests
{
    private static string Phi3Vocab => TestPaths.SharedFile("tokenizers", "vocab", "ggml-vocab-phi-3.gguf");

    private static InvalidDataException ReadFails(string source, Action<GgufWriter, GgufMetadata> edit)
    {
        using var original = GgufFile.Open(source);
        using var file = HostileGguf.Rewrite(source, w => edit(w, original.Metadata));
        using var hostile = GgufFile.Open(file.Path);
        return Assert.Throws<InvalidDataException>(() => Tokenizer.FromGguf(hostile.Metadata));
    }

    [Theory]
    [InlineData("Phi3")]
    [InlineData("Phi-3 mini")]
    [InlineData("llama")]
    public void AShortTokenTypeListIsRefused(string modelName)
    {
        var error = ReadFails(Phi3Vocab, (w, m) => w
            .Set("general.name", modelName)
            .Set("tokenizer.ggml.token_type", m.GetInt32Array("tokenizer.ggml.token_type")![..1000]));
        Assert.Contains("tokenizer.ggml.token_type has 1000 entries for the 32064 tokens", error.Message);
    }

    [Fact]
    public void ALongTokenTypeListIsRefused()
    {
        var error = ReadFails(Phi3Vocab, (w, m) => w
            .Set("tokenizer.ggml.token_type", (int[])[.. m.GetInt32Array("tokenizer.ggml.token_type")!, 1]));
        Assert.Contains("tokenizer.ggml.token_type has 32065 entries", error.Message);
    }

    [Fact]
    public void AShortScoreListIsRefused()
    {
        var error = ReadFails(Phi3Vocab, (w, m) => w
            .Set("tokenizer.ggml.scores", m.GetFloat32Array("tokenizer.ggml.scores")![..5]));
        Assert.Contains("tokenizer.ggml.scores has 5 entries for the 32064 tokens", error.Message);
    }
}
