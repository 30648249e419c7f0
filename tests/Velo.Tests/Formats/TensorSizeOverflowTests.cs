using Velo.Formats;
using Velo.Inference;
using Velo.Runtime;
using Velo.Tensors;
using Velo.Tests.Cli;

namespace Velo.Tests.Formats;

/// <summary>
/// Tensor sizes claimed by a file that overflow 64 bits: each must be refused by the reader, before anything sizes a
/// buffer from it. The first case is the fuzzer's: an unused F32 vector of 2^62 − 32 elements, whose byte size
/// wrapped to −128, passed the end-of-file and overlap checks and undersized the native norm buffer.
/// </summary>
public class TensorSizeOverflowTests
{
    private const ulong WrapsToMinus128 = (1UL << 62) - 32;

    /// <summary>stories260K with one more 1-D F32 tensor at the end of its data, claiming <paramref name="elements"/> elements.</summary>
    private static HostileGguf Stories260KWithExtraVector(ulong elements) =>
        HostileGguf.Rewrite(TestPaths.Stories260K, w => w.AddTensor("velo.hostile", GgmlType.F32, [8], new byte[32]))
            .WithDimensions("velo.hostile", elements);

    [Fact]
    public void OpenRejectsAVectorWhoseByteSizeWraps()
    {
        using var file = Stories260KWithExtraVector(WrapsToMinus128);
        var error = Assert.Throws<GgufFormatException>(() => GgufFile.Open(file.Path).Dispose());
        Assert.Contains("tensor 'velo.hostile' has an impossible size", error.Message);
    }

    [Fact]
    public void LoadRejectsAVectorWhoseByteSizeWraps()
    {
        using var file = Stories260KWithExtraVector(WrapsToMinus128);
        var error = Assert.Throws<GgufFormatException>(() => LanguageModel.Load(file.Path).Dispose());
        Assert.Contains("velo.hostile", error.Message);
    }

    [Fact]
    public void InfoRejectsAVectorWhoseByteSizeWraps()
    {
        using var file = Stories260KWithExtraVector(WrapsToMinus128);
        var r = CliRunner.Run("info", file.Path, "--tensors");
        Assert.Equal(1, r.ExitCode);
        Assert.Contains("tensor 'velo.hostile' has an impossible size", r.Stderr);
        Assert.DoesNotContain("velo.hostile", r.Stdout);
    }

    [Fact]
    public void LoadRejectsAnEmbeddingWhoseByteSizeWrapsToZero()
    {
        // 8 × 2^59 F32 elements take exactly 2^64 bytes: 0 once wrapped, so the tensor "fits" anywhere.
        using var file = HostileGguf.Rewrite(TestPaths.Stories260K).WithDimensions("token_embd.weight", 8, 1UL << 59);
        var error = Assert.Throws<GgufFormatException>(() => LanguageModel.Load(file.Path).Dispose());
        Assert.Contains("tensor 'token_embd.weight' has an impossible size", error.Message);
    }

    [Fact]
    public void LoadRejectsANormVectorStoredAsAMatrix()
    {
        // Right element count, wrong shape: the vector buffer is sized from 1-D tensors only, so copying this one
        // would write past it.
        using var file = HostileGguf.Rewrite(TestPaths.Stories260K, reshape: new Dictionary<string, long[]> { ["output_norm.weight"] = [8, 8] });
        var error = Assert.Throws<GgufFormatException>(() => LanguageModel.Load(file.Path).Dispose());
        Assert.Contains("tensor 'output_norm.weight' has shape [8, 8], expected [64]", error.Message);
    }

    [Fact]
    public void AnOffsetPlusSizeThatOverflowsIsPastTheEnd()
    {
        using var file = HostileGguf.Rewrite(TestPaths.Stories260K, w => w.AddTensor("velo.hostile", GgmlType.F32, [8], new byte[32]));
        byte[] bytes = File.ReadAllBytes(file.Path);
        // The last tensor info's offset sits just before the padding that ends the header: find it by its value.
        using (var f = GgufFile.Open(file.Path))
        {
            long offset = f.FindTensor("velo.hostile")!.Offset;
            int at = bytes.AsSpan(0, (int)f.DataOffset).LastIndexOf(BitConverter.GetBytes((ulong)offset));
            BitConverter.TryWriteBytes(bytes.AsSpan(at, 8), (ulong)(long.MaxValue - 31));
        }
        File.WriteAllBytes(file.Path, bytes);
        var error = Assert.Throws<GgufFormatException>(() => GgufFile.Open(file.Path).Dispose());
        Assert.Contains("tensor 'velo.hostile' data of 32 bytes", error.Message);
        Assert.Contains("extends past the end of the file", error.Message);
    }

    [Fact]
    public void KvCacheSizesThatOverflowAreRefused()
    {
        // 2^30 sequences × 2^30 positions × 16 heads × 16 dimensions wrapped to 0 elements: a 64-byte cache.
        Assert.Throws<ArgumentOutOfRangeException>(() => new KvCache(1, 1 << 30, 1 << 30, 16, 16).Dispose());
    }

    [Fact]
    public void SizeMathRefusesOverflowAndNegatives()
    {
        Assert.True(SizeMath.TryMultiply(1L << 31, 1L << 31, out long product));
        Assert.Equal(1L << 62, product);
        Assert.False(SizeMath.TryMultiply(1L << 32, 1L << 31, out _));
        Assert.False(SizeMath.TryMultiply(-1, 1, out _));
        Assert.True(SizeMath.TryAdd(long.MaxValue - 1, 1, out long sum));
        Assert.Equal(long.MaxValue, sum);
        Assert.False(SizeMath.TryAdd(long.MaxValue, 1, out _));
        Assert.False(SizeMath.TryAdd(-128, 256, out _));
        Assert.True(SizeMath.TryElementCount([64, 512], out long elements));
        Assert.Equal(64 * 512, elements);
        Assert.False(SizeMath.TryElementCount([1L << 40, 1L << 40], out _));
        Assert.False(SizeMath.TryElementCount([0, 8], out _));
        Assert.False(SizeMath.TryByteSize(GgmlType.F32, (long)WrapsToMinus128, out _));
        Assert.True(SizeMath.TryByteSize(GgmlType.Q8_0, 64, out long bytes));
        Assert.Equal(68, bytes);
        Assert.False(SizeMath.TryByteSize(GgmlType.Q8_0, 33, out _));
        Assert.Throws<ArgumentOutOfRangeException>(() => GgmlTypeInfo.RowBytes(GgmlType.F32, (long)WrapsToMinus128));
        Assert.Throws<ArgumentOutOfRangeException>(() => SizeMath.Product("test", 1L << 40, 1L << 40));
    }
}
