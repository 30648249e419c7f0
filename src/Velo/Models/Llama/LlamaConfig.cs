using Velo.Formats;
using Velo.Kernels;
using Velo.Models.Blocks;

namespace Velo.Models.Llama;

/// <summary>Hyperparameters of a Llama-family decoder, read from the GGUF metadata under the architecture's prefix.</summary>
internal sealed record LlamaConfig
{
    /// <summary>The <c>general.architecture</c> values this family runs.</summary>
    public static readonly IReadOnlyList<string> Architectures = ["llama", "mistral", "qwen2", "qwen3"];

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

    /// <summary>What sizes the forward-pass buffers and the KV memory.</summary>
    internal DecoderDimensions Dimensions => new(Layers, Dim, Heads, KvHeads, HeadDim, FfnDim, RopeDims, VocabSize);

    public AttentionShape Attention => new(Heads, KvHeads, HeadDim, NormEpsilon, RopeLayout);

    /// <summary>What the engine needs to know, and <c>velo info</c> shows, in architecture-neutral terms.</summary>
    public ModelInfo ToInfo(GgufFile file) =>
        DecoderInfo.Create(Architecture, Dimensions, ContextLength, ContextLength, NormEpsilon, file,
        [
            DecoderInfo.Property("rope", $"base {RopeBase}, {RopeDims} dims, {(RopeLayout == RopeLayout.NeoX ? "NeoX halves" : "adjacent pairs")}" +
                             $"{(RopeFrequencyScale != 1 ? $", linear scale {RopeFrequencyScale}" : "")}{(file.FindTensor("rope_freqs.weight") != null ? ", frequency factors" : "")}"),
        ]);

    public static LlamaConfig FromGguf(GgufFile file)
    {
        var m = file.Metadata;
        string arch = file.Architecture is { } a && Architectures.Contains(a)
            ? a
            : throw new ArgumentException($"{file.Path}: architecture '{file.Architecture}' is not of the Llama family");

        var read = new HyperparameterReader(file, arch);
        int Int(string key, uint? defaultValue = null) => read.Int(key, defaultValue);

        var (dim, heads, kvHeads, headDim) = read.AttentionShape();

        int vocab = read.VocabularyFromEmbedding(dim);

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
            Layers = Int("block_count"),
            Heads = heads,
            KvHeads = kvHeads,
            HeadDim = headDim,
            FfnDim = Int("feed_forward_length"),
            VocabSize = vocab,
            ContextLength = Int("context_length", 2048),
            NormEpsilon = m.GetFloat32($"{arch}.attention.layer_norm_rms_epsilon", 1e-5f),
            RopeBase = m.GetFloat32($"{arch}.rope.freq_base", 10000f),
            RopeFrequencyScale = ropeScale,
            RopeDims = Int("rope.dimension_count", (uint)headDim),
            RopeLayout = arch is "qwen2" or "qwen3" ? RopeLayout.NeoX : RopeLayout.Interleaved,
        };
        config.Validate(file);
        return config;
    }

    private void Validate(GgufFile file)
    {
        string path = file.Path;
        HyperparameterReader.CheckDecoder(file, Dimensions, ContextLength, this);
        if (!(NormEpsilon > 0) || !(RopeBase > 0))
            throw new GgufFormatException($"{path}: norm epsilon {NormEpsilon} and rope base {RopeBase} must be positive");
    }
}
