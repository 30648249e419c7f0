using Velo.Formats;
using Velo.Kernels;

namespace Velo.Models;

/// <summary>Hyperparameters of a Llama-family decoder, read from the GGUF metadata under the architecture's prefix.</summary>
public sealed record LlamaConfig
{
    public static readonly IReadOnlySet<string> SupportedArchitectures = new HashSet<string> { "llama", "mistral", "qwen2", "qwen3" };

    public required string Architecture { get; init; }
    public required int Dim { get; init; }
    public required int Layers { get; init; }
    public required int Heads { get; init; }
    public required int KvHeads { get; init; }
    public required int HeadDim { get; init; }
    public required int FfnDim { get; init; }
    public required int VocabSize { get; init; }
    public required int ContextLength { get; init; }
    public required float NormEpsilon { get; init; }
    public required float RopeBase { get; init; }

    /// <summary>Linear rope scaling: positions are multiplied by this (1 / scaling factor).</summary>
    public float RopeFrequencyScale { get; init; } = 1;

    public required int RopeDims { get; init; }
    public required RopeLayout RopeLayout { get; init; }

    public int QueryDim => Heads * HeadDim;
    public int KvDim => KvHeads * HeadDim;

    public static LlamaConfig FromGguf(GgufFile file)
    {
        var m = file.Metadata;
        string arch = file.Architecture ?? throw new GgufFormatException($"{file.Path}: general.architecture is missing");
        if (!SupportedArchitectures.Contains(arch))
            throw new NotSupportedException($"{file.Path}: architecture '{arch}' is not supported (supported: {string.Join(", ", SupportedArchitectures)})");

        int Required(string key) => checked((int)m.RequireUInt32($"{arch}.{key}"));
        int dim = Required("embedding_length");
        int heads = Required("attention.head_count");
        int kvHeads = (int)m.GetUInt32($"{arch}.attention.head_count_kv", (uint)heads);
        if (heads <= 0 || kvHeads <= 0 || heads % kvHeads != 0)
            throw new GgufFormatException($"{file.Path}: {heads} attention heads cannot be shared by {kvHeads} KV heads");
        int headDim = (int)m.GetUInt32($"{arch}.attention.key_length", (uint)(dim / heads));
        int valueDim = (int)m.GetUInt32($"{arch}.attention.value_length", (uint)headDim);
        if (valueDim != headDim)
            throw new NotSupportedException($"{file.Path}: key length {headDim} differs from value length {valueDim}");

        var embedding = file.RequireTensor("token_embd.weight");
        int vocab = checked((int)embedding.Shape[^1]);

        float ropeScale = 1;
        string? scalingType = m.GetString($"{arch}.rope.scaling.type");
        if (scalingType is "linear" && m.TryGetFloat32($"{arch}.rope.scaling.factor", out float factor) && factor > 0)
            ropeScale = 1 / factor;
        else if (scalingType is not (null or "none" or "linear"))
            throw new NotSupportedException($"{file.Path}: rope scaling '{scalingType}' is not supported");

        var config = new LlamaConfig
        {
            Architecture = arch,
            Dim = dim,
            Layers = Required("block_count"),
            Heads = heads,
            KvHeads = kvHeads,
            HeadDim = headDim,
            FfnDim = Required("feed_forward_length"),
            VocabSize = vocab,
            ContextLength = (int)m.GetUInt32($"{arch}.context_length", 2048),
            NormEpsilon = m.GetFloat32($"{arch}.attention.layer_norm_rms_epsilon", 1e-5f),
            RopeBase = m.GetFloat32($"{arch}.rope.freq_base", 10000f),
            RopeFrequencyScale = ropeScale,
            RopeDims = (int)m.GetUInt32($"{arch}.rope.dimension_count", (uint)headDim),
            RopeLayout = arch is "qwen2" or "qwen3" ? RopeLayout.NeoX : RopeLayout.Interleaved,
        };
        config.Validate(file.Path);
        return config;
    }

    private void Validate(string path)
    {
        if (Dim <= 0 || Layers <= 0 || FfnDim <= 0 || HeadDim <= 0 || ContextLength <= 0 || VocabSize <= 0)
            throw new GgufFormatException($"{path}: model hyperparameters are not all positive: {this}");
        if (HeadDim % 2 != 0 || RopeDims % 2 != 0 || RopeDims > HeadDim)
            throw new GgufFormatException($"{path}: rope over {RopeDims} of {HeadDim} head dimensions is not possible");
        if (!(NormEpsilon > 0) || !(RopeBase > 0))
            throw new GgufFormatException($"{path}: norm epsilon {NormEpsilon} and rope base {RopeBase} must be positive");
    }
}
