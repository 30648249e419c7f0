using System.Text;
using Velo.Formats;

namespace Velo.Tests.Formats;

/// <summary>A real GGUF file rewritten with hostile changes, in a temporary file deleted on dispose.</summary>
public sealed class HostileGguf : IDisposable
{
    private HostileGguf(string path) => Path = path;

    public string Path { get; }

    /// <summary>
    /// Copies <paramref name="source"/> (metadata and tensors, with the shapes in <paramref name="reshape"/> swapped
    /// in), then lets <paramref name="edit"/> override metadata or append tensors before the file is written.
    /// </summary>
    public static HostileGguf Rewrite(string source, Action<GgufWriter>? edit = null, IReadOnlyDictionary<string, long[]>? reshape = null)
    {
        var writer = new GgufWriter();
        using (var file = GgufFile.Open(source))
        {
            writer.SetAll(file.Metadata);
            foreach (var t in file.Tensors)
                writer.AddTensor(t.Name, t.Type, reshape?.GetValueOrDefault(t.Name) ?? t.Shape.ToArray(), file.TensorBytes(t).ToArray());
        }
        edit?.Invoke(writer);
        var result = new HostileGguf(System.IO.Path.Combine(System.IO.Path.GetTempPath(), $"velo-hostile-{Guid.NewGuid():N}.gguf"));
        writer.Write(result.Path);
        return result;
    }

    /// <summary>
    /// Overwrites the dimensions recorded for tensor <paramref name="name"/> in the file's header, leaving its data
    /// where it is: the way to claim sizes no writer would produce. The new dimensions must be as many as the old.
    /// </summary>
    public HostileGguf WithDimensions(string name, params ulong[] dimensions)
    {
        byte[] bytes = File.ReadAllBytes(Path);
        byte[] nameBytes = Encoding.UTF8.GetBytes(name);
        // A tensor info is: name length (u64), name, dimension count (u32), dimensions (u64 each).
        byte[] entry = [.. BitConverter.GetBytes((ulong)nameBytes.Length), .. nameBytes, .. BitConverter.GetBytes((uint)dimensions.Length)];
        int at = bytes.AsSpan().IndexOf(entry);
        if (at < 0) throw new ArgumentException($"no {dimensions.Length}-D tensor '{name}' in {Path}");
        for (int d = 0; d < dimensions.Length; d++)
            BitConverter.TryWriteBytes(bytes.AsSpan(at + entry.Length + 8 * d, 8), dimensions[d]);
        File.WriteAllBytes(Path, bytes);
        return this;
    }

    public void Dispose() => File.Delete(Path);
}
