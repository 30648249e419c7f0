using Velo.Formats;
using Velo.Inference;
using Velo.Models;
using Velo.Tensors;
using Velo.Tests.Inference;

namespace Velo.Tests.Models;

public sealed class ModelQuantizerTests : IDisposable
{
    private readonly string _folder = Directory.CreateTempSubdirectory("velo-quantize-").FullName;

    public void Dispose() => Directory.Delete(_folder, recursive: true);

    private string Quantized(string source, ModelFileType type)
    {
        string path = Path.Combine(_folder, $"{Path.GetFileNameWithoutExtension(source)}-{type}.gguf");
        using var input = GgufFile.Open(source);
        ModelQuantizer.Quantize(input, path, type, threads: 2);
        return path;
    }

    [Fact]
    public void Q8_0OfStories260KConvertsEveryMatrixBitExactlyAndCopiesTheRest()
    {
        string path = Quantized(TestPaths.Stories260K, ModelFileType.Q8_0);
        using var source = GgufFile.Open(TestPaths.Stories260K);
        using var result = GgufFile.Open(path);

        Assert.Equal(7u, result.Metadata.RequireUInt32("general.file_type"));
        Assert.Equal(2u, result.Metadata.RequireUInt32("general.quantization_version"));
        foreach (var (key, value) in source.Metadata)
        {
            if (key == "general.file_type") continue;
            if (value is GgufArray array)
            {
                var copied = Assert.IsType<GgufArray>(result.Metadata[key]);
                Assert.Equal(array.ElementType, copied.ElementType);
                Assert.Equal(array.Items.Cast<object>(), copied.Items.Cast<object>());
            }
            else
            {
                Assert.Equal(value, result.Metadata[key]);
            }
        }

        Assert.Equal(source.Tensors.Select(t => t.Name), result.Tensors.Select(t => t.Name));
        foreach (var original in source.Tensors)
        {
            var converted = result.RequireTensor(original.Name);
            Assert.Equal(original.Shape, converted.Shape);
            var expectedType = original.Shape.Count == 1 ? GgmlType.F32
                : original.Name.Contains("ffn_down") ? GgmlType.F16 // rows of 172: no whole number of Q8_0 blocks
                : GgmlType.Q8_0;
            Assert.Equal(expectedType, converted.Type);

            int columns = (int)original.Shape[0];
            var row = new float[columns];
            var expected = new byte[GgmlTypeInfo.RowBytes(converted.Type, columns)];
            var sourceBytes = source.TensorBytes(original);
            var resultBytes = result.TensorBytes(converted);
            long rows = original.ElementCount / columns;
            for (long r = 0; r < rows; r++)
            {
                Dequantize.Row(original.Type, sourceBytes.Slice((int)(r * columns * 4), columns * 4), row);
                Quantize.Row(converted.Type, row, expected);
                Assert.True(expected.AsSpan().SequenceEqual(resultBytes.Slice((int)(r * expected.Length), expected.Length)), $"{original.Name} row {r}");
            }
        }
    }

    [Fact]
    public void Q8_0OfStories260KStaysWithinOnePercentOfTheF32Perplexity()
    {
        string path = Quantized(TestPaths.Stories260K, ModelFileType.Q8_0);
        double f32 = PerplexityTests.Stories260KPerplexity(TestPaths.Stories260K).Perplexity;
        double q8 = PerplexityTests.Stories260KPerplexity(path).Perplexity;
        Assert.InRange(q8 / f32, 0.99, 1.01);
    }

    [Theory]
    [InlineData(ModelFileType.Q4_0)]
    [InlineData(ModelFileType.Q4_1)]
    [InlineData(ModelFileType.Q5_0)]
    [InlineData(ModelFileType.Q5_1)]
    [InlineData(ModelFileType.Q4_K_M)]
    [InlineData(ModelFileType.Q5_K_M)]
    [InlineData(ModelFileType.Q6_K)]
    [InlineData(ModelFileType.F16)]
    [InlineData(ModelFileType.BF16)]
    public void EveryTypeOfASynthesizedF32ModelLoadsAndGivesFiniteLogits(ModelFileType type)
    {
        // Dimensions that are whole numbers of 256-blocks, so the K-quant mixes are used without fallbacks.
        var spec = new SynthSpec { Dim = 256, Layers = 4, Heads = 4, KvHeads = 2, FfnDim = 512, VocabSize = 320, WeightStd = 0.05f };
        string f32 = Path.Combine(_folder, "f32.gguf");
        ModelSynthesizer.Write(f32, spec);
        string path = Quantized(f32, type);

        using (var file = GgufFile.Open(path))
        {
            var recipe = new QuantizationRecipe(type, spec.Layers, hasOutputTensor: false);
            foreach (var t in file.Tensors) Assert.Equal(recipe.TargetType(t.Name, t.Shape) ?? GgmlType.F32, t.Type);
            Assert.Equal((uint)type, file.Metadata.RequireUInt32("general.file_type"));
        }
        ModelChecks.AssertFiniteLogits(path);
    }

    [Fact]
    public void AQuantizedInputIsRefused()
    {
        string q8 = Quantized(TestPaths.Stories260K, ModelFileType.Q8_0);
        using var input = GgufFile.Open(q8);
        var e = Assert.Throws<ArgumentException>(() => ModelQuantizer.Quantize(input, Path.Combine(_folder, "again.gguf"), ModelFileType.Q4_0, 1));
        Assert.Contains("already quantized (Q8_0)", e.Message);
        Assert.False(File.Exists(Path.Combine(_folder, "again.gguf")));
    }

    [Fact]
    public void WritingOverTheInputIsRefused()
    {
        string copy = Path.Combine(_folder, "copy.gguf");
        File.Copy(TestPaths.Stories260K, copy);
        using var input = GgufFile.Open(copy);
        Assert.Throws<ArgumentException>(() => ModelQuantizer.Quantize(input, copy, ModelFileType.Q8_0, 1));
    }
}

/// <summary>
/// Tests that count every thread's allocations (GC.GetTotalAllocatedBytes): they run after the parallel tests, alone,
/// or other tests' allocations would be counted too.
/// </summary>
[CollectionDefinition(nameof(ProcessWideAllocationCollection), DisableParallelization = true)]
public sealed class ProcessWideAllocationCollection;

[Collection(nameof(ProcessWideAllocationCollection))]
public sealed class ModelQuantizerAllocationTests : IDisposable
{
    private readonly string _folder = Directory.CreateTempSubdirectory("velo-quantize-").FullName;

    public void Dispose() => Directory.Delete(_folder, recursive: true);

    [Fact]
    public void TensorsStreamThroughABoundedBuffer()
    {
        var spec = new SynthSpec { Dim = 512, Layers = 4, Heads = 8, FfnDim = 1536, VocabSize = 8192 };
        string f32 = Path.Combine(_folder, "f32.gguf");
        ModelSynthesizer.Write(f32, spec);
        long fileSize = new FileInfo(f32).Length;
        Assert.True(fileSize > 64 << 20);

        long before = GC.GetTotalAllocatedBytes(precise: true);
        using (var input = GgufFile.Open(f32))
            ModelQuantizer.Quantize(input, Path.Combine(_folder, "q8_0.gguf"), ModelFileType.Q8_0, threads: 2);
        long allocated = GC.GetTotalAllocatedBytes(precise: true) - before;
        // Less than the embedding alone as floats (16 MiB): slabs of rows, never a whole tensor, let alone the model.
        Assert.True(allocated < 12 << 20, $"quantizing a {fileSize >> 20} MiB model allocated {allocated >> 20} MiB");
    }
}
