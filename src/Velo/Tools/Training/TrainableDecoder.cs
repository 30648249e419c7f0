using System.Numerics;

namespace Velo.Tools.Training;

/// <summary>What one sequence's forward pass keeps for its backward pass (and for pruning's importance scores).</summary>
public sealed class DecoderActivations<T> where T : unmanaged, IFloatingPointIeee754<T>
{
    public DecoderActivations(DecoderShape s, int tokens)
    {
        Tokens = tokens;
        Residual = new T[s.Layers + 1][];
        AttentionNormed = new T[s.Layers][];
        AttentionRms = new T[s.Layers][];
        Query = new T[s.Layers][];
        Key = new T[s.Layers][];
        Value = new T[s.Layers][];
        Probabilities = new T[s.Layers][];
        AttentionOut = new T[s.Layers][];
        Middle = new T[s.Layers][];
        FfnNormed = new T[s.Layers][];
        FfnRms = new T[s.Layers][];
        Gate = new T[s.Layers][];
        Up = new T[s.Layers][];
        Hidden = new T[s.Layers][];
        for (int l = 0; l <= s.Layers; l++) Residual[l] = new T[tokens * s.Dim];
        for (int l = 0; l < s.Layers; l++)
        {
            AttentionNormed[l] = new T[tokens * s.Dim];
            AttentionRms[l] = new T[tokens];
            Query[l] = new T[tokens * s.QueryDim];
            Key[l] = new T[tokens * s.KvDim];
            Value[l] = new T[tokens * s.KvDim];
            Probabilities[l] = new T[s.Heads * tokens * tokens];
            AttentionOut[l] = new T[tokens * s.QueryDim];
            Middle[l] = new T[tokens * s.Dim];
            FfnNormed[l] = new T[tokens * s.Dim];
            FfnRms[l] = new T[tokens];
            Gate[l] = new T[tokens * s.FfnDim];
            Up[l] = new T[tokens * s.FfnDim];
            Hidden[l] = new T[tokens * s.FfnDim];
        }
        FinalNormed = new T[tokens * s.Dim];
        FinalRms = new T[tokens];
        Logits = new T[tokens * s.VocabSize];
        (RopeCos, RopeSin) = TrainingOps<T>.RopeTable(tokens, s.HeadDim, s.RopeBase);
    }

    public int Tokens { get; }
    public int[] TokenIds { get; internal set; } = [];

    /// <summary>The residual stream entering each layer; the last is what leaves the last layer.</summary>
    public T[][] Residual { get; }
    public T[][] AttentionNormed { get; }
    public T[][] AttentionRms { get; }
    /// <summary>Queries and keys after rope.</summary>
    public T[][] Query { get; }
    public T[][] Key { get; }
    public T[][] Value { get; }
    public T[][] Probabilities { get; }
    /// <summary>Each head's attention output, before the output projection.</summary>
    public T[][] AttentionOut { get; }
    /// <summary>The residual stream between attention and feed-forward.</summary>
    public T[][] Middle { get; }
    public T[][] FfnNormed { get; }
    public T[][] FfnRms { get; }
    public T[][] Gate { get; }
    public T[][] Up { get; }
    /// <summary>silu(gate) ⊙ up: the feed-forward channels entering the down projection.</summary>
    public T[][] Hidden { get; }
    public T[] FinalNormed { get; }
    public T[] FinalRms { get; }
    public T[] Logits { get; }
    public T[] RopeCos { get; }
    public T[] RopeSin { get; }
}

/// <summary>Scratch for one sequence's backward pass.</summary>
public sealed class DecoderGradientScratch<T> where T : unmanaged, IFloatingPointIeee754<T>
{
    public DecoderGradientScratch(DecoderShape s, int tokens)
    {
        Residual = new T[tokens * s.Dim];
        Normed = new T[tokens * s.Dim];
        Branch = new T[tokens * s.Dim];
        Query = new T[tokens * s.QueryDim];
        Key = new T[tokens * s.KvDim];
        Value = new T[tokens * s.KvDim];
        AttentionOut = new T[tokens * s.QueryDim];
        Gate = new T[tokens * s.FfnDim];
        Up = new T[tokens * s.FfnDim];
        Hidden = new T[tokens * s.FfnDim];
    }

    internal T[] Residual { get; }
    internal T[] Normed { get; }
    internal T[] Branch { get; }
    internal T[] Query { get; }
    internal T[] Key { get; }
    internal T[] Value { get; }
    internal T[] AttentionOut { get; }
    internal T[] Gate { get; }
    internal T[] Up { get; }
    internal T[] Hidden { get; }
}

