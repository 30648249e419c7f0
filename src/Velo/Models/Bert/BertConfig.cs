using Velo.Models.Blocks;
using System.Globalization;
using Velo.Formats;

namespace Velo.Models.Bert;

/// <summary>Hyperparameters of a BERT encoder, read from the GGUF metadata under <c>bert.</c> as llama.cpp reads them.</summary>
internal sealed record BertConfig
{
    public const string Architecture = "bert";

    /// <summary>llama.cpp's key for a classifier's label names (<c>LLM_KV_CLASSIFIER_OUTPUT_LABELS</c>).</summary>
    public const string LabelsKey = Architecture + ".classifier.output_labels";

    public required int Dim { get; init; }
    public required int Layers { get; init; }
    public required int Heads { get; init; }
    public required int FfnDim { get; init; }
    public required int VocabSize { get; init; }

    /// <summary>Positions the position table holds: the longest input.</summary>
    public required int ContextLength { get; init; }

    public required int TokenTypes { get; init; }
    public required float NormEpsilon { get; init; }
    public required EmbeddingPooling Pooling { get; init; }

    /// <summary>Whether pooled embeddings are scaled to unit length (sentence-transformers' Normalize module);
    /// Velo's key <c>bert.normalize_embeddings</c>, absent from llama.cpp's files, where it defaults to true as
    /// llama.cpp's embedding tools normalize by default.</summary>
    public required bool Normalize { get; init; }

    /// <summary>The length inputs are truncated to (sentence-transformers' <c>max_seq_length</c>), at most <see cref="ContextLength"/>.</summary>
    public required int MaxSequenceLength { get; init; }

    /// <summary>The names of the classification head's scores (llama.cpp's labels, else LABEL_0…); empty without a head.</summary>
    public IReadOnlyList<string> Labels { get; init; } = [];

    /// <summary>Rows of <c>cls.weight</c>: the head's first layer (tanh after it); 0 without a head.</summary>
    public int ClassifierWidth { get; init; }

    /// <summary>Whether the head has its second layer, <c>cls.output</c>.</summary>
    public bool HasClassifierOutput { get; init; }

    /// <summary>Floats per output row: one score per label with rank pooling, else the embedding.</summary>
    public int OutputWidth => Pooling == EmbeddingPooling.Rank ? Labels.Count : Dim;

    public int HeadDim => Dim / Heads;

    /// <summary>Every token attends to every token of its input, q·k scaled by 1/√headDim.</summary>
    public float AttentionScale => 1 / MathF.Sqrt(HeadDim);

    public ModelInfo ToInfo() => new()
    {
        Architecture = Architecture,
        VocabSize = VocabSize,
        ContextLength = ContextLength,
        EmbeddingLength = OutputWidth,
        Labels = Pooling == EmbeddingPooling.Rank ? Labels : [],
        Layers = Enumerable.Repeat(new KvLayerShape(Heads, HeadDim), Layers).ToArray(),
        Output = ModelOutput.Embeddings,
        MaxInputTokens = MaxSequenceLength,
        Properties =
        [
            DecoderInfo.Property("embedding dim", Dim),
            DecoderInfo.Property("layers", Layers),
            DecoderInfo.Property("attention heads", $"{Heads}, bidirectional"),
            DecoderInfo.Property("feed-forward dim", $"{FfnDim} (GELU)"),
            DecoderInfo.Property("vocabulary", VocabSize),
            DecoderInfo.Property("positions", $"{ContextLength} (inputs truncated to {MaxSequenceLength})"),
            DecoderInfo.Property("LayerNorm epsilon", NormEpsilon),
            DecoderInfo.Property("pooling", Pooling == EmbeddingPooling.Rank
                ? $"rank ({(HasClassifierOutput ? "two-layer" : "one-layer")} classification head: {string.Join(", ", Labels)})"
                : $"{Pooling.ToString().ToLowerInvariant()}{(Normalize ? ", L2-normalized" : "")}"),
        ],
    };

