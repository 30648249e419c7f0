using Velo.Backends;
using Velo.Formats;
using Velo.Models.Blocks;
using Velo.Runtime;
using Velo.Threading;

namespace Velo.Models.Gemma;

/// <summary>
/// A Gemma decoder (Gemma 1, 2, 3), as llama.cpp's <c>build_gemma</c>, <c>build_gemma2_iswa</c> and
/// <c>build_gemma3_iswa</c> compute it. Norms are RMSNorm with the file's weights (the converter stored 1 + w).
/// <code>
/// x   = √dim · embed(token)
/// h   = x + postnorm(Wo · Attention(rope(qnorm(Wq·norm(x))), rope(knorm(Wk·norm(x))), Wv·norm(x)))
/// out = h + postnorm(Wdown · (gelu(Wgate·norm(h)) ⊙ Wup·norm(h)))
/// logits = cap · tanh(W_out·norm(out) / cap)
/// </code>
/// Attention scores are <c>scale · q·k</c>, soft-capped by Gemma 2, over a sliding window on the local layers
/// (Gemma 2: every other layer, the first included; Gemma 3: five of every six) whose rope base may differ (Gemma 3:
/// 10000 locally). Post-norms and Q/K norms are Gemma 2 and 3's; soft caps Gemma 2's.
/// </summary>
internal sealed unsafe class GemmaModel : IModel
{
    public static ModelFamily Family { get; } =
        new("Gemma", GemmaConfig.Architectures, file => new GemmaModel(file), file => GemmaConfig.FromGguf(file).ToInfo(file), GemmaSynthesis.Tensors,
            GemmaSynthesis.Metadata);

    private GemmaModel(GgufFile file)
    {
        File = file;
        Config = GemmaConfig.FromGguf(file);
        Info = Config.ToInfo(file);
        Weights = new GemmaWeights(file, Config);
        _attention = Enumerable.Range(0, Config.Layers).Select(Config.Attention).ToArray();
    }

    private readonly AttentionShape[] _attention;

    public GgufFile File { get; }
    public GemmaConfig Config { get; }
    public ModelInfo Info { get; }
    public GemmaWeights Weights { get; }

    public long WeightBytes => File.FileSize - File.DataOffset + Weights.RepackGrowth;

    public WeightRepack Repack => Weights.Repack;

    public void Forward(IModelState state, ForwardBatch batch)
    {
        var s = DecoderState.Of<DecoderState>(this, state, "Gemma");
        var c = Config;
        int n = batch.Count;
        BatchChecks.Begin(s, batch, c.VocabSize);
        var b = s.Backend;
        var positions = batch.Positions.AsSpan(0, n);

        b.EmbeddingLookup(Weights.TokenEmbedding, batch.Tokens.AsSpan(0, n), s.X);
        b.Scale(s.X, (long)n * c.Dim, MathF.Sqrt(c.Dim));
        b.RopeAngles(positions, c.RopePositionScale, c.RopeBase, null, s.Rope.Pairs, s.Rope.Cos, s.Rope.Sin);
        if (c.SlidingPeriod > 0)
            b.RopeAngles(positions, c.RopePositionScaleSliding, c.RopeBaseSliding, null, s.SlidingRope.Pairs, s.SlidingRope.Cos, s.SlidingRope.Sin);

        for (int l = 0; l < c.Layers; l++)
        {
            ref readonly var w = ref Weights.Layers[l];
            var rope = c.IsSliding(l) ? s.SlidingRope : s.Rope;
            // h = x + postnorm(attention(norm(x)))
            b.RmsNorm(s.X, w.AttentionNorm, s.Xb, n, c.Dim, c.NormEpsilon);
            SelfAttention.Forward(b, w.Attention, _attention[l], s.Attention, rope, s.Cache, l, batch, s.Xb, s.Xb);
            if (w.PostAttentionNorm != null) b.RmsNorm(s.Xb, w.PostAttentionNorm, s.Xb, n, c.Dim, c.NormEpsilon);
            b.Add(s.X, s.Xb, (long)n * c.Dim);
            // out = h + postnorm(ffn(norm(h)))
            b.RmsNorm(s.X, w.FfnNorm, s.Xb, n, c.Dim, c.NormEpsilon);
            FeedForward.Forward(b, w.FeedForward, GatedActivation.GeluTanh, s.Gate, s.Up, n, c.FfnDim, s.Xb, s.Xb);
            if (w.PostFfnNorm != null) b.RmsNorm(s.Xb, w.PostFfnNorm, s.Xb, n, c.Dim, c.NormEpsilon);
            b.Add(s.X, s.Xb, (long)n * c.Dim);
        }

        OutputHead.Forward(b, s.X, Weights.OutputNorm, c.NormEpsilon, Weights.Output, batch, c.Dim, s.Xb, s.LogitsPointer);
        if (c.FinalSoftCap > 0 && batch.LogitCount > 0)
            b.SoftCap(s.LogitsPointer, (long)batch.LogitCount * c.VocabSize, c.FinalSoftCap);
    }

    public IModelState CreateState(int contextLength = 0, int maxBatch = 512, int sequences = 1, int maxLogitRows = 0, WorkerPool? pool = null,
        KvCacheTypes cacheTypes = default) =>
        // The sliding layers keep a full-length cache too: the window only masks what attention reads.
        new DecoderState(this, Config.Dimensions, slidingRope: true, contextLength > 0 ? contextLength : Config.ContextLength, maxBatch, sequences,
            maxLogitRows > 0 ? maxLogitRows : sequences, pool, cacheTypes);

    public long ScratchBytes(int maxBatch, int maxLogitRows) => DecoderState.ScratchBytesFor(Config.Dimensions, slidingRope: true, maxBatch, maxLogitRows);

    public void Dispose()
    {
        Weights.Dispose();
        File.Dispose();
    }
}
