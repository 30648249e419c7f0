using Velo.Formats;
using Velo.Kernels;
using Velo.Models.Blocks;

namespace Velo.Models.Gemma;

/// <summary>
/// Hyperparameters of a Gemma decoder (Gemma 1, 2 and 3), read from the GGUF metadata as llama.cpp reads them
/// (<c>llama_model::load_hparams</c>), with its defaults where a key is optional.
/// </summary>
internal sealed record GemmaConfig
{
    /// <summary>The <c>general.architecture</c> values this family runs.</summary>
    public static readonly IReadOnlyList<string> Architectures = ["gemma", "gemma2", "gemma3"];

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
    public required int RopeDims { get; init; }

    /// <summary>Rope base and position scale of the global layers (every layer of Gemma 1).</summary>
    public required float RopeBase { get; init; }
    public float RopePositionScale { get; init; } = 1;

    /// <summary>Rope base and position scale of the sliding-window layers (Gemma 3: 10000, unscaled; Gemma 2: the global ones).</summary>
    public required float RopeBaseSliding { get; init; }
    public float RopePositionScaleSliding { get; init; } = 1;

    /// <summary>Keys a sliding layer's query sees, its own included; 0 when no layer slides (Gemma 1).</summary>
    public required int SlidingWindow { get; init; }

    /// <summary>Layer l slides unless l % period == period − 1: Gemma 2 alternates (2), Gemma 3 has five local layers per global one (6).</summary>
    public required int SlidingPeriod { get; init; }

    /// <summary>What multiplies q·k (llama.cpp's f_attention_scale).</summary>
    public required float QueryScale { get; init; }

    /// <summary>Gemma 2's soft caps of attention scores and of the logits; 0: none.</summary>
    public required float AttentionSoftCap { get; init; }
    public required float FinalSoftCap { get; init; }

    /// <summary>Norms after attention and after the feed-forward network, before each residual add (Gemma 2 and 3).</summary>
    public bool PostNorms => Architecture is "gemma2" or "gemma3";

    /// <summary>Per-head RMSNorm of queries and keys (Gemma 3).</summary>
    public bool QkNorm => Architecture is "gemma3";

    public int QueryDim => Heads * HeadDim;
    public int KvDim => KvHeads * HeadDim;

    /// <summary>What sizes the forward-pass buffers and the KV memory.</summary>
    internal DecoderDimensions Dimensions => new(Layers, Dim, Heads, KvHeads, HeadDim, FfnDim, RopeDims, VocabSize);

    public bool IsSliding(int layer) => SlidingPeriod > 0 && layer % SlidingPeriod < SlidingPeriod - 1;

    /// <summary>Layer <paramref name="layer"/>'s attention: NeoX rope, the query scale, Gemma 2's cap and, on sliding layers, the window.</summary>
    public AttentionShape Attention(int layer) => new(Heads, KvHeads, HeadDim, NormEpsilon, RopeLayout.NeoX)
    {
        QueryScale = QueryScale,
        SoftCap = AttentionSoftCap,
        Window = IsSliding(layer) ? SlidingWindow : 0,
    };

    public ModelInfo ToInfo(GgufFile file) =>
        DecoderInfo.Create(Architecture, Dimensions, ContextLength, ContextLength, NormEpsilon, file,
        [
            DecoderInfo.Property("rope", $"base {RopeBase}{(RopePositionScale != 1 ? $", linear scale {RopePositionScale}" : "")}" +
                             $"{(SlidingPeriod > 0 ? $" (sliding layers: base {RopeBaseSliding})" : "")}, {RopeDims} dims, NeoX halves"),
            DecoderInfo.Property("sliding window", SlidingPeriod > 0
                ? $"{SlidingWindow} on {Enumerable.Range(0, Layers).Count(IsSliding)} of {Layers} layers (every layer l with l % {SlidingPeriod} < {SlidingPeriod - 1})"
                : "none"),
            DecoderInfo.Property("query scale", QueryScale),
            DecoderInfo.Property("soft caps", AttentionSoftCap > 0 || FinalSoftCap > 0 ? $"attention {AttentionSoftCap}, logits {FinalSoftCap}" : "none"),
        ]);

