using System.Globalization;
using Velo.Tensors;

namespace Velo.Models;

/// <summary>What a model file mostly holds: llama.cpp's <c>llama_ftype</c>, as GGUF's <c>general.file_type</c> stores it.</summary>
public enum ModelFileType : uint
{
    F32 = 0,
    F16 = 1,
    Q4_0 = 2,
    Q4_1 = 3,
    Q8_0 = 7,
    Q5_0 = 8,
    Q5_1 = 9,
    Q4_K_M = 15,
    Q5_K_M = 17,
    Q6_K = 18,
    BF16 = 32,
}

/// <summary>
/// Which type each tensor of a model (by llama.cpp's tensor names) gets in a file of a given <see cref="ModelFileType"/>, following
/// llama.cpp's <c>llama_tensor_get_type</c> (without importance matrix, experts or the 70B special case) so Velo's
/// files have the same mix as published ones:
/// <list type="bullet">
/// <item>only 2-D (and larger) <c>*.weight</c> tensors other than norms are converted; the rest keep their type;</item>
/// <item>the output matrix (the token embedding when tied) is Q6_K in every quantized file except Q8_0, and Q8_0
/// when its rows do not divide into the file's blocks;</item>
/// <item>Q4_K_M and Q5_K_M spend Q6_K on <c>attn_v</c> and <c>ffn_down</c> in the layers where precision matters
/// most (the first and last eighth, and every third between);</item>
/// <item>a row that is not a whole number of the chosen type's blocks falls back: Q4_K → Q5_0, Q5_K → Q5_1,
/// Q6_K → Q8_0, then F16. llama.cpp refuses the other types there; Velo falls back to F16 for them too, so models
/// with odd dimensions (stories260K's feed-forward of 172) can still be quantized.</item>
/// </list>
/// </summary>
public sealed class QuantizationRecipe
{
    private static readonly (string Name, ModelFileType Type)[] Names =
    [
        ("F32", ModelFileType.F32), ("F16", ModelFileType.F16), ("BF16", ModelFileType.BF16),
        ("Q8_0", ModelFileType.Q8_0), ("Q4_0", ModelFileType.Q4_0), ("Q4_1", ModelFileType.Q4_1),
        ("Q5_0", ModelFileType.Q5_0), ("Q5_1", ModelFileType.Q5_1),
        ("Q4_K_M", ModelFileType.Q4_K_M), ("Q5_K_M", ModelFileType.Q5_K_M), ("Q6_K", ModelFileType.Q6_K),
    ];

    private readonly int _layers;
    private readonly bool _hasOutputTensor;

    /// <param name="layers">The model's block count (the <c>use_more_bits</c> layers depend on it).</param>
    /// <param name="hasOutputTensor">Whether the model has its own <c>output.weight</c> (untied embeddings).</param>
    public QuantizationRecipe(ModelFileType fileType, int layers, bool hasOutputTensor)
    {
        FileType = fileType;
        BaseType = BaseTypeOf(fileType);
        _layers = layers;
        _hasOutputTensor = hasOutputTensor;
    }

    public ModelFileType FileType { get; }

    /// <summary>The type most weights get.</summary>
    public GgmlType BaseType { get; }

    public static IEnumerable<string> TypeNames => Names.Select(n => n.Name);

    public static string NameOf(ModelFileType type) => Names.First(n => n.Type == type).Name;

    /// <summary>Parses a file type name (case-insensitive: <c>q4_k_m</c>, <c>Q8_0</c>, …).</summary>
    public static ModelFileType Parse(string name)
    {
        foreach (var (n, t) in Names)
            if (string.Equals(n, name, StringComparison.OrdinalIgnoreCase)) return t;
        throw new ArgumentException($"unknown type '{name}'; expected one of {string.Join(", ", TypeNames)}");
    }

