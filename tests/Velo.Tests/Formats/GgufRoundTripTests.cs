using Velo.Formats;
using Velo.Tensors;

namespace Velo.Tests.Formats;

public class GgufRoundTripTests
{
    [Fact]
    public void ReadsStories260K()
    {
        using var file = GgufFile.Open(TestPaths.Stories260K);
        Assert.Equal(3u, file.Version);
        Assert.Equal("llama", file.Architecture);
        Assert.Equal(48, file.Tensors.Count);
        Assert.Equal(64u, file.Metadata.RequireUInt32("llama.embedding_length"));
        Assert.Equal(512, file.Metadata.GetStringArray("tokenizer.ggml.tokens")!.Length);
        var embedding = file.RequireTensor("token_embd.weight");
        Assert.Equal(new long[] { 64, 512 }, embedding.Shape);
        Assert.Equal(GgmlType.F32, embedding.Type);
        Assert.Equal(64 * 512 * 4, embedding.ByteSize);
    }

    [Fact]
    public void ReadingATensorsBytesGivesWhatTheMappingHoldsAndNothingOutsideTheTensor()
    {
        using var file = GgufFile.Open(TestPaths.Stories260K);
        var embedding = file.RequireTensor("token_embd.weight");
        var bytes = new byte[1000];

        file.ReadTensorBytes(embedding, 300, bytes);

        Assert.True(file.TensorBytes(embedding).Slice(300, 1000).SequenceEqual(bytes));
        Assert.Throws<ArgumentOutOfRangeException>(() => file.ReadTensorBytes(embedding, embedding.ByteSize - 999, bytes));
        Assert.Throws<ArgumentOutOfRangeException>(() => file.ReadTensorBytes(embedding, -1, bytes));
        file.Dispose();
        Assert.Throws<ObjectDisposedException>(() => file.ReadTensorBytes(embedding, 0, bytes));
    }

    [Theory]
    [InlineData(2u, 32u)]
    [InlineData(3u, 32u)]
    [InlineData(3u, 64u)]
    public void WriterRoundTripsEveryValueType(uint version, uint alignment)
    {
        var writer = new GgufWriter(alignment, version)
            .Set("u8", (byte)200).Set("i8", (sbyte)-5).Set("u16", (ushort)60000).Set("i16", (short)-3000)
            .Set("u32", 4_000_000_000u).Set("i32", -7).Set("f32", 1.5f).Set("bool", true).Set("str", "héllo ✓")
            .Set("u64", ulong.MaxValue).Set("i64", long.MinValue).Set("f64", Math.PI)
            .Set("strings", new[] { "a", "", "ü" })
            .Set("floats", new[] { 1f, -2f })
            .Set("nested", new GgufArray(GgufValueType.Array, new[] { GgufArray.Of(new[] { 1, 2 }), GgufArray.Of(new[] { "x" }) }))
            .Set("bools", new GgufArray(GgufValueType.Bool, new[] { true, false }));
        byte[] a = Enumerable.Range(0, 4 * 3 * 4).Select(i => (byte)i).ToArray();
        byte[] b = Enumerable.Range(0, 34 * 2).Select(i => (byte)(i * 7)).ToArray();
        writer.AddTensor("a", GgmlType.F32, [4, 3], a).AddTensor("b", GgmlType.Q8_0, [32, 2], b);

        string path = Path.GetTempFileName();
        try
        {
            writer.Write(path);
            using var file = GgufFile.Open(path);
            Assert.Equal(version, file.Version);
            Assert.Equal(alignment, file.Alignment);
            var m = file.Metadata;
            Assert.Equal((byte)200, m["u8"]);
            Assert.Equal((sbyte)-5, m["i8"]);
            Assert.Equal((ushort)60000, m["u16"]);
            Assert.Equal((short)-3000, m["i16"]);
            Assert.Equal(4_000_000_000u, m["u32"]);
            Assert.Equal(-7, m["i32"]);
            Assert.Equal(1.5f, m["f32"]);
            Assert.Equal(true, m["bool"]);
            Assert.Equal("héllo ✓", m.GetString("str"));
            Assert.Equal(ulong.MaxValue, m["u64"]);
            Assert.Equal(long.MinValue, m["i64"]);
            Assert.Equal(Math.PI, m["f64"]);
            Assert.Equal(["a", "", "ü"], m.GetStringArray("strings")!);
            Assert.Equal([1f, -2f], m.GetFloat32Array("floats")!);
            var nested = (GgufArray)m["nested"];
            Assert.Equal([1, 2], (int[])((GgufArray)nested.Items.GetValue(0)!).Items);
            Assert.Equal(["x"], (string[])((GgufArray)nested.Items.GetValue(1)!).Items);
            Assert.Equal([true, false], (bool[])((GgufArray)m["bools"]).Items);
            Assert.Equal(a, file.TensorBytes(file.RequireTensor("a")).ToArray());
            Assert.Equal(b, file.TensorBytes(file.RequireTensor("b")).ToArray());
            Assert.All(file.Tensors, t => Assert.Equal(0, (file.DataOffset + t.Offset) % alignment));

            // Writing what was read gives the same bytes.
            var copy = new GgufWriter(alignment, version).SetAll(file.Metadata);
            foreach (var t in file.Tensors) copy.AddTensor(t.Name, t.Type, t.Shape.ToArray(), file.TensorBytes(t).ToArray());
            var again = new MemoryStream();
            copy.WriteTo(again);
            Assert.Equal(File.ReadAllBytes(path), again.ToArray());
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Fact]
    public void RewritingStories260KReproducesTheFileExactly()
    {
        using var file = GgufFile.Open(TestPaths.Stories260K);
        var writer = new GgufWriter(file.Alignment, file.Version).SetAll(file.Metadata);
        foreach (var t in file.Tensors) writer.AddTensor(t.Name, t.Type, t.Shape.ToArray(), file.TensorBytes(t).ToArray());
        var stream = new MemoryStream();
        writer.WriteTo(stream);
        Assert.Equal(File.ReadAllBytes(TestPaths.Stories260K), stream.ToArray());
    }
}
