using Velo.Backends;
using Velo.Formats;
using Velo.Models.Blocks;
using Velo.Runtime;
using Velo.Threading;

namespace Velo.Models.Phi3;

/// <summary>
/// Phi-3 (mini, medium, 3.5-mini, 4-mini; llama.cpp's <c>phi3</c>): pre-norm blocks of attention with NeoX rope and a
/// SwiGLU feed-forward network, whose Q, K, V and gate, up projections each come fused in one matrix, and LongRoPE
/// for contexts beyond the original training one. Weights stay in the memory-mapped GGUF file.
/// <code>
/// [q; k; v]  = Wqkv · norm(x)
/// h          = x + Wo · Attention(rope(q), rope(k), v)     rope: θᵢ / factorᵢ, cos and sin × attention factor
/// [g; u]     = Wup · norm(h)
/// out        = h + Wdown · (silu(g) ⊙ u)
/// </code>
/// </summary>
internal sealed unsafe class Phi3Model : IModel
{
    public static ModelFamily Family { get; } =
        new("Phi-3", [Phi3Config.Architecture], file => new Phi3Model(file), file => Phi3Config.FromGguf(file).ToInfo(file), Phi3Synthesis.Tensors,
            Phi3Synthesis.Metadata);

    private Phi3Model(GgufFile file)
    {
        File = file;
        Config = Phi3Config.FromGguf(file);
        Info = Config.ToInfo(file);
        Weights = new Phi3Weights(file, Config);
    }

    public GgufFile File { get; }
    public Phi3Config Config { get; }
    public ModelInfo Info { get; }
    public Phi3Weights Weights { get; }

    // The file's tensor data is mapped, not read: it becomes resident page by page as the forward pass reads it.
    public long WeightBytes => File.FileSize - File.DataOffset + Weights.RepackGrowth;

    public WeightRepack Repack => Weights.Repack;

    public void Forward(IModelState state, ForwardBatch batch)
    {
        var s = DecoderState.Of<Phi3State>(this, state, "Phi-3");
        var c = Config;
        int n = batch.Count;
        BatchChecks.Begin(s, batch, c.VocabSize);
        var b = s.Backend;
        var attention = c.Attention;

        b.EmbeddingLookup(Weights.TokenEmbedding, batch.Tokens.AsSpan(0, n), s.X);
        b.RopeAngles(batch.Positions.AsSpan(0, n), c.RopeFrequencyScale, c.RopeBase, s.RopeFactors, s.Rope.Pairs, s.Rope.Cos, s.Rope.Sin,
            c.RopeAttentionFactor);

        for (int l = 0; l < c.Layers; l++)
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

        OutputHead.Forward(b, s.X, Weights.OutputNorm, c.NormEpsilon, Weights.Output, batch, c.Dim, s.Xb, s.LogitsPointer);
    }

    public IModelState CreateState(int contextLength = 0, int maxBatch = 512, int sequences = 1, int maxLogitRows = 0, WorkerPool? pool = null,
        KvCacheTypes cacheTypes = default)
    {
        int context = contextLength > 0 ? contextLength : Config.ContextLength;
        // llama.cpp's get_rope_factors: the long factors once a sequence may run past the original context.
        float* factors = Config.UsesLongRopeFactors(context) ? Weights.RopeFactorsLong : Weights.RopeFactorsShort;
        return new Phi3State(this, factors, context, maxBatch, sequences, maxLogitRows > 0 ? maxLogitRows : sequences, pool, cacheTypes);
    }

    public long ScratchBytes(int maxBatch, int maxLogitRows) => DecoderState.ScratchBytesFor(Config.Dimensions, slidingRope: false, maxBatch, maxLogitRows);

    public void Dispose()
    {
        Weights.Dispose();
        File.Dispose();
    }
}
