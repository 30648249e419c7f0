using System.Runtime.InteropServices;
using Velo.Tensors;

namespace Velo.Tests.Tensors;

/// <summary>
/// Velo against llama.cpp itself: the files in Golden/ were written by its libggml-base (see make_golden.c there), so
/// these compare bit for bit with ggml's dequantize_row_* and quantize_row_*_ref.
/// </summary>
public class GoldenTests
{
    public static TheoryData<GgmlType> Types => new()
    {
        GgmlType.F16, GgmlType.BF16, GgmlType.Q4_0, GgmlType.Q4_1, GgmlType.Q5_0, GgmlType.Q5_1, GgmlType.Q8_0,
        GgmlType.Q2_K, GgmlType.Q3_K, GgmlType.Q4_K, GgmlType.Q5_K, GgmlType.Q6_K,
    };

    private static string GoldenFile(string name) =>
        Path.Combine(TestPaths.RepoRoot, "tests", "Velo.Tests", "Tensors", "Golden", name);

    private static string Stem(GgmlType type) => type.ToString().ToLowerInvariant();

    [Theory]
    [MemberData(nameof(Types))]
    public void DequantizesRandomBlocksExactlyAsGgml(GgmlType type)
    {
        byte[] blocks = File.ReadAllBytes(GoldenFile(Stem(type) + ".random"));
        float[] expected = MemoryMarshal.Cast<byte, float>(File.ReadAllBytes(GoldenFile(Stem(type) + ".random.f32"))).ToArray();

        var actual = new float[expected.Length];
        Dequantize.Row(type, blocks, actual);

        for (int i = 0; i < expected.Length; i++)
        {
            bool bothNaN = float.IsNaN(expected[i]) && float.IsNaN(actual[i]);
            if (!bothNaN && BitConverter.SingleToInt32Bits(expected[i]) != BitConverter.SingleToInt32Bits(actual[i]))
                Assert.Fail($"{type} element {i}: expected {expected[i]:R}, got {actual[i]:R}");
        }
    }

    [Theory]
    [MemberData(nameof(Types))]
    public void QuantizesToTheSameBytesAsGgml(GgmlType type)
    {
        float[] input = MemoryMarshal.Cast<byte, float>(File.ReadAllBytes(GoldenFile("input.f32"))).ToArray();
        byte[] expected = File.ReadAllBytes(GoldenFile(Stem(type) + ".quantized"));

        var actual = new byte[expected.Length];
        Quantize.Row(type, input, actual);

        int blockBytes = GgmlTypeInfo.BlockBytes(type), blockSize = GgmlTypeInfo.BlockSize(type);
        for (int i = 0; i < expected.Length; i++)
            if (expected[i] != actual[i])
                Assert.Fail($"{type}: first difference at byte {i} (block {i / blockBytes}, input elements from " +
                            $"{i / blockBytes * blockSize}): expected 0x{expected[i]:X2}, got 0x{actual[i]:X2}");
    }
}