/// <summary>
/// A Llama decoder's forward and backward pass over one sequence, on a flat parameter vector laid out by
/// <see cref="ParameterLayout"/>: token embedding, per layer RMSNorm → Q/K/V → rope → causal attention (grouped KV
/// heads) → output projection → residual, RMSNorm → SwiGLU feed-forward → residual; final RMSNorm and the output
/// projection (or the tied embedding). Computes as Velo's inference does, so a trained model runs the same there.
/// </summary>
public sealed class TrainableDecoder<T>(ParameterLayout layout) where T : unmanaged, IFloatingPointIeee754<T>
{
    private static ReadOnlySpan<T> Of(T[] parameters, ParameterTensor t) => parameters.AsSpan(t.Offset, t.Length);
    private static Span<T> GradientOf(T[] gradients, ParameterTensor t) => gradients.AsSpan(t.Offset, t.Length);

    public ParameterLayout Layout { get; } = layout;

    public void Forward(T[] parameters, int[] tokens, DecoderActivations<T> a)
    {
        var s = Layout.Shape;
        int n = tokens.Length;
        if (n > a.Tokens) throw new ArgumentException($"{n} tokens do not fit activations for {a.Tokens}");
        foreach (int token in tokens)
            if ((uint)token >= (uint)s.VocabSize) throw new ArgumentException($"token {token} is outside the vocabulary of {s.VocabSize}");
        a.TokenIds = tokens;
        T eps = T.CreateTruncating(s.NormEpsilon);
        TrainingOps<T>.Embed(tokens, Of(parameters, Layout["token_embd.weight"]), a.Residual[0], s.Dim);
        for (int l = 0; l < s.Layers; l++)
        {
            var x = a.Residual[l];
            TrainingOps<T>.RmsNorm(x, Of(parameters, Layout.Layer(l, "attn_norm")), a.AttentionNormed[l], a.AttentionRms[l], n, s.Dim, eps);
            TrainingOps<T>.Linear(a.AttentionNormed[l], Of(parameters, Layout.Layer(l, "attn_q")), a.Query[l], n, s.Dim, s.QueryDim);
            TrainingOps<T>.Linear(a.AttentionNormed[l], Of(parameters, Layout.Layer(l, "attn_k")), a.Key[l], n, s.Dim, s.KvDim);
            TrainingOps<T>.Linear(a.AttentionNormed[l], Of(parameters, Layout.Layer(l, "attn_v")), a.Value[l], n, s.Dim, s.KvDim);
            TrainingOps<T>.Rope(a.Query[l], n, s.QueryDim, s.HeadDim, a.RopeCos, a.RopeSin);
            TrainingOps<T>.Rope(a.Key[l], n, s.KvDim, s.HeadDim, a.RopeCos, a.RopeSin);
            TrainingOps<T>.Attention(a.Query[l], a.Key[l], a.Value[l], a.AttentionOut[l], a.Probabilities[l], n, s.Heads, s.KvHeads, s.HeadDim);
            var middle = a.Middle[l];
            TrainingOps<T>.Linear(a.AttentionOut[l], Of(parameters, Layout.Layer(l, "attn_output")), middle, n, s.QueryDim, s.Dim);
            for (int i = 0; i < n * s.Dim; i++) middle[i] += x[i];

            TrainingOps<T>.RmsNorm(middle, Of(parameters, Layout.Layer(l, "ffn_norm")), a.FfnNormed[l], a.FfnRms[l], n, s.Dim, eps);
            TrainingOps<T>.Linear(a.FfnNormed[l], Of(parameters, Layout.Layer(l, "ffn_gate")), a.Gate[l], n, s.Dim, s.FfnDim);
            TrainingOps<T>.Linear(a.FfnNormed[l], Of(parameters, Layout.Layer(l, "ffn_up")), a.Up[l], n, s.Dim, s.FfnDim);
            TrainingOps<T>.SwiGlu(a.Gate[l].AsSpan(0, n * s.FfnDim), a.Up[l], a.Hidden[l]);
            var next = a.Residual[l + 1];
            TrainingOps<T>.Linear(a.Hidden[l], Of(parameters, Layout.Layer(l, "ffn_down")), next, n, s.FfnDim, s.Dim);
            for (int i = 0; i < n * s.Dim; i++) next[i] += middle[i];
        }
        TrainingOps<T>.RmsNorm(a.Residual[s.Layers], Of(parameters, Layout["output_norm.weight"]), a.FinalNormed, a.FinalRms, n, s.Dim, eps);
        TrainingOps<T>.Linear(a.FinalNormed, Of(parameters, Layout.Output), a.Logits, n, s.Dim, s.VocabSize);
    }

