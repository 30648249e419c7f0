using Velo.Models;
using static Velo.Tests.Models.ReferenceMath;

namespace Velo.Tests.Models;

/// <summary>
/// An independent forward pass of a Gemma decoder (gemma, gemma2, gemma3) in double precision, written from
/// llama.cpp's graphs with plain loops; it shares no code with Velo. Norm weights are used as stored (the converter
/// already added Gemma's 1). Sliding layers: l % 2 == 0 (Gemma 2), l % 6 != 5 (Gemma 3); a query at p sees keys at
/// p0 with p − p0 &lt; window.
/// </summary>
public sealed class ReferenceGemma
{
    private readonly SynthSpec _s;
    private readonly Func<string, double[][]> _weights;
    private readonly Dictionary<string, double[][]> _cache = [];

    /// <param name="weights">Returns a tensor as rows (ggml ne[1]) of ne[0] values; 1-D tensors are one row.</param>
    public ReferenceGemma(SynthSpec spec, Func<string, double[][]> weights)
    {
        _s = spec;
        _weights = weights;
    }

    private double[][] W(string name) => _cache.TryGetValue(name, out var w) ? w : _cache[name] = _weights(name);

    private bool Sliding(int layer) => _s.Architecture switch
    {
        "gemma2" => layer % 2 == 0,
        "gemma3" => layer % 6 != 5,
        _ => false,
    };

    /// <summary>Logits at every position of <paramref name="tokens"/> (positions 0, 1, …).</summary>
    public double[][] Logits(int[] tokens)
    {
        int n = tokens.Length, hd = _s.EffectiveHeadDim, heads = _s.Heads, kvHeads = _s.EffectiveKvHeads;
        bool gemma2 = _s.Architecture == "gemma2", gemma3 = _s.Architecture == "gemma3", postNorms = gemma2 || gemma3;
        double queryScale = 1 / Math.Sqrt(hd);
        var x = tokens.Select(t => W("token_embd.weight")[t].Select(e => e * Math.Sqrt(_s.Dim)).ToArray()).ToArray();
        for (int l = 0; l < _s.Layers; l++)
        {
            string p = $"blk.{l}.";
            bool sliding = Sliding(l);
            double ropeBase = gemma3 && sliding ? 10000 : _s.RopeBase;
            var q = new double[n][];
            var k = new double[n][];
            var v = new double[n][];
            for (int i = 0; i < n; i++)
            {
                var xn = RmsNorm(x[i], W(p + "attn_norm.weight")[0]);
                q[i] = MatVec(W(p + "attn_q.weight"), xn);
                k[i] = MatVec(W(p + "attn_k.weight"), xn);
                v[i] = MatVec(W(p + "attn_v.weight"), xn);
                for (int h = 0; h < heads; h++)
                {
                    if (gemma3) NormalizeHead(q[i], h * hd, hd, W(p + "attn_q_norm.weight")[0]);
                    RopeNeoX(q[i], h * hd, hd, i, ropeBase);
                }
                for (int h = 0; h < kvHeads; h++)
                {
                    if (gemma3) NormalizeHead(k[i], h * hd, hd, W(p + "attn_k_norm.weight")[0]);
                    RopeNeoX(k[i], h * hd, hd, i, ropeBase);
                }
            }
            for (int i = 0; i < n; i++)
            {
                int first = sliding ? Math.Max(0, i - _s.SlidingWindow + 1) : 0;
                var attention = Attention(q[i], k, v, first, i, heads, kvHeads, hd, queryScale, gemma2 ? _s.AttentionSoftCap : 0);
                var attended = MatVec(W(p + "attn_output.weight"), attention);
                if (postNorms) attended = RmsNorm(attended, W(p + "post_attention_norm.weight")[0]);
                AddTo(x[i], attended);
                var hn = RmsNorm(x[i], W(p + "ffn_norm.weight")[0]);
                var gate = MatVec(W(p + "ffn_gate.weight"), hn);
                var up = MatVec(W(p + "ffn_up.weight"), hn);
                var hidden = gate.Select((g, j) => 0.5 * g * (1 + Math.Tanh(Math.Sqrt(2 / Math.PI) * (g + 0.044715 * g * g * g))) * up[j]).ToArray();
                var ffn = MatVec(W(p + "ffn_down.weight"), hidden);
                if (postNorms) ffn = RmsNorm(ffn, W(p + "post_ffw_norm.weight")[0]);
                AddTo(x[i], ffn);
            }
        }
        var output = W(_s.TiedEmbeddings ? "token_embd.weight" : "output.weight");
        var logits = x.Select(xi => MatVec(output, RmsNorm(xi, W("output_norm.weight")[0]))).ToArray();
        if (gemma2)
            foreach (var row in logits)
                for (int j = 0; j < row.Length; j++) row[j] = _s.FinalSoftCap * Math.Tanh(row[j] / _s.FinalSoftCap);
        return logits;
    }

    private double[] RmsNorm(double[] x, double[] weight) => ReferenceMath.RmsNorm(x, weight, _s.NormEpsilon);

    private void NormalizeHead(double[] x, int offset, int length, double[] weight) =>
        RmsNorm(x[offset..(offset + length)], weight).CopyTo(x, offset);

    private static void RopeNeoX(double[] x, int offset, int hd, int position, double ropeBase)
    {
        for (int i = 0; i < hd / 2; i++)
        {
            double angle = position * Math.Pow(ropeBase, -2.0 * i / hd);
            int a = offset + i, b = offset + i + hd / 2;
            double x0 = x[a], x1 = x[b];
            x[a] = x0 * Math.Cos(angle) - x1 * Math.Sin(angle);
            x[b] = x0 * Math.Sin(angle) + x1 * Math.Cos(angle);
        }
    }
}
