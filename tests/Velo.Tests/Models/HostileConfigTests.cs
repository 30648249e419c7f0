using Velo.Formats;
using Velo.Inference;
using Velo.Tests.Formats;

namespace Velo.Tests.Models;

/// <summary>
/// Hyperparameters a file can state but Velo cannot use: each must fail the load with a
/// <see cref="GgufFormatException"/> that names the problem, never an OverflowException or a wrapped size.
/// </summary>
public class HostileConfigTests
{
    private static GgufFormatException LoadFails(Action<GgufWriter> edit)
    {
        using var file = HostileGguf.Rewrite(TestPaths.Stories260K, edit);
        return Assert.Throws<GgufFormatException>(() => LanguageModel.Load(file.Path).Dispose());
    }

    [Theory]
    [InlineData("embedding_length", 1u << 31)]
    [InlineData("embedding_length", uint.MaxValue)]
    [InlineData("block_count", 1u << 31)]
    [InlineData("block_count", uint.MaxValue)]
    [InlineData("feed_forward_length", 1u << 31)]
    [InlineData("feed_forward_length", uint.MaxValue)]
    [InlineData("attention.head_count", 1u << 31)]
    [InlineData("attention.head_count", uint.MaxValue)]
    [InlineData("attention.head_count_kv", 1u << 31)]
    [InlineData("attention.head_count_kv", uint.MaxValue)]
    [InlineData("attention.key_length", 1u << 31)]
    [InlineData("attention.key_length", uint.MaxValue)]
    [InlineData("attention.value_length", 1u << 31)]
    [InlineData("attention.value_length", uint.MaxValue)]
    [InlineData("context_length", 1u << 31)]
    [InlineData("context_length", uint.MaxValue)]
    [InlineData("rope.dimension_count", 1u << 31)]
    [InlineData("rope.dimension_count", uint.MaxValue)]
    public void AHyperparameterBeyondInt32IsRefusedByName(string key, uint value)
    {
        var error = LoadFails(w => w.Set($"llama.{key}", value));
        Assert.Contains($"metadata 'llama.{key}' = {value} is too large", error.Message);
    }

    [Fact]
    public void ABlockCountBeyondTheTensorsIsRefusedBeforeSizingTheLayers()
    {
        var error = LoadFails(w => w.Set("llama.block_count", (uint)int.MaxValue));
        Assert.Contains("block_count 2147483647 is impossible for a file of 48 tensors", error.Message);
    }

    [Fact]
    public void HeadsTimesHeadDimensionBeyondInt32IsRefused()
    {
        var error = LoadFails(w => w.Set("llama.attention.head_count", 1u << 16).Set("llama.attention.head_count_kv", 1u << 16)
            .Set("llama.attention.key_length", 1u << 16).Set("llama.attention.value_length", 1u << 16));
        Assert.Contains("65536 heads of 65536 dimensions are too many", error.Message);
    }

    [Fact]
    public void MoreKvHeadsThanHeadsIsRefused()
    {
        var error = LoadFails(w => w.Set("llama.attention.head_count_kv", 16u));
        Assert.Contains("8 attention heads cannot be shared by 16 KV heads", error.Message);
    }

    [Fact]
    public void AnEmbeddingLengthThatIsNotTheEmbeddingsWidthIsRefused()
    {
        var error = LoadFails(w => w.Set("llama.embedding_length", 32u));
        Assert.Contains("tensor 'token_embd.weight' has shape [64, 512], expected [32 (embedding_length)", error.Message);
    }
}
