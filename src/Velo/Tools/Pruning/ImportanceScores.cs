using Velo.Tools.Training;

namespace Velo.Tools.Pruning;

/// <summary>
/// How much each layer, feed-forward channel and KV head group of a decoder matters, measured over calibration
/// sequences:
/// <list type="bullet">
/// <item>a layer's block influence, 1 − cos(input, output) of the residual stream averaged over tokens (ShortGPT):
/// a block that barely turns the hidden state can go;</item>
/// <item>a feed-forward channel's ‖W_down[:, c]‖ · ‖h_c‖ over the tokens, h the SwiGLU output entering the down
/// projection (Wanda's |W| × activation norm, for a whole column);</item>
/// <item>a KV group's summed contribution of its query heads, ‖W_o[:, head] · o_head‖ averaged over tokens.</item>
/// </list>
/// </summary>
public sealed class ImportanceScores
{
    private readonly DecoderShape _shape;
    private readonly double[] _influence;
    private readonly double[][] _channelSquares;
    private readonly double[][] _headContribution;
    private long _tokens;

    public ImportanceScores(DecoderShape shape)
    {
        _shape = shape;
        _influence = new double[shape.Layers];
        _channelSquares = Enumerable.Range(0, shape.Layers).Select(_ => new double[shape.FfnDim]).ToArray();
        _headContribution = Enumerable.Range(0, shape.Layers).Select(_ => new double[shape.Heads]).ToArray();
    }

    public long Tokens => _tokens;

    /// <summary>Runs every calibration sequence through the model and gathers the scores.</summary>
    public static ImportanceScores Measure(ParameterLayout layout, float[] parameters, IReadOnlyList<int[]> sequences)
    {
        var scores = new ImportanceScores(layout.Shape);
        if (sequences.Count == 0) return scores;
        var decoder = new TrainableDecoder<float>(layout);
        var activations = new DecoderActivations<float>(layout.Shape, sequences.Max(q => q.Length));
        foreach (var sequence in sequences)
        {
            decoder.Forward(parameters, sequence, activations);
            scores.Add(parameters, layout, activations);
        }
        return scores;
    }

    /// <summary>Adds a sequence whose forward pass <paramref name="a"/> holds.</summary>
    public void Add(float[] parameters, ParameterLayout layout, DecoderActivations<float> a)
    {
        var s = _shape;
        int n = a.TokenIds.Length;
        var contribution = new float[s.Dim];
        for (int l = 0; l < s.Layers; l++)
        {
            var wo = parameters.AsSpan(layout.Layer(l, "attn_output").Offset, s.Dim * s.QueryDim);
            for (int t = 0; t < n; t++)
            {
                var input = a.Residual[l].AsSpan(t * s.Dim, s.Dim);
                var output = a.Residual[l + 1].AsSpan(t * s.Dim, s.Dim);
                _influence[l] += 1 - Cosine(input, output);

                var hidden = a.Hidden[l].AsSpan(t * s.FfnDim, s.FfnDim);
                for (int c = 0; c < s.FfnDim; c++) _channelSquares[l][c] += (double)hidden[c] * hidden[c];

                var o = a.AttentionOut[l].AsSpan(t * s.QueryDim, s.QueryDim);
                for (int h = 0; h < s.Heads; h++)
                {
                    var head = o.Slice(h * s.HeadDim, s.HeadDim);
                    for (int r = 0; r < s.Dim; r++)
                        contribution[r] = TrainingOps<float>.Dot(wo.Slice(r * s.QueryDim + h * s.HeadDim, s.HeadDim), head);
                    _headContribution[l][h] += Math.Sqrt(TrainingOps<float>.Dot(contribution, contribution));
                }
            }
        }
        _tokens += n;
    }

    /// <summary>Mean 1 − cos(block input, block output) of each layer.</summary>
    public double[] LayerInfluence() => _influence.Select(v => v / Math.Max(1, _tokens)).ToArray();

    /// <summary>Per layer, each feed-forward channel's ‖W_down[:, c]‖₂ · ‖h_c‖₂.</summary>
    public double[][] ChannelScores(float[] parameters, ParameterLayout layout)
    {
        var s = _shape;
        var scores = new double[s.Layers][];
        for (int l = 0; l < s.Layers; l++)
        {
            var down = parameters.AsSpan(layout.Layer(l, "ffn_down").Offset, s.Dim * s.FfnDim);
            scores[l] = new double[s.FfnDim];
            for (int c = 0; c < s.FfnDim; c++)
            {
                double column = 0;
                for (int r = 0; r < s.Dim; r++) column += (double)down[r * s.FfnDim + c] * down[r * s.FfnDim + c];
                scores[l][c] = Math.Sqrt(column) * Math.Sqrt(_channelSquares[l][c]);
            }
        }
        return scores;
    }

    /// <summary>Per layer, each KV head group's summed mean contribution of its query heads.</summary>
    public double[][] KvGroupScores()
    {
        var s = _shape;
        int group = s.Heads / s.KvHeads;
        return _headContribution
            .Select(heads => Enumerable.Range(0, s.KvHeads).Select(g => heads.Skip(g * group).Take(group).Sum() / Math.Max(1, _tokens)).ToArray())
            .ToArray();
    }

    private static double Cosine(ReadOnlySpan<float> a, ReadOnlySpan<float> b)
    {
        double dot = 0, na = 0, nb = 0;
        for (int i = 0; i < a.Length; i++)
        {
            dot += (double)a[i] * b[i];
            na += (double)a[i] * a[i];
            nb += (double)b[i] * b[i];
        }
        return na > 0 && nb > 0 ? dot / Math.Sqrt(na * nb) : 1;
    }
}
