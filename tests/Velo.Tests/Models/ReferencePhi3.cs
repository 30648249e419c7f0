using Velo.Models;
using static Velo.Tests.Models.ReferenceMath;

namespace Velo.Tests.Models;

/// <summary>
/// An independent forward pass of a Phi-3 decoder in double precision, written from the equations (and llama.cpp's
/// graph for <c>phi3</c>) with plain loops. It shares no code with Velo's kernels: it takes the weights as double arrays.
/// </summary>
public sealed class ReferencePhi3
{
    private readonly SynthSpec _s;
    private readonly Func<string, double[][]> _weights;
    private readonly Dictionary<string, double[][]> _cache = [];
    private readonly double[]? _ropeFactors;
    private readonly double _attentionFactor = 1;

    /// <param name="weights">Returns a tensor as rows (ggml ne[1]) of ne[0] values; 1-D tensors are one row.</param>
    /// <param name="contextLength">The context the model runs with: beyond the original one, LongRoPE's long factors apply.</param>
    public ReferencePhi3(SynthSpec spec, Func<string, double[][]> weights, int contextLength)
    {
        _s = spec;
        _weights = weights;
        if (spec.OriginalContextLength > 0)
        {
            _ropeFactors = W(contextLength > spec.OriginalContextLength ? "rope_factors_long.weight" : "rope_factors_short.weight")[0];
            // The converter's attention factor for a context grown s times: √(1 + ln s / ln original).
            double s = (double)spec.ContextLength / spec.OriginalContextLength;
            if (s > 1) _attentionFactor = Math.Sqrt(1 + Math.Log(s) / Math.Log(spec.OriginalContextLength));
        }
    }

    private double[][] W(string name) => _cache.TryGetValue(name, out var w) ? w : _cache[name] = _weights(name);

    /// <summary>Logits at every position of <paramref name="tokens"/> (positions 0, 1, …).</summary>
    public double[][] Logits(int[] tokens)
    {
        int n = tokens.Length, hd = _s.EffectiveHeadDim, heads = _s.Heads, kvHeads = _s.EffectiveKvHeads, ffn = _s.FfnDim;
        int qDim = heads * hd, kvDim = kvHeads * hd;
        var x = tokens.Select(t => (double[])W("token_embd.weight")[t].Clone()).ToArray();
        for (int l = 0; l < _s.Layers; l++)
        {
            string p = $"blk.{l}.";
            var q = new double[n][];
            var k = new double[n][];
            var v = new double[n][];
            for (int i = 0; i < n; i++)
            {
                // One product by the fused matrix, then Q, K and V are its consecutive parts.
                var qkv = MatVec(W(p + "attn_qkv.weight"), RmsNorm(x[i], W(p + "attn_norm.weight")[0]));
                q[i] = qkv[..qDim];
                k[i] = qkv[qDim..(qDim + kvDim)];
                v[i] = qkv[(qDim + kvDim)..];
                for (int h = 0; h < heads; h++) Rope(q[i], h * hd, i);
                for (int h = 0; h < kvHeads; h++) Rope(k[i], h * hd, i);
            }
            for (int i = 0; i < n; i++)
            {
                var attention = Attention(q[i], k, v, 0, i, heads, kvHeads, hd, 1 / Math.Sqrt(hd));
                AddTo(x[i], MatVec(W(p + "attn_output.weight"), attention));
                // The fused up matrix: its first half of rows is the gate, its second the up projection (swiglu).
                var gateUp = MatVec(W(p + "ffn_up.weight"), RmsNorm(x[i], W(p + "ffn_norm.weight")[0]));
                var hidden = new double[ffn];
                for (int j = 0; j < ffn; j++) hidden[j] = gateUp[j] / (1 + Math.Exp(-gateUp[j])) * gateUp[ffn + j];
                AddTo(x[i], MatVec(W(p + "ffn_down.weight"), hidden));
            }
        }
        var output = W(_s.TiedEmbeddings ? "token_embd.weight" : "output.weight");
        return x.Select(xi => MatVec(output, RmsNorm(xi, W("output_norm.weight")[0]))).ToArray();
    }

    private double[] RmsNorm(double[] x, double[] weight) => ReferenceMath.RmsNorm(x, weight, _s.NormEpsilon);

    /// <summary>NeoX rope over the first rope dims of a head (pairs half the rotated span apart), rotated elements scaled by the attention factor.</summary>
    private void Rope(double[] x, int offset, int position)
    {
        int rotary = _s.EffectiveRopeDims, pairs = rotary / 2;
        for (int i = 0; i < pairs; i++)
        {
            double frequency = Math.Pow(_s.RopeBase, -2.0 * i / rotary) / (_ropeFactors?[i] ?? 1);
            double angle = position * frequency;
            int a = offset + i, b = offset + i + pairs;
            double x0 = x[a], x1 = x[b];
            x[a] = _attentionFactor * (x0 * Math.Cos(angle) - x1 * Math.Sin(angle));
            x[b] = _attentionFactor * (x0 * Math.Sin(angle) + x1 * Math.Cos(angle));
        }
    }
}