    public static BertConfig FromGguf(GgufFile file)
    {
        var m = file.Metadata;
        if (file.Architecture != Architecture)
            throw new ArgumentException($"{file.Path}: architecture '{file.Architecture}' is not {Architecture}");

        int Int(string key, uint? defaultValue = null)
        {
            string fullKey = key.StartsWith("tokenizer.", StringComparison.Ordinal) ? key : $"{Architecture}.{key}";
            uint value = defaultValue is { } d ? m.GetUInt32(fullKey, d) : m.RequireUInt32(fullKey);
            return value <= int.MaxValue
                ? (int)value
                : throw new GgufFormatException($"{file.Path}: metadata '{fullKey}' = {value} is too large (at most {int.MaxValue})");
        }

        int dim = Int("embedding_length");
        int heads = Int("attention.head_count");
        if (heads <= 0 || dim % heads != 0)
            throw new GgufFormatException($"{file.Path}: embedding length {dim} cannot be split into {heads} heads");
        if (m.TryGetBool($"{Architecture}.attention.causal", out bool causal) && causal)
            throw new NotSupportedException($"{file.Path}: a causal BERT is not supported");
        var embedding = file.RequireTensor("token_embd.weight");
        if (embedding.Shape.Count != 2 || embedding.Shape[0] != dim || embedding.Shape[1] > int.MaxValue)
            throw new GgufFormatException(
                $"{file.Path}: tensor 'token_embd.weight' has shape [{string.Join(", ", embedding.Shape)}], expected [{dim} (embedding_length), vocabulary size of at most {int.MaxValue}]");
        int pooling = Int("pooling_type", (uint)EmbeddingPooling.Mean);
        if (pooling is < (int)EmbeddingPooling.None or > (int)EmbeddingPooling.Rank)
            throw new NotSupportedException($"{file.Path}: bert.pooling_type {pooling} is not supported (0 none, 1 mean, 2 cls, 3 last, 4 rank)");
        var (labels, classifierWidth, classifierOutput) = pooling == (int)EmbeddingPooling.Rank || file.FindTensor("cls.weight") != null
            ? ReadClassifier(file, dim) : ([], 0, false);
        int context = Int("context_length");
        var config = new BertConfig
        {
            Dim = dim,
            Layers = Int("block_count"),
            Heads = heads,
            FfnDim = Int("feed_forward_length"),
            VocabSize = (int)embedding.Shape[1],
            ContextLength = context,
            TokenTypes = Int("tokenizer.ggml.token_type_count", 2),
            NormEpsilon = m.TryGetFloat32($"{Architecture}.attention.layer_norm_epsilon", out float eps) ? eps
                : throw new GgufFormatException($"{file.Path}: required metadata key '{Architecture}.attention.layer_norm_epsilon' is missing"),
            Pooling = (EmbeddingPooling)pooling,
            Normalize = !m.TryGetBool($"{Architecture}.normalize_embeddings", out bool normalize) || normalize,
            MaxSequenceLength = Math.Min(context, Int("max_sequence_length", (uint)Math.Max(context, 0))),
            Labels = labels,
            ClassifierWidth = classifierWidth,
            HasClassifierOutput = classifierOutput,
        };
        config.Validate(file);
        return config;
    }

    /// <summary>
    /// The classification head rank pooling needs, as llama.cpp lays it out: <c>cls.weight</c> [dim → width] with its
    /// bias and a tanh, then optionally <c>cls.output.weight</c> [width → labels] with its bias. The scores' count is the
    /// last layer's rows; the labels' names come from <see cref="LabelsKey"/> when the file has them.
    /// </summary>
    private static (string[] Labels, int Width, bool HasOutput) ReadClassifier(GgufFile file, int dim)
    {
        int Rows(string name, long inputs)
        {
            var t = file.FindTensor(name) ?? throw new GgufFormatException($"{file.Path}: bert.pooling_type 4 (rank) needs the classification head's tensor '{name}'");
            if (t.Shape.Count != 2 || t.Shape[0] != inputs || t.Shape[1] < 1 || t.Shape[1] > 1 << 20)
                throw new GgufFormatException($"{file.Path}: tensor '{name}' has shape [{string.Join(", ", t.Shape)}], expected [{inputs}, 1 to {1 << 20} outputs]");
            return (int)t.Shape[1];
        }

        int width = Rows("cls.weight", dim);
        bool hasOutput = file.FindTensor("cls.output.weight") != null;
        int count = hasOutput ? Rows("cls.output.weight", width) : width;
        string[] labels = file.Metadata.GetStringArray(LabelsKey) ?? Enumerable.Range(0, count).Select(i => $"LABEL_{i}").ToArray();
        if (labels.Length != count)
            throw new GgufFormatException($"{file.Path}: '{LabelsKey}' names {labels.Length} labels but the classification head has {count} outputs");
        return (labels, width, hasOutput);
    }

    /// <summary>This config with the caller's pooling and normalisation in place of the file's.</summary>
    /// <exception cref="NotSupportedException">Rank pooling asked of a model without a classification head.</exception>
    public BertConfig WithPooling(EmbeddingPooling? pooling, bool? normalize)
    {
        var chosen = pooling ?? Pooling;
        if (!Enum.IsDefined(chosen)) throw new ArgumentOutOfRangeException(nameof(pooling), chosen, "unknown pooling");
        if (chosen == EmbeddingPooling.Rank && Labels.Count == 0)
            throw new NotSupportedException("rank pooling needs a classification head (cls.weight), which this model lacks");
        return this with { Pooling = chosen, Normalize = normalize ?? Normalize };
    }

    private void Validate(GgufFile file)
    {
        if (Dim <= 0 || Layers <= 0 || FfnDim <= 0 || ContextLength <= 0 || VocabSize <= 0 || TokenTypes <= 0 || MaxSequenceLength <= 0)
            throw new GgufFormatException($"{file.Path}: model hyperparameters are not all positive: {this}");
        if (Layers > file.Tensors.Count)
            throw new GgufFormatException($"{file.Path}: block_count {Layers} is impossible for a file of {file.Tensors.Count} tensors");
        if (!(NormEpsilon > 0))
            throw new GgufFormatException($"{file.Path}: LayerNorm epsilon {NormEpsilon} must be positive");
    }
}
