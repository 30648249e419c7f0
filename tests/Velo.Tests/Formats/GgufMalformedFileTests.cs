using System.Text;
using Velo.Formats;

namespace Velo.Tests.Formats;

/// <summary>Hostile and broken files: each must fail with a <see cref="GgufFormatException"/> naming what is wrong.</summary>
public class GgufMalformedFileTests
{
    /// <summary>Builds GGUF bytes field by field so tests can put any value in any field.</summary>
    private sealed class RawGguf
    {
        public uint Magic = GgufFile.Magic;
        public uint Version = 3;
        public ulong? TensorCountOverride;
        public ulong? KvCountOverride;
        public List<byte[]> Kvs = [];
        public List<(string Name, ulong[] Dims, uint Type, ulong Offset)> Tensors = [];
        public int DataBytes = 256;

        public RawGguf Kv(string key, Action<BinaryWriter> value)
        {
            var ms = new MemoryStream();
            var w = new BinaryWriter(ms);
            Str(w, key);
            value(w);
            Kvs.Add(ms.ToArray());
            return this;
        }

        public RawGguf Tensor(string name, ulong[] dims, uint type, ulong offset)
        {
            Tensors.Add((name, dims, type, offset));
            return this;
        }

        public static void Str(BinaryWriter w, string s)
        {
            var b = Encoding.UTF8.GetBytes(s);
            w.Write((ulong)b.Length);
            w.Write(b);
        }

        public byte[] Bytes()
        {
            var ms = new MemoryStream();
            var w = new BinaryWriter(ms);
            w.Write(Magic);
            w.Write(Version);
            w.Write(TensorCountOverride ?? (ulong)Tensors.Count);
            w.Write(KvCountOverride ?? (ulong)Kvs.Count);
            foreach (var kv in Kvs) w.Write(kv);
            foreach (var t in Tensors)
            {
                Str(w, t.Name);
                w.Write((uint)t.Dims.Length);
                foreach (var d in t.Dims) w.Write(d);
                w.Write(t.Type);
                w.Write(t.Offset);
            }
            while (ms.Length % 32 != 0) w.Write((byte)0);
            w.Write(new byte[DataBytes]);
            return ms.ToArray();
        }
    }

    private static RawGguf Valid() => new RawGguf()
        .Kv("general.architecture", w => { w.Write((uint)GgufValueType.String); RawGguf.Str(w, "llama"); })
        .Kv("list", w => { w.Write((uint)GgufValueType.Array); w.Write((uint)GgufValueType.Int32); w.Write(2UL); w.Write(1); w.Write(2); })
        .Tensor("a", [8, 2], 0, 0)      // F32: 64 bytes
        .Tensor("b", [32], 8, 64);      // Q8_0: 34 bytes

