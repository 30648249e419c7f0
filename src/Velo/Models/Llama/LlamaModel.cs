using Velo.Backends;
using Velo.Formats;
using Velo.Models.Blocks;
using Velo.Runtime;
using Velo.Threading;

namespace Velo.Models.Llama;

/// <summary>
/// A Llama-family decoder (Llama 2/3, Mistral, Qwen2, Qwen3): pre-norm blocks of grouped-query attention with rope
/// and a SwiGLU feed-forward network. Weights stay in the memory-mapped GGUF file.
/// <code>
/// h   = x + Wo · Attention(rope(Wq·norm(x)), rope(Wk·norm(x)), Wv·norm(x))
/// out = h + Wdown · (silu(Wgate·norm(h)) ⊙ Wup·norm(h))
/// </code>
/// Loaded for a range of its blocks (a pipeline stage), it runs only those.
/// </summary>
internal sealed unsafe class LlamaModel : ILayerRangeModel
{
    public static ModelFamily Family { get; } =
        new("Llama", LlamaConfig.Architectures, file => new LlamaModel(file, layers: null), file => LlamaConfig.FromGguf(file).ToInfo(file), LlamaSynthesis.Tensors,
            LoadLayers: (file, layers) => new LlamaModel(file, layers));

    private LlamaModel(GgufFile file, LayerRange? layers)
    {
        File = file;
        Config = LlamaConfig.FromGguf(file);
        Layers = layers ?? LayerRange.All(Config.Layers);
        if (Layers.Total != Config.Layers)
            throw new ArgumentException($"{file.Path}: blocks {Layers} are not a range of the model's {Config.Layers} blocks");
        var info = Config.ToInfo(file);
        Info = Layers.IsAll ? info : info with { Layers = [.. info.Layers.Skip(Layers.Start).Take(Layers.Count)] };
        Weights = new LlamaWeights(file, Config, Layers);
    }

    public GgufFile File { get; }
    public LlamaConfig Config { get; }
    public ModelInfo Info { get; }
    public LlamaWeights Weights { get; }
    public LayerRange Layers { get; }

    // The file's tensor data is mapped, not read: it becomes resident page by page as the forward pass reads it;
    // a stage reads only its own blocks' tensors.
    // Q4_0 and Q8_0 matrices are read from copies repacked at load instead (RowGroups).
    public long WeightBytes => (Layers.IsAll ? File.FileSize - File.DataOffset : Weights.Bytes) + Weights.RepackGrowth;

    public WeightRepack Repack => Weights.Repack;

    public Span<float> Hidden(IModelState state, int tokens)
    {
        var s = DecoderState.Of<DecoderState>(this, state, "Llama-family");
        ArgumentOutOfRangeException.ThrowIfGreaterThan((uint)tokens, (uint)s.MaxBatch, nameof(tokens));
        return new Span<float>(s.X, tokens * Config.Dim);
    }

    public void Forward(IModelState state, ForwardBatch batch)
    {
        var s = DecoderState.Of<DecoderState>(this, state, "Llama-family");
        var c = Config;
        int n = batch.Count;
        BatchChecks.Begin(s, batch, c.VocabSize);
        var b = s.Backend;
        var attention = c.Attention;

        // x = the tokens' embeddings, unless blocks before these (another stage) left their output in x
        if (Layers.IsFirst) b.EmbeddingLookup(Weights.TokenEmbedding, batch.Tokens.AsSpan(0, n), s.X);
        b.RopeAngles(batch.Positions.AsSpan(0, n), c.RopeFrequencyScale, c.RopeBase, Weights.RopeFrequencyFactors, s.Rope.Pairs, s.Rope.Cos, s.Rope.Sin);

        for (int l = 0; l < Weights.Layers.Length; l++)
        {
            ref readonly var w = ref Weights.Layers[l];
            // h = x + attention(norm(x))
            b.RmsNorm(s.X, w.AttentionNorm, s.Xb, n, c.Dim, c.NormEpsilon);
            SelfAttention.Forward(b, w.Attention, attention, s.Attention, s.Rope, s.Cache, l, batch, s.Xb, s.Xb);
            b.Add(s.X, s.Xb, (long)n * c.Dim);
            // out = h + ffn(norm(h))
            b.RmsNorm(s.X, w.FfnNorm, s.Xb, n, c.Dim, c.NormEpsilon);
            FeedForward.Forward(b, w.FeedForward, GatedActivation.SiLU, s.Gate, s.Up, n, c.FfnDim, s.Xb, s.Xb);
            b.Add(s.X, s.Xb, (long)n * c.Dim);
        }

        // logits, unless blocks after these (another stage) take x on
        if (Layers.IsLast) OutputHead.Forward(b, s.X, Weights.OutputNorm, c.NormEpsilon, Weights.Output, batch, c.Dim, s.Xb, s.LogitsPointer);
    }

    public IModelState CreateState(int contextLength = 0, int maxBatch = 512, int sequences = 1, int maxLogitRows = 0, WorkerPool? pool = null,
        KvCacheTypes cacheTypes = default) =>
        new DecoderState(this, Config.Dimensions with { Layers = Layers.Count }, slidingRope: false, contextLength > 0 ? contextLength : Config.ContextLength, maxBatch, sequences,
            maxLogitRows > 0 ? maxLogitRows : sequences, pool, cacheTypes);

    public long ScratchBytes(int maxBatch, int maxLogitRows) => DecoderState.ScratchBytesFor(Config.Dimensions, slidingRope: false, maxBatch, maxLogitRows);

    public void Dispose()
    {
        Weights.Dispose();
        File.Dispose();
    }
}
