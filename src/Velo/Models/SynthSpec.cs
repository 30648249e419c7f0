using Velo.Tensors;

namespace Velo.Models;

/// <summary>The shape and weight types of a random-weight model for <see cref="ModelSynthesizer"/>.</summary>
public sealed record SynthSpec
{
    public string Name { get; init; } = "synthetic";
    public string Architecture { get; init; } = "llama";
    public required int Dim { get; init; }
    public required int Layers { get; init; }
    public required int Heads { get; init; }
    public int KvHeads { get; init; }
    /// <summary>0 means Dim / Heads.</summary>
    public int HeadDim { get; init; }
    public required int FfnDim { get; init; }
    public required int VocabSize { get; init; }
    public int ContextLength { get; init; } = 2048;
    public float RopeBase { get; init; } = 10000;
    public float NormEpsilon { get; init; } = 1e-5f;
    public bool TiedEmbeddings { get; init; } = true;
    public bool QkvBias { get; init; }
    public bool QkNorm { get; init; }
    public bool RopeFrequencyFactors { get; init; }

    /// <summary>Keys a sliding-window layer attends to (Gemma 2 and 3).</summary>
    public int SlidingWindow { get; init; }

    /// <summary>A BERT's sequence-classification head (<c>cls</c>, rank pooling) with these labels; null for none.</summary>
    public IReadOnlyList<string>? ClassifierLabels { get; init; }

    /// <summary>Whether the head has llama.cpp's second layer, <c>cls.output</c>, after <c>cls</c> (dim → dim, tanh).</summary>
    public bool ClassifierOutput { get; init; }

    /// <summary>Gemma 2's soft caps of attention scores and of logits.</summary>
    public float AttentionSoftCap { get; init; }
    public float FinalSoftCap { get; init; }

    /// <summary>Head dimensions rope rotates; 0 means all of them (<see cref="EffectiveHeadDim"/>).</summary>
    public int RopeDims { get; init; }

    /// <summary>
    /// The context the model was first trained for, before long-context scaling (LongRoPE for <c>phi3</c>: its short
    /// and long rope factors and attention factor); 0 means none.
    /// </summary>
    public int OriginalContextLength { get; init; }

    /// <summary>Type of every matrix when <see cref="FileType"/> is null.</summary>
    public GgmlType WeightType { get; init; } = GgmlType.F32;

    /// <summary>
    /// A llama.cpp file type whose per-tensor mix (<see cref="QuantizationRecipe"/>) decides every tensor's type,
    /// as in published files; null means every matrix is <see cref="WeightType"/>.
    /// </summary>
    public ModelFileType? FileType { get; init; }

    /// <summary>Standard deviation of the normal weights.</summary>
    public float WeightStd { get; init; } = 0.02f;

    /// <summary>Norm weights are 1 + jitter × N(0, 1); published shapes use 1, tests use jitter to exercise them.</summary>
    public float NormJitter { get; init; }

    public ulong Seed { get; init; } = 1;

    public int EffectiveKvHeads => KvHeads > 0 ? KvHeads : Heads;
    public int EffectiveHeadDim => HeadDim > 0 ? HeadDim : Dim / Heads;
    public int EffectiveRopeDims => RopeDims > 0 ? RopeDims : EffectiveHeadDim;

    public GgmlType TypeOf(string tensorName, IReadOnlyList<long> shape)
    {
        if (FileType is { } fileType)
            return new QuantizationRecipe(fileType, Layers, hasOutputTensor: !TiedEmbeddings).TargetType(tensorName, shape) ?? GgmlType.F32;
        return shape.Count == 1 ? GgmlType.F32 : WeightType;
    }