    public static GgmlType BaseTypeOf(ModelFileType type) => type switch
    {
        ModelFileType.F32 => GgmlType.F32,
        ModelFileType.F16 => GgmlType.F16,
        ModelFileType.BF16 => GgmlType.BF16,
        ModelFileType.Q4_0 => GgmlType.Q4_0,
        ModelFileType.Q4_1 => GgmlType.Q4_1,
        ModelFileType.Q5_0 => GgmlType.Q5_0,
        ModelFileType.Q5_1 => GgmlType.Q5_1,
        ModelFileType.Q8_0 => GgmlType.Q8_0,
        ModelFileType.Q4_K_M => GgmlType.Q4_K,
        ModelFileType.Q5_K_M => GgmlType.Q5_K,
        ModelFileType.Q6_K => GgmlType.Q6_K,
        _ => throw new ArgumentOutOfRangeException(nameof(type), type, "not a file type Velo writes"),
    };

    /// <summary>Whether llama.cpp's quantizer converts this tensor at all (norms, biases and vectors it copies).</summary>
    public static bool IsConverted(string name, int rank) =>
        rank >= 2 && name.EndsWith("weight", StringComparison.Ordinal) && !name.Contains("_norm.weight", StringComparison.Ordinal);

    /// <summary>The type of a tensor in this file, or null when it is not converted and keeps its own.</summary>
    public GgmlType? TargetType(string name, IReadOnlyList<long> shape)
    {
        if (!IsConverted(name, shape.Count)) return null;
        if (BaseType is GgmlType.F32 or GgmlType.F16 or GgmlType.BF16) return BaseType;
        long rowLength = shape[0];
        return WithFallback(ChooseType(name, rowLength), rowLength);
    }

    private GgmlType ChooseType(string name, long rowLength)
    {
        var type = BaseType;
        if (name == "output.weight" || (!_hasOutputTensor && name == "token_embd.weight"))
            return rowLength % GgmlTypeInfo.BlockSize(type) != 0 ? GgmlType.Q8_0
                : type != GgmlType.Q8_0 ? GgmlType.Q6_K
                : type;

        bool mediumMix = FileType is ModelFileType.Q4_K_M or ModelFileType.Q5_K_M;
        if (mediumMix && (name.Contains("attn_v.weight", StringComparison.Ordinal) || name.Contains("ffn_down", StringComparison.Ordinal))
            && UseMoreBits(LayerOf(name), _layers))
            return GgmlType.Q6_K;
        if (name.Contains("attn_qkv.weight", StringComparison.Ordinal))
            return FileType switch
            {
                ModelFileType.Q4_K_M => GgmlType.Q5_K,
                ModelFileType.Q5_K_M => GgmlType.Q6_K,
                _ => type,
            };
        return type;
    }

    /// <summary>llama.cpp's <c>use_more_bits</c>: the first and last eighth of the layers, and every third between.</summary>
    public static bool UseMoreBits(int layer, int layers) =>
        layer < layers / 8 || layer >= 7 * layers / 8 || (layer - layers / 8) % 3 == 2;

    private static GgmlType WithFallback(GgmlType type, long rowLength)
    {
        if (rowLength % GgmlTypeInfo.BlockSize(type) == 0) return type;
        var fallback = type switch
        {
            GgmlType.Q4_K => GgmlType.Q5_0,
            GgmlType.Q5_K => GgmlType.Q5_1,
            GgmlType.Q6_K => GgmlType.Q8_0,
            _ => GgmlType.F16,
        };
        return rowLength % GgmlTypeInfo.BlockSize(fallback) == 0 ? fallback : GgmlType.F16;
    }

    /// <summary>The block index of a <c>blk.N.*</c> tensor name.</summary>
    private static int LayerOf(string name)
    {
        const string prefix = "blk.";
        int end = name.IndexOf('.', prefix.Length);
        if (!name.StartsWith(prefix, StringComparison.Ordinal) || end < 0
            || !int.TryParse(name.AsSpan(prefix.Length, end - prefix.Length), NumberStyles.None, CultureInfo.InvariantCulture, out int layer))
            throw new ArgumentException($"tensor '{name}' is not inside a numbered block (blk.N.)");
        return layer;
    }
}
