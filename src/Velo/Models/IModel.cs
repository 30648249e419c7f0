using Velo.Formats;
using Velo.Runtime;
using Velo.Threading;

namespace Velo.Models;

/// <summary>
/// A loaded model of any architecture family: what the engine (generation, perplexity, benchmarks, the server) needs
/// of it. A family implements it in its own folder and registers in <see cref="ModelRegistry"/>.
/// </summary>
public interface IModel : IDisposable
{
    /// <summary>Its hyperparameters, as far as anything outside the family needs them.</summary>
    ModelInfo Info { get; }

    /// <summary>The file it was loaded from: metadata (tokenizer, chat template) and tensors stay there, mapped.</summary>
    GgufFile File { get; }

    /// <summary>The bytes of tensor data a forward pass reads, all of which becomes resident as it runs.</summary>
    long WeightBytes { get; }

    /// <summary>The weights copied at load, into the layouts the kernels read (Q4_0 and Q8_0 matrices) or as they are, and the time it took.</summary>
    WeightRepack Repack => default;

    /// <summary>
    /// Allocates what forward passes write: activations for batches of up to <paramref name="maxBatch"/> tokens, a KV
    /// cache of <paramref name="contextLength"/> positions (0: the trained context) for each of
    /// <paramref name="sequences"/> sequences, and <paramref name="maxLogitRows"/> output rows (0: one per sequence).
    /// Threads come from <paramref name="pool"/>, or a single thread when null.
    /// </summary>
    IModelState CreateState(int contextLength = 0, int maxBatch = 512, int sequences = 1, int maxLogitRows = 0, WorkerPool? pool = null,
        KvCacheTypes cacheTypes = default);

    /// <summary>
    /// The bytes of activations and output rows a state with these limits allocates besides its KV cache, so a caller
    /// can weigh them against free memory before allocating them.
    /// </summary>
    /// <exception cref="OverflowException">The size does not fit in 63 bits.</exception>
    long ScratchBytes(int maxBatch, int maxLogitRows);

    /// <summary>
    /// Runs the batch: appends its keys and values to the state's KV cache and writes one output row (see
    /// <see cref="ModelInfo.Output"/>) for each token that asked for one, in batch order, to <see cref="IModelState.Output"/>.
    /// </summary>
    void Forward(IModelState state, ForwardBatch batch);
}

/// <summary>
/// A decoder that runs a range of its blocks (<see cref="ModelRegistry.LoadLayers"/>): one stage of a pipeline split
/// across processes. Its KV memory holds only its blocks. A range that does not start at block 0 takes its input
/// from <see cref="Hidden"/> instead of token embeddings (the batch's positions, sequences and logits flags still
/// drive attention and the memory); one that does not end at the last block leaves its output there instead of
/// writing output rows.
/// </summary>
public interface ILayerRangeModel : IModel
{
    LayerRange Layers { get; }

    /// <summary>The residual stream of <paramref name="state"/>: a row of <see cref="ModelInfo.EmbeddingLength"/> floats
    /// for each of the batch's first <paramref name="tokens"/> tokens, in batch order.</summary>
    Span<float> Hidden(IModelState state, int tokens);
}

/// <summary>Everything a model's forward passes write: activations, the KV cache and the output rows, allocated once.</summary>
public interface IModelState : IDisposable
{
    /// <summary>The most tokens one forward pass may hold.</summary>
    int MaxBatch { get; }

    /// <summary>The most tokens of one forward pass that may ask for an output row.</summary>
    int MaxLogitRows { get; }

    KvCache Cache { get; }

    /// <summary>The bytes of activations and output rows this state allocated (its KV cache aside).</summary>
    long ScratchBytes { get; }

    /// <summary>The output row (logits or an embedding, <see cref="ModelInfo.Output"/>) of the <paramref name="row"/>-th
    /// token that asked for one in the last forward pass.</summary>
    ReadOnlySpan<float> Output(int row);
}

/// <summary>What a model's output rows hold.</summary>
public enum ModelOutput
{
    /// <summary>A score per vocabulary entry for the next token (a decoder).</summary>
    Logits,

    /// <summary>A vector of <see cref="ModelInfo.EmbeddingLength"/> floats for the input (an encoder).</summary>
    Embeddings,
}

/// <summary>The keys and values one layer caches per token: <see cref="KvHeads"/> heads of <see cref="HeadDim"/> each.</summary>
public readonly record struct KvLayerShape(int KvHeads, int HeadDim)
{
    public int KvDim => KvHeads * HeadDim;
}

/// <summary>A model's hyperparameters in terms every architecture shares.</summary>
public sealed record ModelInfo
{
    /// <summary><c>general.architecture</c>, for example <c>llama</c> or <c>qwen3</c>.</summary>
    public required string Architecture { get; init; }

    public required int VocabSize { get; init; }

    /// <summary>The context length the model was trained for.</summary>
    public required int ContextLength { get; init; }

    /// <summary>The most a context defaults to when the caller names none: a model trained for 128k tokens would
    /// otherwise reserve gigabytes of KV memory per sequence by default.</summary>
    public const int DefaultContextCap = 4096;

    /// <summary>The context to allocate: <paramref name="requested"/> when positive, else the model's own capped at
    /// <see cref="DefaultContextCap"/>.</summary>
    public int ContextFor(int requested) => requested > 0 ? requested : Math.Min(ContextLength, DefaultContextCap);

    /// <summary>The width of the residual stream.</summary>
    public required int EmbeddingLength { get; init; }

    /// <summary>Per layer, what its KV cache holds per token: layers may differ (sliding-window layers, per-layer head counts).</summary>
    public required IReadOnlyList<KvLayerShape> Layers { get; init; }

    public ModelOutput Output { get; init; } = ModelOutput.Logits;

    /// <summary>For an encoder, the tokens one input is cut to (sentence-transformers' <c>max_seq_length</c>);
    /// 0: <see cref="ContextLength"/>.</summary>
    public int MaxInputTokens { get; init; }

    /// <summary>Floats per output row.</summary>
    /// <summary>A classifier's (or reranker's) names for its output row's scores, in order; empty for other models.</summary>
    public IReadOnlyList<string> Labels { get; init; } = [];

    public int OutputWidth => Output == ModelOutput.Logits ? VocabSize : EmbeddingLength;

    /// <summary>The family's own hyperparameters as label and value, in the order <c>velo info</c> shows them.</summary>
    public IReadOnlyList<KeyValuePair<string, string>> Properties { get; init; } = [];
}

/// <summary>
/// Weights copied at load: into the layouts the kernels read (Q4_0, Q8_0 and, with AVX-512, F16 matrices), the copies' bytes and the time
/// it took; and as the file has them, into memory of 2 MiB pages (<see cref="WeightLoading"/>), likewise.
/// </summary>
public readonly record struct WeightRepack(long Bytes, TimeSpan Time, long CopiedBytes = 0, TimeSpan CopyTime = default)
{
    /// <summary>The load's report of both, as <c>velo run</c> and <c>velo bench</c> print it; empty when nothing was copied.</summary>
    public string Describe()
    {
        var parts = new List<string>(2);
        if (Bytes > 0) parts.Add($"repacking {Bytes / (1024.0 * 1024):F1} MiB of weights into row groups: {Time.TotalSeconds:F2} s");
        if (CopiedBytes > 0) parts.Add($"copying {CopiedBytes / (1024.0 * 1024):F1} MiB of weights into huge pages: {CopyTime.TotalSeconds:F2} s");
        return string.Join("; ", parts);
    }
}
