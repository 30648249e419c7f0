using Velo.Tensors;

namespace Velo.Models;

/// <summary>The shape and weight types of a random-weight Llama-family model for <see cref="LlamaSynthesizer"/>.</summary>
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

    /// <summary>Type of the 2-D weights (except where <see cref="TypeOf"/> says otherwise).</summary>
    public GgmlType WeightType { get; init; } = GgmlType.F32;

    /// <summary>Type of the token embedding; null means the same as the weights.</summary>
    public GgmlType? EmbeddingType { get; init; }

    /// <summary>Standard deviation of the normal weights.</summary>
    public float WeightStd { get; init; } = 0.02f;

    /// <summary>Norm weights are 1 + jitter × N(0, 1); published shapes use 1, tests use jitter to exercise them.</summary>
    public float NormJitter { get; init; }

    public ulong Seed { get; init; } = 1;

    public int EffectiveKvHeads => KvHeads > 0 ? KvHeads : Heads;
    public int EffectiveHeadDim => HeadDim > 0 ? HeadDim : Dim / Heads;

    public GgmlType TypeOf(string tensorName, int rank) =>
        rank == 1 ? GgmlType.F32
        : tensorName == "token_embd.weight" ? EmbeddingType ?? WeightType
        : WeightType;

    /// <summary>The tiny-110M shape of PEERS.md (llama2.c's 110M TinyStories model).</summary>
    public static SynthSpec Tiny110M(GgmlType type) => new()
    {
        Name = "tiny-110M", Dim = 768, Layers = 12, Heads = 12, FfnDim = 2048, VocabSize = 32000, ContextLength = 1024,
        WeightType = type, EmbeddingType = Q4Embedding(type),
    };

    /// <summary>The Llama-3.2-1B shape of PEERS.md.</summary>
    public static SynthSpec Llama1B(GgmlType type) => new()
    {
        Name = "llama-1B", Dim = 2048, Layers = 16, Heads = 32, KvHeads = 8, FfnDim = 8192, VocabSize = 128256,
        ContextLength = 131072, RopeBase = 500000, WeightType = type, EmbeddingType = Q4Embedding(type),
    };

    // Published Q4 files keep the (tied) embedding in Q6_K, since it is also the output classifier.
    private static GgmlType? Q4Embedding(GgmlType type) =>
        type is GgmlType.Q4_0 or GgmlType.Q4_1 or GgmlType.Q4_K or GgmlType.Q5_K ? GgmlType.Q6_K : null;
}
