using Velo.Formats;
using Velo.Models.Bert;
using Velo.Models.Gemma;
using Velo.Models.HuggingFace;
using Velo.Models.Llama;
using Velo.Models.Phi3;

namespace Velo.Models;

/// <summary>
/// An architecture family: the <c>general.architecture</c> values it runs, how it loads a model from an open file, how
/// it reads a file's hyperparameters without loading the weights, and the tensors a random-weight file of a
/// <see cref="SynthSpec"/> holds (for <see cref="ModelSynthesizer"/>), with any metadata of its own beyond the
/// hyperparameters every family shares. A family that can run a range of its blocks as a pipeline stage has
/// <see cref="LoadLayers"/>.
/// </summary>
public sealed record ModelFamily(
    string Name,
    IReadOnlyList<string> Architectures,
    Func<GgufFile, IModel> Load,
    Func<GgufFile, ModelInfo> ReadInfo,
    Func<SynthSpec, IEnumerable<(string Name, long[] Shape)>> SynthesisTensors,
    Action<SynthSpec, GgufWriter>? SynthesisMetadata = null,
    Func<GgufFile, LayerRange, ILayerRangeModel>? LoadLayers = null);

/// <summary>The architecture families Velo runs, keyed by <c>general.architecture</c>: adding a family is one line here.</summary>
public static class ModelRegistry
{
    private static readonly ModelFamily[] Families =
    [
        LlamaModel.Family,
        GemmaModel.Family,
        Phi3Model.Family,
        BertModel.Family,
    ];

    private static readonly Dictionary<string, ModelFamily> ByArchitecture =
        Families.SelectMany(f => f.Architectures.Select(a => KeyValuePair.Create(a, f))).ToDictionary();

    /// <summary>Every <c>general.architecture</c> value some family runs.</summary>
    public static IReadOnlyList<string> SupportedArchitectures { get; } = [.. Families.SelectMany(f => f.Architectures)];

    public static bool IsSupported(string architecture) => ByArchitecture.ContainsKey(architecture);

    /// <summary>
    /// Opens the GGUF file at <paramref name="path"/> and loads its model; a Hugging Face model folder is converted
    /// once into a cached GGUF file (<see cref="HuggingFaceModelCache"/>) and that is loaded.
    /// </summary>
    /// <exception cref="NotSupportedException">No family runs the file's architecture; the message names it and the supported ones.</exception>
    public static IModel Load(string path)
    {
        var file = GgufFile.Open(HuggingFaceModelCache.Resolve(path));
        try
        {
            return FamilyOf(file).Load(file);
        }
        catch
        {
            file.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Loads blocks <paramref name="layers"/> of the decoder at <paramref name="path"/> (a Hugging Face folder as in
    /// <see cref="Load"/>) for one stage of a pipeline: only those blocks' tensors are bound (and the embedding for
    /// the first stage, the output head for the last), so the stage touches no other part of the mapped file.
    /// <paramref name="layers"/> gives the first and last block as <c>a-b</c>.
    /// </summary>
    /// <exception cref="NotSupportedException">The family cannot run a range of its blocks.</exception>
    public static ILayerRangeModel LoadLayers(string path, string layers) => LoadLayers(path, total => LayerRange.Parse(layers, total));

    /// <summary>As <see cref="LoadLayers(string, string)"/>, for blocks <paramref name="layers"/>, whose
    /// <see cref="LayerRange.Total"/> must be the model's block count.</summary>
    public static ILayerRangeModel LoadLayers(string path, LayerRange layers) => LoadLayers(path, total => total == layers.Total
        ? layers
        : throw new ArgumentException($"{path}: the model has {total} blocks, not {layers.Total}"));

    private static ILayerRangeModel LoadLayers(string path, Func<int, LayerRange> layers)
    {
        var file = GgufFile.Open(HuggingFaceModelCache.Resolve(path));
        try
        {
            var family = FamilyOf(file);
            var info = family.ReadInfo(file);
            if (family.LoadLayers == null || info.Output != ModelOutput.Logits)
                throw new NotSupportedException($"{path}: a {file.Architecture} model cannot be split into pipeline stages " +
                    $"(architectures that can: {string.Join(", ", Families.Where(f => f.LoadLayers != null).SelectMany(f => f.Architectures))})");
            return family.LoadLayers(file, layers(info.Layers.Count));
        }
        catch
        {
            file.Dispose();
            throw;
        }
    }

    /// <summary>The file's hyperparameters, read and checked without loading its weights.</summary>
    public static ModelInfo ReadInfo(GgufFile file) => FamilyOf(file).ReadInfo(file);

    /// <summary>The tensors of a random-weight model of <paramref name="spec"/>'s architecture and shape.</summary>
    public static IEnumerable<(string Name, long[] Shape)> SynthesisTensors(SynthSpec spec) =>
        FamilyOf(spec.Architecture, "the synthetic model").SynthesisTensors(spec);

    /// <summary>Writes the metadata a random-weight model of <paramref name="spec"/>'s family has beyond the shared hyperparameters.</summary>
    public static void WriteSynthesisMetadata(SynthSpec spec, GgufWriter writer) =>
        FamilyOf(spec.Architecture, "the synthetic model").SynthesisMetadata?.Invoke(spec, writer);

    private static ModelFamily FamilyOf(GgufFile file) =>
        FamilyOf(file.Architecture ?? throw new GgufFormatException($"{file.Path}: general.architecture is missing"), file.Path);

    private static ModelFamily FamilyOf(string architecture, string source) =>
        ByArchitecture.TryGetValue(architecture, out var family)
            ? family
            : throw new NotSupportedException($"{source}: architecture '{architecture}' is not supported (supported: {string.Join(", ", SupportedArchitectures)})");
}
