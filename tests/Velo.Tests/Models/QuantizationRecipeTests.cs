using Velo.Models;
using Velo.Tensors;

namespace Velo.Tests.Models;

/// <summary>The per-tensor types against what llama.cpp's llama_tensor_get_type gives for the same names and shapes.</summary>
public class QuantizationRecipeTests
{
    private static readonly long[] Matrix = [2048, 2048];
    private static readonly long[] Embedding = [2048, 128256];
    private static readonly long[] Vector = [2048];

    /// <summary>use_more_bits for 16 layers (Llama-3.2-1B): layers below 2, from 14, and where (l - 2) % 3 == 2.</summary>
    private static readonly int[] MoreBitsLayersOf16 = [0, 1, 4, 7, 10, 13, 14, 15];

    [Fact]
    public void Q4KMOfATiedSixteenLayerModelMatchesLlamaCpp()
    {
        var recipe = new QuantizationRecipe(ModelFileType.Q4_K_M, layers: 16, hasOutputTensor: false);
        Assert.Equal(GgmlType.Q6_K, recipe.TargetType("token_embd.weight", Embedding));
        for (int layer = 0; layer < 16; layer++)
        {
            var more = MoreBitsLayersOf16.Contains(layer) ? GgmlType.Q6_K : GgmlType.Q4_K;
            Assert.Equal(more, recipe.TargetType($"blk.{layer}.attn_v.weight", Matrix));
            Assert.Equal(more, recipe.TargetType($"blk.{layer}.ffn_down.weight", Matrix));
            Assert.Equal(GgmlType.Q4_K, recipe.TargetType($"blk.{layer}.attn_q.weight", Matrix));
            Assert.Equal(GgmlType.Q4_K, recipe.TargetType($"blk.{layer}.attn_k.weight", Matrix));
            Assert.Equal(GgmlType.Q4_K, recipe.TargetType($"blk.{layer}.attn_output.weight", Matrix));
            Assert.Equal(GgmlType.Q4_K, recipe.TargetType($"blk.{layer}.ffn_gate.weight", Matrix));
            Assert.Equal(GgmlType.Q4_K, recipe.TargetType($"blk.{layer}.ffn_up.weight", Matrix));
            Assert.Null(recipe.TargetType($"blk.{layer}.attn_norm.weight", Vector));
            Assert.Null(recipe.TargetType($"blk.{layer}.ffn_norm.weight", Vector));
        }
        Assert.Null(recipe.TargetType("output_norm.weight", Vector));
    }

    [Fact]
    public void MoreBitsLayersOfTwelve()
    {
        var recipe = new QuantizationRecipe(ModelFileType.Q5_K_M, layers: 12, hasOutputTensor: true);
        var more = Enumerable.Range(0, 12).Where(l => recipe.TargetType($"blk.{l}.ffn_down.weight", Matrix) == GgmlType.Q6_K);
        Assert.Equal([0, 3, 6, 9, 10, 11], more);
        Assert.Equal(GgmlType.Q5_K, recipe.TargetType("blk.1.ffn_down.weight", Matrix));
    }

    [Fact]
    public void UntiedModelsQuantizeTheOutputNotTheEmbeddingWithMoreBits()
    {
        var recipe = new QuantizationRecipe(ModelFileType.Q4_K_M, layers: 16, hasOutputTensor: true);
        Assert.Equal(GgmlType.Q6_K, recipe.TargetType("output.weight", Embedding));
        Assert.Equal(GgmlType.Q4_K, recipe.TargetType("token_embd.weight", Embedding));
    }

    [Theory]
    [InlineData(ModelFileType.Q8_0, GgmlType.Q8_0, GgmlType.Q8_0)]
    [InlineData(ModelFileType.Q4_0, GgmlType.Q6_K, GgmlType.Q4_0)]
    [InlineData(ModelFileType.Q4_1, GgmlType.Q6_K, GgmlType.Q4_1)]
    [InlineData(ModelFileType.Q5_0, GgmlType.Q6_K, GgmlType.Q5_0)]
    [InlineData(ModelFileType.Q5_1, GgmlType.Q6_K, GgmlType.Q5_1)]
    [InlineData(ModelFileType.Q6_K, GgmlType.Q6_K, GgmlType.Q6_K)]
    [InlineData(ModelFileType.F16, GgmlType.F16, GgmlType.F16)]
    [InlineData(ModelFileType.BF16, GgmlType.BF16, GgmlType.BF16)]
    public void SingleTypeFilesKeepTheirTypeExceptTheOutput(ModelFileType fileType, GgmlType output, GgmlType weights)
    {
        var recipe = new QuantizationRecipe(fileType, layers: 16, hasOutputTensor: false);
        Assert.Equal(output, recipe.TargetType("token_embd.weight", Embedding));
        Assert.Equal(weights, recipe.TargetType("blk.0.attn_v.weight", Matrix));
        Assert.Equal(weights, recipe.TargetType("blk.15.ffn_down.weight", Matrix));
        Assert.Null(recipe.TargetType("blk.0.attn_q.bias", Vector));
    }

    [Theory]
    // stories260K: dim 64 and a feed-forward of 172 divide into no 256-block.
    [InlineData(ModelFileType.Q4_K_M, "blk.1.attn_q.weight", 64, GgmlType.Q5_0)]
    [InlineData(ModelFileType.Q4_K_M, "blk.2.attn_v.weight", 64, GgmlType.Q8_0)] // a Q6_K layer of 5
    [InlineData(ModelFileType.Q4_K_M, "blk.1.ffn_down.weight", 172, GgmlType.F16)]
    [InlineData(ModelFileType.Q4_K_M, "token_embd.weight", 64, GgmlType.Q8_0)]
    [InlineData(ModelFileType.Q5_K_M, "blk.1.attn_q.weight", 64, GgmlType.Q5_1)]
    [InlineData(ModelFileType.Q6_K, "blk.1.attn_q.weight", 64, GgmlType.Q8_0)]
    [InlineData(ModelFileType.Q8_0, "blk.1.ffn_down.weight", 172, GgmlType.F16)]
    [InlineData(ModelFileType.Q4_0, "blk.1.ffn_down.weight", 172, GgmlType.F16)]
    public void RowsThatAreNoWholeNumberOfBlocksFallBack(ModelFileType fileType, string name, long rowLength, GgmlType expected)
    {
        var recipe = new QuantizationRecipe(fileType, layers: 5, hasOutputTensor: false);
        Assert.Equal(expected, recipe.TargetType(name, [rowLength, 64]));
    }

    [Theory]
    [InlineData("q4_k_m", ModelFileType.Q4_K_M)]
    [InlineData("Q8_0", ModelFileType.Q8_0)]
    [InlineData("bf16", ModelFileType.BF16)]
    public void TypeNamesParseIgnoringCase(string name, ModelFileType expected) =>
        Assert.Equal(expected, QuantizationRecipe.Parse(name));

    [Theory]
    [InlineData("Q4_K")]
    [InlineData("Q3_K_M")]
    [InlineData("")]
    public void UnknownTypeNamesAreRefusedWithTheList(string name)
    {
        var e = Assert.Throws<ArgumentException>(() => QuantizationRecipe.Parse(name));
        Assert.Contains("Q4_K_M", e.Message);
    }
}
