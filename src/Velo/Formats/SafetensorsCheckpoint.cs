using System.Text.Json;
using Velo.Tensors;

namespace Velo.Formats;

/// <summary>
/// The safetensors weights of a Hugging Face model folder, one file or several shards, each memory-mapped: with a
/// <c>model.safetensors.index.json</c> the files its <c>weight_map</c> names (each tensor must be in the file the
/// index says), otherwise every <c>*.safetensors</c> file in the folder. A tensor name found in two files is refused.
/// </summary>
public sealed class SafetensorsCheckpoint : IDisposable
{
    public const string IndexFileName = "model.safetensors.index.json";

    private readonly List<SafetensorsFile> _files = [];
    private readonly Dictionary<string, (SafetensorsFile File, SafetensorsTensor Tensor)> _tensors = new(StringComparer.Ordinal);

    private SafetensorsCheckpoint(string folder)
    {
        Folder = folder;
        try
        {
            string index = Path.Combine(folder, IndexFileName);
            var weightMap = File.Exists(index) ? ReadWeightMap(index) : null;
            var fileNames = weightMap != null
                ? weightMap.Values.Distinct(StringComparer.Ordinal).Order(StringComparer.Ordinal).ToList()
                : Directory.EnumerateFiles(folder, "*.safetensors").Select(f => Path.GetFileName(f)!).Order(StringComparer.Ordinal).ToList();
            if (fileNames.Count == 0) throw new FileNotFoundException($"{folder}: no *.safetensors files (Velo reads Hugging Face weights only in the safetensors format)");
            foreach (string fileName in fileNames)
            {
                var file = SafetensorsFile.Open(Path.Combine(folder, fileName));
                _files.Add(file);
                foreach (var tensor in file.Tensors)
                    if (!_tensors.TryAdd(tensor.Name, (file, tensor)))
                        throw new SafetensorsFormatException($"{folder}: tensor '{tensor.Name}' is in both {Path.GetFileName(_tensors[tensor.Name].File.Path)} and {fileName}");
            }
            if (weightMap != null)
                foreach (var (name, fileName) in weightMap)
                    if (!_tensors.TryGetValue(name, out var found) || Path.GetFileName(found.File.Path) != fileName)
                        throw new SafetensorsFormatException($"{index}: tensor '{name}' is mapped to {fileName}, which does not hold it");
        }
        catch
        {
            Dispose();
            throw;
        }
    }

    public static SafetensorsCheckpoint Open(string folder) => new(folder);

    public string Folder { get; }

    public IEnumerable<string> TensorNames => _tensors.Keys;

    public SafetensorsTensor? Find(string name) => _tensors.TryGetValue(name, out var t) ? t.Tensor : null;

    public SafetensorsTensor Require(string name) =>
        Find(name) ?? throw new SafetensorsFormatException($"{Folder}: tensor '{name}' is missing from the safetensors files");

    /// <summary>Values of the tensor's innermost dimension (a row of a matrix, all of a vector).</summary>
    public static long RowLength(SafetensorsTensor tensor) => tensor.Shape.Length == 0 ? 1 : tensor.Shape[^1];

    /// <summary>Converts row <paramref name="row"/> (of the innermost dimension) of an F32, F16 or BF16 tensor to floats.</summary>
    public void ReadRow(SafetensorsTensor tensor, long row, Span<float> values)
    {
        var (file, _) = _tensors[tensor.Name];
        var type = tensor.FloatType
            ?? throw new SafetensorsFormatException($"{file.Path}: tensor '{tensor.Name}' has dtype '{tensor.DType}', which Velo cannot read (only F32, F16 and BF16)");
        long length = RowLength(tensor);
        if (values.Length != length) throw new ArgumentException($"a row of '{tensor.Name}' has {length} values, not {values.Length}");
        int rowBytes = checked((int)GgmlTypeInfo.RowBytes(type, length));
        Dequantize.Row(type, file.Bytes(tensor, row * rowBytes, rowBytes), values);
    }

    private static Dictionary<string, string> ReadWeightMap(string index)
    {
        try
        {
            using var json = JsonDocument.Parse(File.ReadAllBytes(index));
            if (!json.RootElement.TryGetProperty("weight_map", out var map) || map.ValueKind != JsonValueKind.Object)
                throw new SafetensorsFormatException($"{index}: no weight_map object");
            var weightMap = new Dictionary<string, string>(StringComparer.Ordinal);
            foreach (var entry in map.EnumerateObject())
            {
                string? fileName = entry.Value.ValueKind == JsonValueKind.String ? entry.Value.GetString() : null;
                // A shard is a file beside the index: a path that leaves the folder is refused, not followed.
                if (fileName == null || fileName.Length == 0 || Path.GetFileName(fileName) != fileName || fileName is "." or "..")
                    throw new SafetensorsFormatException($"{index}: tensor '{entry.Name}' is mapped to {entry.Value.GetRawText()}, not a file name in the folder");
                weightMap[entry.Name] = fileName;
            }
            return weightMap;
        }
        catch (JsonException e)
        {
            throw new SafetensorsFormatException($"{index} is not valid JSON: {e.Message}");
        }
    }

    public void Dispose()
    {
        foreach (var file in _files) file.Dispose();
        _files.Clear();
    }
}
