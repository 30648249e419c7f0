using System.Text.Json.Nodes;
using Velo.Formats;

namespace Velo.Tests.Formats;

/// <summary>Safetensors headers that lie about their tensors are refused with a message naming what is wrong.</summary>
public sealed class SafetensorsFileTests : IDisposable
{
    private readonly string _folder = Directory.CreateTempSubdirectory("velo-safetensors-").FullName;

    public void Dispose() => Directory.Delete(_folder, recursive: true);

    private static readonly SafetensorsEntry[] Entries =
    [
        new("a", "F32", [2, 3], HuggingFaceFolder.Floats([1, 2, 3, 4, 5, 6], "F32")),
        new("b", "BF16", [4], HuggingFaceFolder.Floats([1, -2, 0.5f, 8], "BF16")),
        new("c", "F16", [2, 2], HuggingFaceFolder.Floats([1, 2, 3, 4], "F16")),
    ];

    private string Write(Func<string, JsonObject, JsonObject>? edit = null, IEnumerable<SafetensorsEntry>? entries = null)
    {
        string path = Path.Combine(_folder, $"{Guid.NewGuid():N}.safetensors");
        HuggingFaceFolder.WriteSafetensors(path, entries ?? Entries, edit);
        return path;
    }

    private static string Refused(string path) => Assert.Throws<SafetensorsFormatException>(() => SafetensorsFile.Open(path).Dispose()).Message;

    [Fact]
    public void ReadsTensorsOfEachFloatDtype()
    {
        using var file = SafetensorsFile.Open(Write());
        Assert.Equal(["a", "b", "c"], file.Tensors.Select(t => t.Name));
        Assert.Equal("pt", file.Metadata["format"]);
        var b = file.Find("b")!;
        Assert.Equal([4L], b.Shape);
        Assert.Equal(8, b.ByteSize);
        Assert.Equal(Velo.Tensors.GgmlType.BF16, b.FloatType);
    }

    [Fact]
    public void DataPastTheEndIsRefused() =>
        Assert.Contains("extends past the end", Refused(Write((name, item) =>
        {
            if (name == "c") item["data_offsets"] = new JsonArray(40, 48 + 1000);
            return item;
        })));

    [Fact]
    public void OverlappingTensorsAreRefused() =>
        Assert.Contains("'a' and 'b' overlap", Refused(Write((name, item) =>
        {
            if (name == "b") item["data_offsets"] = new JsonArray(16, 24);
            return item;
        })));

    [Fact]
    public void ASizeThatIsNotShapeTimesDtypeIsRefused()
    {
        Assert.Contains("shape [2, 4] of F32 needs 32", Refused(Write((name, item) =>
        {
            if (name == "a") item["shape"] = new JsonArray(2, 4);
            return item;
        })));
        Assert.Contains("overflows", Refused(Write((name, item) =>
        {
            if (name == "a") item["shape"] = new JsonArray(4294967296, 4294967296, 4);
            return item;
        })));
        Assert.Contains("not a non-negative 64-bit integer", Refused(Write((name, item) =>
        {
            if (name == "a") item["data_offsets"] = new JsonArray(-8, 16);
            return item;
        })));
    }

    [Fact]
    public void UnknownDtypeIsNamed() =>
        Assert.Contains("dtype 'F4_E2M1'", Refused(Write((name, item) =>
        {
            if (name == "b") item["dtype"] = "F4_E2M1";
            return item;
        })));

    [Fact]
    public void AHeaderLengthBeyondTheFileIsRefusedBeforeParsing()
    {
        string path = Write();
        var bytes = File.ReadAllBytes(path);
        BitConverter.TryWriteBytes(bytes, (ulong)bytes.Length);
        File.WriteAllBytes(path, bytes);
        Assert.Contains("runs past the end of the file", Refused(path));
        BitConverter.TryWriteBytes(bytes, ulong.MaxValue);
        File.WriteAllBytes(path, bytes);
        Assert.Contains("exceeds the 100000000-byte limit", Refused(path));
        File.WriteAllBytes(path, [1, 2, 3]);
        Assert.Contains("too small", Refused(path));
        File.WriteAllBytes(path, [2, 0, 0, 0, 0, 0, 0, 0, (byte)'[', (byte)']']);
        Assert.Contains("not a JSON object", Refused(path));
    }
}