    public static GemmaConfig FromGguf(GgufFile file)
    {
        var m = file.Metadata;
        string arch = file.Architecture is { } a && Architectures.Contains(a)
            ? a
            : throw new ArgumentException($"{file.Path}: architecture '{file.Architecture}' is not of the Gemma family");

        var read = new HyperparameterReader(file, arch);
        int Int(string key, uint? defaultValue = null) => read.Int(key, defaultValue);

        float RequireFloat(string key) => read.RequireFloat(key);

        var (dim, heads, kvHeads, headDim) = read.AttentionShape();
        int layers = Int("block_count");

        int vocab = read.VocabularyFromEmbedding(dim);

        float ropeBase = m.GetFloat32($"{arch}.rope.freq_base", 10000f);
        float positionScale = 1;
        string? scalingType = m.GetString($"{arch}.rope.scaling.type");
        if (scalingType is "linear" && m.TryGetFloat32($"{arch}.rope.scaling.factor", out float factor) && factor > 0)
            positionScale = 1 / factor;
        else if (scalingType is not (null or "none" or "linear"))
            throw new NotSupportedException($"{file.Path}: rope scaling '{scalingType}' is not supported");

        // llama.cpp's f_attention_scale: 1/√head_dim, except for the 27B models (known by their layer count), whose
        // queries are scaled by 1/√(dim / heads) (gemma_pytorch's query_pre_attn_scalar); Gemma 1 always 1/√head_dim.
        bool is27B = (arch == "gemma2" && layers == 46) || (arch == "gemma3" && layers == 62);
        float queryScale = 1 / MathF.Sqrt(is27B ? dim / heads : headDim);

        var config = new GemmaConfig
        {
            Architecture = arch,
            Dim = dim,
            Layers = layers,
            Heads = heads,
            KvHeads = kvHeads,
            HeadDim = headDim,
            FfnDim = Int("feed_forward_length"),
            VocabSize = vocab,
            ContextLength = Int("context_length", 8192),
            NormEpsilon = RequireFloat("attention.layer_norm_rms_epsilon"),
            RopeDims = Int("rope.dimension_count", (uint)headDim),
            RopeBase = ropeBase,
            // Gemma 3's scaling (linear, 8 for 4B and larger) is of its global layers; the sliding ones keep 1.
            RopePositionScale = positionScale,
            RopePositionScaleSliding = arch == "gemma3" ? 1 : positionScale,
            RopeBaseSliding = arch switch
            {
                "gemma3" => m.GetFloat32($"{arch}.rope.freq_base_swa", 10000f),
                _ => m.GetFloat32($"{arch}.rope.freq_base_swa", ropeBase),
            },
            SlidingWindow = arch switch
            {
                "gemma2" => Int("attention.sliding_window", 4096),
                "gemma3" => Int("attention.sliding_window"),
                _ => 0,
            },
            SlidingPeriod = arch switch { "gemma2" => 2, "gemma3" => 6, _ => 0 },
            QueryScale = queryScale,
            AttentionSoftCap = arch == "gemma2" ? m.GetFloat32($"{arch}.attn_logit_softcapping", 50f) : 0,
            FinalSoftCap = arch == "gemma2" ? m.GetFloat32($"{arch}.final_logit_softcapping", 30f) : 0,
        };
        config.Validate(file);
        return config;
    }

    private void Validate(GgufFile file)
    {
        string path = file.Path;
        HyperparameterReader.CheckDecoder(file, Dimensions, ContextLength, this);
        if (!(NormEpsilon > 0) || !(RopeBase > 0) || !(RopeBaseSliding > 0))
            throw new GgufFormatException($"{path}: norm epsilon {NormEpsilon} and rope bases {RopeBase}, {RopeBaseSliding} must be positive");
        if (SlidingPeriod > 0 && SlidingWindow <= 0)
            throw new GgufFormatException($"{path}: sliding window {SlidingWindow} must be positive");
        // A cap of 0 would divide by zero in llama.cpp; here it must be positive where the architecture caps.
        if (Architecture == "gemma2" && !(AttentionSoftCap > 0 && FinalSoftCap > 0))
            throw new GgufFormatException($"{path}: soft caps {AttentionSoftCap} (attention) and {FinalSoftCap} (logits) must be positive");
    }
}
