using Velo.Backends;
using Velo.Kernels;
using Velo.Formats;
using Velo.Runtime;
using Velo.Threading;

namespace Velo.Models.Bert;

/// <summary>
/// A BERT encoder (BERT, MiniLM, BGE, E5, Arctic-embed), as llama.cpp's <c>build_bert</c> computes it:
/// <code>
/// x   = LayerNorm(embed(token) + embed_pos(position) + embed_type(token type))
/// h   = LayerNorm(x + Wo · Attention(Wq·x + bq, Wk·x + bk, Wv·x + bv) + bo)
/// out = LayerNorm(h + Wdown · gelu(Wup·h + bup) + bdown)
/// </code>
/// with bidirectional attention within each input and the exact (erf) GELU. Each input must come whole in one
/// forward pass, from position 0: every token attends to all of it, straight from the batch's keys and values (the
/// KV memory only counts positions). A token that asks for an output row gets its input's pooled embedding (mean or [CLS], unit
/// length when the file says so), its own last hidden state when the file pools nothing, or with rank pooling its
/// [CLS] row through the classification head: one score per label.
/// </summary>
internal sealed unsafe class BertModel : IModel, IPoolingChoice
{
    public static ModelFamily Family { get; } =
        new("BERT", [BertConfig.Architecture], file => new BertModel(file), file => BertConfig.FromGguf(file).ToInfo(), BertSynthesis.Tensors,
            BertSynthesis.Metadata);

    private BertModel(GgufFile file)
    {
        File = file;
        Config = BertConfig.FromGguf(file);
        Info = Config.ToInfo();
        Weights = new BertWeights(file, Config);
    }

    public GgufFile File { get; }
    public BertConfig Config { get; private set; }
    public ModelInfo Info { get; private set; }
    public BertWeights Weights { get; }

    /// <summary>The file's tensors and the float matrices' copies packed at load.</summary>
    public long WeightBytes => File.FileSize - File.DataOffset + Weights.PackedBytes;

    public WeightRepack Repack => Weights.Repack;

    public void Forward(IModelState state, ForwardBatch batch)
    {
        var s = state as BertState ?? throw new ArgumentException("the state was not created by a BERT model", nameof(state));
        var c = Config;
        int n = batch.Count, dim = c.Dim;
        if (s.Pooling != c.Pooling)
            throw new InvalidOperationException($"the state was created for {s.Pooling} pooling, the model now pools {c.Pooling}: create states after choosing the pooling");
        // Before the memory records the batch, so a refused one changes nothing.
        CheckWholeInputs(s, batch);
        Blocks.BatchChecks.Begin(s, batch, c.VocabSize);
        var b = s.Backend;
        var w = Weights;

        b.EmbeddingLookup(w.TokenEmbedding, batch.Tokens.AsSpan(0, n), s.X);
        b.EmbeddingLookup(w.PositionEmbedding, batch.Positions.AsSpan(0, n), s.Xb);
        b.Add(s.X, s.Xb, (long)n * dim);
        b.EmbeddingLookup(w.TokenTypes, batch.TokenTypes.AsSpan(0, n), s.Xb);
        b.Add(s.X, s.Xb, (long)n * dim);
        b.LayerNorm(s.X, w.EmbeddingNorm.Weight, w.EmbeddingNorm.Bias, s.X, n, dim, c.NormEpsilon);

        for (int l = 0; l < c.Layers; l++)
        {
            ref readonly var lw = ref w.Layers[l];
            // Bias, GELU and the residual adds ride on the products' stores (MatMulEpilogue), not passes of their own.
            Multiply(s, s.X, n, new LayerProduct(lw.Query, s.Queries), new LayerProduct(lw.Key, s.Keys), new LayerProduct(lw.Value, s.Values));
            b.BatchAttention(batch, s.Queries, s.Keys, s.Values, s.AttentionOut, c.Heads, c.HeadDim, c.AttentionScale);
            Multiply(s, s.AttentionOut, n, new LayerProduct(lw.Output, s.X, MatMulOutput.AddToOutput));
            b.LayerNorm(s.X, lw.AttentionNorm.Weight, lw.AttentionNorm.Bias, s.X, n, dim, c.NormEpsilon);

            Multiply(s, s.X, n, new LayerProduct(lw.Up, s.Hidden, MatMulOutput.GeluErf));
            Multiply(s, s.Hidden, n, new LayerProduct(lw.Down, s.X, MatMulOutput.AddToOutput));
            b.LayerNorm(s.X, lw.OutputNorm.Weight, lw.OutputNorm.Bias, s.X, n, dim, c.NormEpsilon);
        }

        if (batch.LogitCount == 0) return;
        if (c.Pooling == EmbeddingPooling.Rank) Classify(s, batch.LogitCount, batch);
        else b.Pool(s.X, batch, dim, c.Pooling, c.Normalize && c.Pooling != EmbeddingPooling.None, s.OutputPointer);
    }

