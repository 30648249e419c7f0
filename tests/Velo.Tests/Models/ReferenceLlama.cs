using Velo.Models;
using static Velo.Tests.Models.ReferenceMath;

namespace Velo.Tests.Models;

/// <summary>
/// An independent forward pass of a Llama-family decoder in double precision, written straight from the equations
/// with plain loops. It shares no code with Velo's kernels: it takes the weights as double arrays.
/// </summary>
public sealed class ReferenceLlama
{
    private readonly SynthSpec _s;
    private readonly Func<string, double[][]> _weights;
    private readonly Dictionary<string, double[][]> _cache = [];

    /// <param name="weights">Returns a tensor as rows (ggml ne[1]) of ne[0] values; 1-D tensors are one row.</param>
    public ReferenceLlama(SynthSpec spec, Func<string, double[][]> weights)
    {
        _s = spec;
        _weights = weights;
    }

    private double[][] W(string name) => _cache.TryGetValue(name, out var w) ? w : _cache[name] = _weights(name);
    private bool Has(string name) => ModelSynthesizer.Tensors(_s).Any(t => t.Name == name);

    /// <summary>Logits at every position of <paramref name="tokens"/> (positions 0, 1, …).</summary>
    public double[][] Logits(int[] tokens)
    {
        int n = tokens.Length, hd = _s.EffectiveHeadDim, heads = _s.Heads, kvHeads = _s.EffectiveKvHeads;
        bool neox = _s.Architecture is "qwen2" or "qwen3";
        var x = tokens.Select(t => (double[])W("token_embd.weight")[t].Clone()).ToArray();
        for (int l = 0; l < _s.Layers; l++)
        {
            string p = $"blk.{l}.";
            var q = new double[n][];
            var k = new double[n][];
            var v = new double[n][];
            for (int i = 0; i < n; i++)
            {
                var xn = RmsNorm(x[i], W(p + "attn_norm.weight")[0]);
                q[i] = MatVec(W(p + "attn_q.weight"), xn);
                k[i] = MatVec(W(p + "attn_k.weight"), xn);
                v[i] = MatVec(W(p + "attn_v.weight"), xn);
                if (_s.QkvBias)
                {
                    AddTo(q[i], W(p + "attn_q.bias")[0]);
                    AddTo(k[i], W(p + "attn_k.bias")[0]);
                    AddTo(v[i], W(p + "attn_v.bias")[0]);
                }
                for (int h = 0; h < heads; h++)
                {
                    if (_s.QkNorm) NormalizeHead(q[i], h * hd, hd, W(p + "attn_q_norm.weight")[0]);
                    Rope(q[i], h * hd, hd, i, neox);
                }
                for (int h = 0; h < kvHeads; h++)
                {
                    if (_s.QkNorm) NormalizeHead(k[i], h * hd, hd, W(p + "attn_k_norm.weight")[0]);
                    Rope(k[i], h * hd, hd, i, neox);
                }
            }
            for (int i = 0; i < n; i++)
            {
                var attention = Attention(q[i], k, v, 0, i, heads, kvHeads, hd, 1 / Math.Sqrt(hd));
                AddTo(x[i], MatVec(W(p + "attn_output.weight"), attention));
                var hn = RmsNorm(x[i], W(p + "ffn_norm.weight")[0]);
                var gate = MatVec(W(p + "ffn_gate.weight"), hn);
                var up = MatVec(W(p + "ffn_up.weight"), hn);
                var hidden = gate.Select((g, j) => g / (1 + Math.Exp(-g)) * up[j]).ToArray();
                AddTo(x[i], MatVec(W(p + "ffn_down.weight"), hidden));
            }
        }
        var output = W(_s.TiedEmbeddings ? "token_embd.weight" : "output.weight");
        return x.Select(xi => MatVec(output, RmsNorm(xi, W("output_norm.weight")[0]))).ToArray();
    }

    private double[] RmsNorm(double[] x, double[] weight) => ReferenceMath.RmsNorm(x, weight, _s.NormEpsilon);

    private void NormalizeHead(double[] x, int offset, int length, double[] weight)
    {
        var normed = RmsNorm(x[offset..(offset + length)], weight);
        normed.CopyTo(x, offset);
    }

    private void Rope(double[] x, int offset, int hd, int position, bool neox)
    {
        double[]? factors = Has("rope_freqs.weight") ? W("rope_freqs.weight")[0] : null;
        for (int i = 0; i < hd / 2; i++)
        {
            double frequency = Math.Pow(_s.RopeBase, -2.0 * i / hd) / (factors?[i] ?? 1);
            double angle = position * frequency;
            int a = offset + (neox ? i : 2 * i), b = offset + (neox ? i + hd / 2 : 2 * i + 1);
            double x0 = x[a], x1 = x[b];
            x[a] = x0 * Math.Cos(angle) - x1 * Math.Sin(angle);
            x[b] = x0 * Math.Sin(angle) + x1 * Math.Cos(angle);
        }
    }
}