    private static string Fail(byte[] bytes)
    {
        string path = Path.GetTempFileName();
        try
        {
            File.WriteAllBytes(path, bytes);
            var e = Assert.Throws<GgufFormatException>(() => GgufFile.Open(path).Dispose());
            return e.Message;
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Fact]
    public void TheValidBaseFileLoads()
    {
        string path = Path.GetTempFileName();
        try
        {
            File.WriteAllBytes(path, Valid().Bytes());
            using var f = GgufFile.Open(path);
            Assert.Equal(2, f.Tensors.Count);
            Assert.Equal([1, 2], f.Metadata.GetInt32Array("list")!);
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Fact]
    public void BadMagic()
    {
        var g = Valid();
        g.Magic = 0x46554748;
        Assert.Contains("bad magic", Fail(g.Bytes()));
    }

    [Theory]
    [InlineData(1u, "version 1 is obsolete")]
    [InlineData(4u, "unsupported GGUF version 4")]
    [InlineData(0x03000000u, "big-endian")]
    public void UnsupportedVersion(uint version, string expected)
    {
        var g = Valid();
        g.Version = version;
        Assert.Contains(expected, Fail(g.Bytes()));
    }

    [Fact]
    public void AbsurdCounts()
    {
        var g = Valid();
        g.TensorCountOverride = ulong.MaxValue;
        Assert.Contains("tensor count 18446744073709551615 is impossible", Fail(g.Bytes()));
        g = Valid();
        g.KvCountOverride = 1UL << 40;
        Assert.Contains("metadata count 1099511627776 is impossible", Fail(g.Bytes()));
    }

    [Fact]
    public void AbsurdStringLength()
    {
        var g = Valid().Kv("s", w => { w.Write((uint)GgufValueType.String); w.Write(ulong.MaxValue / 2); });
        Assert.Matches("string length 9223372036854775807 of metadata 's' at offset \\d+ exceeds", Fail(g.Bytes()));
    }

    [Fact]
    public void AbsurdArrayLength()
    {
        var g = Valid().Kv("arr", w => { w.Write((uint)GgufValueType.Array); w.Write((uint)GgufValueType.UInt64); w.Write(1UL << 60); });
        Assert.Contains("metadata 'arr' array length 1152921504606846976", Fail(g.Bytes()));
    }

    [Fact]
    public void UnknownValueType()
    {
        var g = Valid().Kv("odd", w => w.Write(77u));
        Assert.Contains("metadata 'odd' has unknown value type 77", Fail(g.Bytes()));
        g = Valid().Kv("odd", w => { w.Write((uint)GgufValueType.Array); w.Write(99u); w.Write(1UL); });
        Assert.Contains("metadata 'odd' is an array of unknown value type 99", Fail(g.Bytes()));
    }

    [Fact]
    public void DeeplyNestedArrays()
    {
        var g = Valid().Kv("deep", w =>
        {
            w.Write((uint)GgufValueType.Array);
            for (int i = 0; i < 20; i++) { w.Write((uint)GgufValueType.Array); w.Write(1UL); }
            w.Write((uint)GgufValueType.Int32); w.Write(0UL);
        });
        Assert.Contains("nests arrays deeper than", Fail(g.Bytes()));
    }

    [Fact]
    public void DuplicateKeyAndTensor()
    {
        var g = Valid().Kv("general.architecture", w => { w.Write((uint)GgufValueType.String); RawGguf.Str(w, "x"); });
        Assert.Contains("'general.architecture' appears twice", Fail(g.Bytes()));
        g = Valid().Tensor("a", [8], 0, 128);
        Assert.Contains("tensor 'a' appears twice", Fail(g.Bytes()));
    }

    [Fact]
    public void UnknownTensorType()
    {
        var g = Valid().Tensor("c", [32], 99, 128);
        Assert.Contains("tensor 'c' has unknown tensor type 99", Fail(g.Bytes()));
    }

    [Fact]
    public void BadDimensions()
    {
        Assert.Contains("tensor 'c' has 5 dimensions", Fail(Valid().Tensor("c", [1, 1, 1, 1, 1], 0, 128).Bytes()));
        Assert.Contains("tensor 'c' has 0 dimensions", Fail(Valid().Tensor("c", [], 0, 128).Bytes()));
        Assert.Contains("tensor 'c' has an impossible dimension 0 = 0", Fail(Valid().Tensor("c", [0], 0, 128).Bytes()));
        Assert.Contains("impossible shape [1099511627776, 1099511627776]", Fail(Valid().Tensor("c", [1UL << 40, 1UL << 40], 0, 128).Bytes()));
        Assert.Contains("not a whole number of Q8_0 blocks", Fail(Valid().Tensor("c", [33], 8, 128).Bytes()));
    }

    [Fact]
    public void TensorDataPastTheEnd()
    {
        Assert.Contains("tensor 'c' data of 256 bytes", Fail(Valid().Tensor("c", [64], 0, 224).Bytes()));
        Assert.Contains("extends past the end of the file", Fail(Valid().Tensor("c", [8], 0, 1UL << 40).Bytes()));
    }

    [Fact]
    public void TensorByteSizesThatOverflowAreRejected()
    {
        // Byte sizes that used to wrap to -128 and to 0, and so passed the end-of-file and overlap checks.
        Assert.Contains("tensor 'c' has an impossible size", Fail(Valid().Tensor("c", [(1UL << 62) - 32], 0, 128).Bytes()));
        Assert.Contains("tensor 'c' has an impossible size", Fail(Valid().Tensor("c", [1UL << 59, 8], 0, 128).Bytes()));
        Assert.Contains("tensor 'c' has an impossible size", Fail(Valid().Tensor("c", [1UL << 62], 1, 128).Bytes()));
    }

    [Fact]
    public void OverlappingAndMisalignedTensors()
    {
        Assert.Contains("tensors 'a' and 'c' overlap", Fail(Valid().Tensor("c", [8], 0, 32).Bytes()));
        Assert.Contains("tensor 'c' data offset 100 is not a multiple of the alignment 32", Fail(Valid().Tensor("c", [8], 0, 100).Bytes()));
    }

    [Fact]
    public void BadAlignmentValue()
    {
        var g = Valid().Kv("general.alignment", w => { w.Write((uint)GgufValueType.UInt32); w.Write(48u); });
        Assert.Contains("general.alignment must be a power-of-two", Fail(g.Bytes()));
    }

    [Fact]
    public void EveryTruncationFailsCleanly()
    {
        byte[] bytes = Valid().Bytes();
        int headerEnd = bytes.Length - 256; // the data section
        for (int length = 0; length < headerEnd + 98; length++)
        {
            string message = Fail(bytes[..length]);
            Assert.True(message.Contains("unexpected end of file") || message.Contains("too small") ||
                        message.Contains("past the end") || message.Contains("before its tensor data") || message.Contains("impossible for a file") || message.Contains("exceeds"),
                $"truncated to {length}: {message}");
        }
    }

    [Fact]
    public void RandomCorruptionNeverCrashes()
    {
        byte[] original = File.ReadAllBytes(TestPaths.Stories260K);
        var rng = new Random(1234);
        string path = Path.GetTempFileName();
        try
        {
            for (int trial = 0; trial < 300; trial++)
            {
                byte[] bytes = (byte[])original.Clone();
                for (int k = 0; k < 4; k++) bytes[rng.Next(20000)] = (byte)rng.Next(256);
                File.WriteAllBytes(path, bytes);
                try
                {
                    GgufFile.Open(path).Dispose();
                }
                catch (GgufFormatException)
                {
                }
            }
        }
        finally
        {
            File.Delete(path);
        }
    }
}
