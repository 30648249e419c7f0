using Velo.Formats;
using Velo.Kernels;
using Velo.Models.Blocks;

namespace Velo.Models.Phi3;

/// <summary>Hyperparameters of a Phi-3 decoder, read from the GGUF metadata under <c>phi3.</c> as llama.cpp reads them.</summary>
internal sealed record Phi3Config
{
    public const string Architecture = "phi3";

    public required int Dim { get; init; }
    public required int Layers { get; init; }
    public required int Heads { get; init; }
    public required int KvHeads { get; init; }
    public required int HeadDim { get; init; }
    public required int FfnDim { get; init; }
    public required int VocabSize { get; init; }
    public required int ContextLength { get; init; }

    /// <summary>
    /// The context of the first training run (<c>rope.scaling.original_context_length</c>): a state holding more
    /// positions per sequence rotates with LongRoPE's long factors, any other with the short ones.
    /// </summary>
    public required int OriginalContextLength { get; init; }

    public required float NormEpsilon { get; init; }
    public required float RopeBase { get; init; }
    public required int RopeDims { get; init; }

    /// <summary>Linear rope scaling: positions are multiplied by this (1 / scaling factor).</summary>
    public float RopeFrequencyScale { get; init; } = 1;

    /// <summary>
    /// LongRoPE's attention factor (<c>rope.scaling.attn_factor</c>, √(1 + ln(s) / ln(original context)) for a
    /// context grown s times, as the converter writes it): the magnitude of rope's cos and sin.
    /// </summary>
    public float RopeAttentionFactor { get; init; } = 1;

    /// <summary>
    /// The window the file declares (<c>attention.sliding_window</c>), 0 if none. llama.cpp runs Phi-3 with full
    /// attention whatever it says (its converter fills it from config.json, where it does not describe how the
    /// model attends: see llama.cpp PR 13676), and so does Velo, so that both compute the same logits.
    /// </summary>
    public int DeclaredSlidingWindow { get; init; }

    public int QueryDim => Heads * HeadDim;
    public int KvDim => KvHeads * HeadDim;

    /// <summary>What sizes the forward-pass buffers and the KV memory.</summary>
    internal DecoderDimensions Dimensions => new(Layers, Dim, Heads, KvHeads, HeadDim, FfnDim, RopeDims, VocabSize);

    public AttentionShape Attention => new(Heads, KvHeads, HeadDim, NormEpsilon, RopeLayout.NeoX);

    /// <summary>Whether a state of <paramref name="contextLength"/> positions per sequence rotates with the long factors (llama.cpp's <c>get_rope_factors</c>).</summary>
    public bool UsesLongRopeFactors(int contextLength) => contextLength > OriginalContextLength;

    public ModelInfo ToInfo(GgufFile file) =>
        DecoderInfo.Create(Architecture, Dimensions, ContextLength, $"{ContextLength} (original {OriginalContextLength})", NormEpsilon, file,
        [
            DecoderInfo.Property("rope", $"base {RopeBase}, {RopeDims} dims, NeoX halves" +
                             $"{(RopeFrequencyScale != 1 ? $", linear scale {RopeFrequencyScale}" : "")}" +
                             $"{(file.FindTensor("rope_factors_long.weight") != null ? $", LongRoPE factors (long beyond {OriginalContextLength} tokens)" : "")}" +
                             $"{(RopeAttentionFactor != 1 ? $", attention factor {RopeAttentionFactor}" : "")}"),
            DecoderInfo.Property("attention", $"fused QKV{(DeclaredSlidingWindow > 0 ? $", sliding window {DeclaredSlidingWindow} declared but not applied (as llama.cpp)" : "")}"),
        ]);

    public static Phi3Config FromGguf(GgufFile file)
    {
        var m = file.Metadata;
        if (file.Architecture != Architecture)
            throw new ArgumentException($"{file.Path}: architecture '{file.Architecture}' is not {Architecture}");

        var read = new HyperparameterReader(file, Architecture);
        int Int(string key, uint? defaultValue = null) => read.Int(key, defaultValue);

        float RequireFloat(string key) => read.RequireFloat(key);

        var (dim, heads, kvHeads, headDim) = read.AttentionShape();

        int vocab = read.VocabularyFromEmbedding(dim);

        // The converter writes no scaling type for LongRoPE: llama.cpp then takes "linear" with a factor of 1.
        float ropeScale = 1;
        string? scalingType = m.GetString($"{Architecture}.rope.scaling.type");
        if (scalingType is null or "linear" or "longrope" && m.TryGetFloat32($"{Architecture}.rope.scaling.factor", out float factor) && factor > 0)
            ropeScale = 1 / factor;
        else if (scalingType is not (null or "none" or "linear" or "longrope"))
            throw new NotSupportedException($"{file.Path}: rope scaling '{scalingType}' is not supported for {Architecture}");

        int context = Int("context_length");
        var config = new Phi3Config
        {
            Dim = dim,
            Layers = Int("block_count"),
            Heads = heads,
            KvHeads = kvHeads,
            HeadDim = headDim,
            FfnDim = Int("feed_forward_length"),
            VocabSize = vocab,
            ContextLength = context,
            OriginalContextLength = Int("rope.scaling.original_context_length", (uint)context),
            NormEpsilon = RequireFloat("attention.layer_norm_rms_epsilon"),
            RopeBase = m.GetFloat32($"{Architecture}.rope.freq_base", 10000f),
            RopeDims = Int("rope.dimension_count", (uint)headDim),
            RopeFrequencyScale = ropeScale,
            RopeAttentionFactor = m.GetFloat32($"{Architecture}.rope.scaling.attn_factor", 1f),
            DeclaredSlidingWindow = Int("attention.sliding_window", 0),
        };
        config.Validate(file);
        return config;
    }

    private void Validate(GgufFile file)
    {
        string path = file.Path;
        HyperparameterReader.CheckDecoder(file, Dimensions, ContextLength, this);
        if (OriginalContextLength <= 0)
            throw new GgufFormatException($"{path}: the original context length {OriginalContextLength} must be positive");
        // The fused QKV's rows (QueryDim + 2 KvDim) and gate-up's are int products the forward pass relies on too.
        if ((long)(Heads + 2L * KvHeads) * HeadDim > int.MaxValue || 2L * FfnDim > int.MaxValue)
            throw new GgufFormatException($"{path}: {Heads} heads of {HeadDim} dimensions, or a feed-forward of {FfnDim}, are too many (at most {int.MaxValue} rows in all)");
        if (!(NormEpsilon > 0) || !(RopeBase > 0) || !(RopeAttentionFactor > 0) || !float.IsFinite(RopeAttentionFactor))
            throw new GgufFormatException($"{path}: norm epsilon {NormEpsilon}, rope base {RopeBase} and rope attention factor {RopeAttentionFactor} must be positive");
    }
}