    /// <summary>The llama.cpp file type (<c>llama_ftype</c>) the file declares in <c>general.file_type</c>.</summary>
    public uint DeclaredFileType => FileType is { } fileType ? (uint)fileType : WeightType switch
    {
        GgmlType.F32 => 0,
        GgmlType.F16 => 1,
        GgmlType.Q4_0 => 2,
        GgmlType.Q4_1 => 3,
        GgmlType.Q8_0 => 7,
        GgmlType.Q5_0 => 8,
        GgmlType.Q5_1 => 9,
        GgmlType.Q2_K => 10,
        GgmlType.Q3_K => 12,
        GgmlType.Q4_K => 15,
        GgmlType.Q5_K => 17,
        GgmlType.Q6_K => 18,
        GgmlType.BF16 => 32,
        _ => throw new NotSupportedException($"no llama.cpp file type for weights of {WeightType}"),
    };

    /// <summary>The tiny-110M shape of PEERS.md (llama2.c's 110M TinyStories model).</summary>
    public static SynthSpec Tiny110M(ModelFileType type) => new()
    {
        Name = "tiny-110M", Dim = 768, Layers = 12, Heads = 12, FfnDim = 2048, VocabSize = 32000, ContextLength = 1024,
        FileType = type,
    };

    /// <summary>The Llama-3.2-1B shape of PEERS.md.</summary>
    public static SynthSpec Llama1B(ModelFileType type) => new()
    {
        Name = "llama-1B", Dim = 2048, Layers = 16, Heads = 32, KvHeads = 8, FfnDim = 8192, VocabSize = 128256,
        ContextLength = 131072, RopeBase = 500000, FileType = type,
    };

    /// <summary>
    /// Gemma 2 2B's proportions at a size that generates in seconds: head dim wider than dim / heads, 4× feed-forward,
    /// grouped-query attention, a sliding window on every other layer and its soft caps (50 and 30).
    /// </summary>
    public static SynthSpec Gemma2Tiny(ModelFileType type) => new()
    {
        Name = "gemma2-tiny", Architecture = "gemma2", Dim = 256, Layers = 4, Heads = 4, KvHeads = 2, HeadDim = 128, FfnDim = 1024,
        VocabSize = 32000, ContextLength = 2048, NormEpsilon = 1e-6f, SlidingWindow = 64, AttentionSoftCap = 50, FinalSoftCap = 30,
        FileType = type,
    };

    /// <summary>Gemma 3 1B's proportions, small: one KV head, Q/K norms, five sliding layers per global one, global rope base 10^6.</summary>
    public static SynthSpec Gemma3Tiny(ModelFileType type) => new()
    {
        Name = "gemma3-tiny", Architecture = "gemma3", Dim = 256, Layers = 6, Heads = 4, KvHeads = 1, HeadDim = 128, FfnDim = 1024,
        VocabSize = 32000, ContextLength = 2048, NormEpsilon = 1e-6f, RopeBase = 1000000, SlidingWindow = 64, FileType = type,
    };

    /// <summary>
    /// Phi-3-mini-128k's proportions at a quarter of its width (heads of 64 rather than 96) and a quarter of its depth:
    /// feed-forward 8/3 of the width, untied output, its 32064-token vocabulary and LongRoPE from 4096 to 131072 tokens.
    /// </summary>
    public static SynthSpec Phi3Tiny(ModelFileType type) => new()
    {
        Name = "phi3-tiny", Architecture = "phi3", Dim = 768, Layers = 8, Heads = 12, FfnDim = 2048, VocabSize = 32064,
        ContextLength = 131072, OriginalContextLength = 4096, TiedEmbeddings = false, FileType = type,
    };

    /// <summary>The named shapes <c>velo synth --shape</c> offers.</summary>
    public static SynthSpec ForShape(string shape, ModelFileType type) => shape.ToLowerInvariant() switch
    {
        "tiny-110m" => Tiny110M(type),
        "llama-1b" => Llama1B(type),
        "gemma2-tiny" => Gemma2Tiny(type),
        "gemma3-tiny" => Gemma3Tiny(type),
        "phi3-tiny" => Phi3Tiny(type),
        _ => throw new ArgumentException($"unknown shape '{shape}'; expected one of {string.Join(", ", ShapeNames)}"),
    };

    public static IReadOnlyList<string> ShapeNames { get; } = ["tiny-110M", "llama-1B", "gemma2-tiny", "gemma3-tiny", "phi3-tiny"];
}