    /// <summary>
    /// Products of one input with a layer's matrices, bias and <paramref name="targets"/>' epilogue applied as they
    /// are stored: those packed at load through <see cref="PackedFloatGemm"/>, the others (Q8_0's integer row groups,
    /// beside Q8_0 files' F16 value projection) through the backend's MatMul, which quantizes the input once for them.
    /// </summary>
    private static void Multiply(BertState s, float* x, int tokens, params ReadOnlySpan<LayerProduct> targets)
    {
        Span<PackedTarget> packed = stackalloc PackedTarget[targets.Length];
        Span<MatMulTarget> others = stackalloc MatMulTarget[targets.Length];
        int packedCount = 0, otherCount = 0;
        foreach (var t in targets)
        {
            if (t.Linear.Packed is { } panels) packed[packedCount++] = new PackedTarget(panels, t.Output, t.Linear.Bias, t.Mode);
            else others[otherCount++] = new MatMulTarget(t.Linear.Weight, t.Output, t.Linear.Bias, t.Mode);
        }
        if (packedCount > 0) PackedFloatGemm.Multiply(packed[..packedCount], x, tokens, s.Pool);
        if (otherCount > 0) s.Backend.MatMul(others[..otherCount], x, tokens);
    }

    /// <summary>A layer's matrix, where its products go, and what is done to them on the way.</summary>
    private readonly struct LayerProduct(Linear linear, float* output, MatMulOutput mode = MatMulOutput.Store)
    {
        public Linear Linear { get; } = linear;
        public float* Output { get; } = output;
        public MatMulOutput Mode { get; } = mode;
    }

    /// <summary>llama.cpp's rank pooling: each input's [CLS] row through <c>tanh(cls·x + b)</c>, then <c>cls.output</c> when
    /// the head has it; the output rows hold the raw scores (logits), one per label.</summary>
    private void Classify(BertState s, int rows, ForwardBatch batch)
    {
        var c = Config;
        var b = s.Backend;
        var head = Weights.Classifier!.Value;
        b.Pool(s.X, batch, c.Dim, EmbeddingPooling.Cls, normalize: false, s.Pooled);
        float* hidden = c.HasClassifierOutput ? s.ClassifierHidden : s.OutputPointer;
        b.MatMul([new MatMulTarget(head.Weight, hidden, head.Bias)], s.Pooled, rows);
        var values = new Span<float>(hidden, checked(rows * c.ClassifierWidth));
        System.Numerics.Tensors.TensorPrimitives.Tanh(values, values);
        if (Weights.ClassifierOutput is { } output)
        {
            b.MatMul([new MatMulTarget(output.Weight, s.OutputPointer, output.Bias)], hidden, rows);
        }
    }

    public void ChoosePooling(EmbeddingPooling? pooling, bool? normalize)
    {
        Config = Config.WithPooling(pooling, normalize);
        Info = Config.ToInfo();
    }

    /// <summary>Refuses a batch holding part of an input (each sequence's first token in it must be at position 0) or a
    /// token type the model lacks.</summary>
    private static void CheckWholeInputs(BertState s, ForwardBatch batch)
    {
        Array.Clear(s.Started);
        for (int i = 0; i < batch.Count; i++)
        {
            if ((uint)batch.TokenTypes[i] >= (uint)s.TokenTypes)
                throw new ArgumentException($"token {i} of the batch has token type {batch.TokenTypes[i]}; the model has {s.TokenTypes} (0 to {s.TokenTypes - 1})");
            int sequence = batch.Sequences[i];
            // A sequence the memory lacks is refused by BatchChecks.Begin, by name.
            if ((uint)sequence >= (uint)s.Started.Length || s.Started[sequence]) continue;
            if (batch.Positions[i] != 0)
                throw new ArgumentException($"sequence {sequence} starts the batch at position {batch.Positions[i]}: an encoder's input must come whole in one batch, from position 0");
            s.Started[sequence] = true;
        }
    }

    public IModelState CreateState(int contextLength = 0, int maxBatch = 512, int sequences = 1, int maxLogitRows = 0, WorkerPool? pool = null,
        KvCacheTypes cacheTypes = default) =>
        new BertState(Config, contextLength > 0 ? contextLength : Config.ContextLength, maxBatch, sequences, maxLogitRows > 0 ? maxLogitRows : sequences,
            pool, cacheTypes);

    public long ScratchBytes(int maxBatch, int maxLogitRows) => BertState.ScratchBytesFor(Config, maxBatch, maxLogitRows);

    public void Dispose()
    {
        Weights.Dispose();
        File.Dispose();
    }
}