    /// <summary>Adds the gradient of the loss to <paramref name="gradients"/>, given its gradient with respect to the logits.</summary>
    public void Backward(T[] parameters, DecoderActivations<T> a, ReadOnlySpan<T> dLogits, T[] gradients, DecoderGradientScratch<T> g)
    {
        var s = Layout.Shape;
        int n = a.TokenIds.Length;
        var dx = g.Residual;
        TrainingOps<T>.LinearBackward(a.FinalNormed, Of(parameters, Layout.Output), dLogits, g.Normed, GradientOf(gradients, Layout.Output), n, s.Dim, s.VocabSize);
        TrainingOps<T>.RmsNormBackward(a.Residual[s.Layers], Of(parameters, Layout["output_norm.weight"]), a.FinalRms, g.Normed, dx,
            GradientOf(gradients, Layout["output_norm.weight"]), n, s.Dim);
        for (int l = s.Layers - 1; l >= 0; l--)
        {
            // Feed-forward branch: dx flows on unchanged through the residual and adds the branch's gradient.
            TrainingOps<T>.LinearBackward(a.Hidden[l], Of(parameters, Layout.Layer(l, "ffn_down")), dx, g.Hidden, GradientOf(gradients, Layout.Layer(l, "ffn_down")), n, s.FfnDim, s.Dim);
            TrainingOps<T>.SwiGluBackward(a.Gate[l].AsSpan(0, n * s.FfnDim), a.Up[l], g.Hidden, g.Gate, g.Up);
            TrainingOps<T>.LinearBackward(a.FfnNormed[l], Of(parameters, Layout.Layer(l, "ffn_gate")), g.Gate, g.Normed, GradientOf(gradients, Layout.Layer(l, "ffn_gate")), n, s.Dim, s.FfnDim);
            TrainingOps<T>.LinearBackward(a.FfnNormed[l], Of(parameters, Layout.Layer(l, "ffn_up")), g.Up, g.Branch, GradientOf(gradients, Layout.Layer(l, "ffn_up")), n, s.Dim, s.FfnDim);
            Add(g.Normed, g.Branch, n * s.Dim);
            TrainingOps<T>.RmsNormBackward(a.Middle[l], Of(parameters, Layout.Layer(l, "ffn_norm")), a.FfnRms[l], g.Normed, g.Branch, GradientOf(gradients, Layout.Layer(l, "ffn_norm")), n, s.Dim);
            Add(dx, g.Branch, n * s.Dim);

            // Attention branch.
            TrainingOps<T>.LinearBackward(a.AttentionOut[l], Of(parameters, Layout.Layer(l, "attn_output")), dx, g.AttentionOut, GradientOf(gradients, Layout.Layer(l, "attn_output")), n, s.QueryDim, s.Dim);
            TrainingOps<T>.AttentionBackward(a.Query[l], a.Key[l], a.Value[l], a.Probabilities[l], g.AttentionOut, g.Query, g.Key, g.Value, n, s.Heads, s.KvHeads, s.HeadDim);
            TrainingOps<T>.Rope(g.Query, n, s.QueryDim, s.HeadDim, a.RopeCos, a.RopeSin, inverse: true);
            TrainingOps<T>.Rope(g.Key, n, s.KvDim, s.HeadDim, a.RopeCos, a.RopeSin, inverse: true);
            TrainingOps<T>.LinearBackward(a.AttentionNormed[l], Of(parameters, Layout.Layer(l, "attn_q")), g.Query, g.Normed, GradientOf(gradients, Layout.Layer(l, "attn_q")), n, s.Dim, s.QueryDim);
            TrainingOps<T>.LinearBackward(a.AttentionNormed[l], Of(parameters, Layout.Layer(l, "attn_k")), g.Key, g.Branch, GradientOf(gradients, Layout.Layer(l, "attn_k")), n, s.Dim, s.KvDim);
            Add(g.Normed, g.Branch, n * s.Dim);
            TrainingOps<T>.LinearBackward(a.AttentionNormed[l], Of(parameters, Layout.Layer(l, "attn_v")), g.Value, g.Branch, GradientOf(gradients, Layout.Layer(l, "attn_v")), n, s.Dim, s.KvDim);
            Add(g.Normed, g.Branch, n * s.Dim);
            TrainingOps<T>.RmsNormBackward(a.Residual[l], Of(parameters, Layout.Layer(l, "attn_norm")), a.AttentionRms[l], g.Normed, g.Branch, GradientOf(gradients, Layout.Layer(l, "attn_norm")), n, s.Dim);
            Add(dx, g.Branch, n * s.Dim);
        }
        TrainingOps<T>.EmbedBackward(a.TokenIds, dx, GradientOf(gradients, Layout["token_embd.weight"]), s.Dim);
    }

    private static void Add(Span<T> into, ReadOnlySpan<T> values, int count) => TrainingOps<T>.AddScaled(into[..count], T.One, values);
}
