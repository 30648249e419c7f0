using System.Numerics;
using System.Runtime.InteropServices;

namespace Velo.Tools.Training;

/// <summary>
/// The forward and backward passes of every operation a Llama decoder is made of, over one sequence of tokens,
/// generic in the number type: training runs them in float, the gradient tests in double against finite
/// differences. Matrices are row-major as GGUF stores them: a weight of <c>outputs × inputs</c> holds one row of
/// inputs per output. Backward passes add to the gradients they are given (several tokens, sequences and uses
/// share a weight), and write, not add, the gradient of their input unless named <c>Accumulate</c>.
/// </summary>
public static class TrainingOps<T> where T : unmanaged, IFloatingPointIeee754<T>
{
    public static T Dot(ReadOnlySpan<T> a, ReadOnlySpan<T> b)
    {
        var va = MemoryMarshal.Cast<T, Vector<T>>(a);
        var vb = MemoryMarshal.Cast<T, Vector<T>>(b[..a.Length]);
        var sum = Vector<T>.Zero;
        for (int i = 0; i < va.Length; i++) sum += va[i] * vb[i];
        T total = Vector.Sum(sum);
        for (int i = va.Length * Vector<T>.Count; i < a.Length; i++) total += a[i] * b[i];
        return total;
    }

    /// <summary>y += a · x.</summary>
    public static void AddScaled(Span<T> y, T a, ReadOnlySpan<T> x)
    {
        var vy = MemoryMarshal.Cast<T, Vector<T>>(y);
        var vx = MemoryMarshal.Cast<T, Vector<T>>(x[..y.Length]);
        var va = new Vector<T>(a);
        for (int i = 0; i < vy.Length; i++) vy[i] += va * vx[i];
        for (int i = vy.Length * Vector<T>.Count; i < y.Length; i++) y[i] += a * x[i];
    }

    /// <summary>y[t] = W x[t] for each of the <paramref name="tokens"/> rows of x (inputs wide) and y (outputs wide).</summary>
    public static void Linear(ReadOnlySpan<T> x, ReadOnlySpan<T> w, Span<T> y, int tokens, int inputs, int outputs)
    {
        for (int t = 0; t < tokens; t++)
        {
            var xt = x.Slice(t * inputs, inputs);
            var yt = y.Slice(t * outputs, outputs);
            for (int o = 0; o < outputs; o++) yt[o] = Dot(w.Slice(o * inputs, inputs), xt);
        }
    }

    /// <summary>dx = dy W (written), dW += Σ_t dy[t] ⊗ x[t].</summary>
    public static void LinearBackward(ReadOnlySpan<T> x, ReadOnlySpan<T> w, ReadOnlySpan<T> dy, Span<T> dx, Span<T> dw, int tokens, int inputs, int outputs)
    {
        dx[..(tokens * inputs)].Clear();
        for (int t = 0; t < tokens; t++)
        {
            var xt = x.Slice(t * inputs, inputs);
            var dxt = dx.Slice(t * inputs, inputs);
            var dyt = dy.Slice(t * outputs, outputs);
            for (int o = 0; o < outputs; o++)
            {
                T g = dyt[o];
                if (g == T.Zero) continue;
                AddScaled(dxt, g, w.Slice(o * inputs, inputs));
                AddScaled(dw.Slice(o * inputs, inputs), g, xt);
            }
        }
    }

    /// <summary>x[t] = E[tokens[t]].</summary>
    public static void Embed(ReadOnlySpan<int> tokens, ReadOnlySpan<T> embedding, Span<T> x, int dim)
    {
        for (int t = 0; t < tokens.Length; t++) embedding.Slice(tokens[t] * dim, dim).CopyTo(x.Slice(t * dim, dim));
    }

    /// <summary>dE[tokens[t]] += dx[t].</summary>
    public static void EmbedBackward(ReadOnlySpan<int> tokens, ReadOnlySpan<T> dx, Span<T> dEmbedding, int dim)
    {
        for (int t = 0; t < tokens.Length; t++) AddScaled(dEmbedding.Slice(tokens[t] * dim, dim), T.One, dx.Slice(t * dim, dim));
    }

    /// <summary>y = x / rms(x) ⊙ w per token; <paramref name="inverseRms"/> keeps 1 / rms(x) for the backward pass.</summary>
    public static void RmsNorm(ReadOnlySpan<T> x, ReadOnlySpan<T> w, Span<T> y, Span<T> inverseRms, int tokens, int dim, T epsilon)
    {
        for (int t = 0; t < tokens; t++)
        {
            var xt = x.Slice(t * dim, dim);
            var yt = y.Slice(t * dim, dim);
            T r = T.One / T.Sqrt(Dot(xt, xt) / T.CreateTruncating(dim) + epsilon);
            inverseRms[t] = r;
            for (int i = 0; i < dim; i++) yt[i] = xt[i] * r * w[i];
        }
    }

    /// <summary>dx = r (dy ⊙ w) − r³/n · x · Σ(dy ⊙ w ⊙ x) (written), dw += Σ_t dy ⊙ x r.</summary>
    public static void RmsNormBackward(ReadOnlySpan<T> x, ReadOnlySpan<T> w, ReadOnlySpan<T> inverseRms, ReadOnlySpan<T> dy, Span<T> dx, Span<T> dw, int tokens, int dim)
    {
        T n = T.CreateTruncating(dim);
        for (int t = 0; t < tokens; t++)
        {
            var xt = x.Slice(t * dim, dim);
            var dyt = dy.Slice(t * dim, dim);
            var dxt = dx.Slice(t * dim, dim);
            T r = inverseRms[t];
            T projection = T.Zero;
            for (int i = 0; i < dim; i++)
            {
                projection += dyt[i] * w[i] * xt[i];
                dw[i] += dyt[i] * xt[i] * r;
            }
            T c = r * r * r * projection / n;
            for (int i = 0; i < dim; i++) dxt[i] = r * dyt[i] * w[i] - c * xt[i];
        }
    }

    /// <summary>The rotation angles' cosines and sines for positions 0..tokens-1: [tokens × headDim/2] each, pair i turning by pos · base^(−2i/headDim).</summary>
    public static (T[] Cos, T[] Sin) RopeTable(int tokens, int headDim, double ropeBase)
    {
        int pairs = headDim / 2;
        var cos = new T[tokens * pairs];
        var sin = new T[tokens * pairs];
        for (int p = 0; p < tokens; p++)
            for (int i = 0; i < pairs; i++)
            {
                (double s, double c) = Math.SinCos(p * Math.Pow(ropeBase, -2.0 * i / headDim));
                cos[p * pairs + i] = T.CreateTruncating(c);
                sin[p * pairs + i] = T.CreateTruncating(s);
            }
        return (cos, sin);
    }

    /// <summary>
    /// Rotates adjacent pairs (llama.cpp's "normal" rope, as Llama GGUF files use) of every head of every token in
    /// place; <paramref name="inverse"/> turns them back, which is also the backward pass, a rotation's transpose.
    /// </summary>
    public static void Rope(Span<T> x, int tokens, int width, int headDim, ReadOnlySpan<T> cos, ReadOnlySpan<T> sin, bool inverse = false)
    {
        int pairs = headDim / 2;
        for (int t = 0; t < tokens; t++)
        {
            var c = cos.Slice(t * pairs, pairs);
            var s = sin.Slice(t * pairs, pairs);
            var xt = x.Slice(t * width, width);
            for (int head = 0; head < width; head += headDim)
                for (int i = 0; i < pairs; i++)
                {
                    T a = xt[head + 2 * i], b = xt[head + 2 * i + 1];
                    T si = inverse ? -s[i] : s[i];
                    xt[head + 2 * i] = a * c[i] - b * si;
                    xt[head + 2 * i + 1] = a * si + b * c[i];
                }
        }
    }

    /// <summary>
    /// Causal self-attention with grouped KV heads: o[t, h] = Σ_{j≤t} softmax_j(q[t,h]·k[j,g] / √d) v[j,g], g = h / (heads / kvHeads).
    /// <paramref name="probabilities"/> [heads × tokens × tokens] keeps the attention weights for the backward pass.
    /// </summary>
    public static void Attention(ReadOnlySpan<T> q, ReadOnlySpan<T> k, ReadOnlySpan<T> v, Span<T> o, Span<T> probabilities,
        int tokens, int heads, int kvHeads, int headDim)
    {
        int qWidth = heads * headDim, kvWidth = kvHeads * headDim, group = heads / kvHeads;
        T scale = T.One / T.Sqrt(T.CreateTruncating(headDim));
        o[..(tokens * qWidth)].Clear();
        for (int h = 0; h < heads; h++)
        {
            int g = h / group;
            for (int t = 0; t < tokens; t++)
            {
                var qt = q.Slice(t * qWidth + h * headDim, headDim);
                var p = probabilities.Slice((h * tokens + t) * tokens, tokens);
                T max = T.NegativeInfinity;
                for (int j = 0; j <= t; j++)
                {
                    p[j] = Dot(qt, k.Slice(j * kvWidth + g * headDim, headDim)) * scale;
                    max = T.Max(max, p[j]);
                }
                T sum = T.Zero;
                for (int j = 0; j <= t; j++)
                {
                    p[j] = T.Exp(p[j] - max);
                    sum += p[j];
                }
                var ot = o.Slice(t * qWidth + h * headDim, headDim);
                for (int j = 0; j <= t; j++)
                {
                    p[j] /= sum;
                    AddScaled(ot, p[j], v.Slice(j * kvWidth + g * headDim, headDim));
                }
                p[(t + 1)..].Clear();
            }
        }
    }

    /// <summary>dq, dk, dv (written) from do, with the softmax's Jacobian: ds = p ⊙ (dp − Σ p dp).</summary>
    public static void AttentionBackward(ReadOnlySpan<T> q, ReadOnlySpan<T> k, ReadOnlySpan<T> v, ReadOnlySpan<T> probabilities, ReadOnlySpan<T> dOut,
        Span<T> dq, Span<T> dk, Span<T> dv, int tokens, int heads, int kvHeads, int headDim)
    {
        int qWidth = heads * headDim, kvWidth = kvHeads * headDim, group = heads / kvHeads;
        T scale = T.One / T.Sqrt(T.CreateTruncating(headDim));
        dq[..(tokens * qWidth)].Clear();
        dk[..(tokens * kvWidth)].Clear();
        dv[..(tokens * kvWidth)].Clear();
        Span<T> dp = tokens <= 1024 ? stackalloc T[tokens] : new T[tokens];
        for (int h = 0; h < heads; h++)
        {
            int g = h / group;
            for (int t = 0; t < tokens; t++)
            {
                var p = probabilities.Slice((h * tokens + t) * tokens, tokens);
                var dot = dOut.Slice(t * qWidth + h * headDim, headDim);
                T weighted = T.Zero;
                for (int j = 0; j <= t; j++)
                {
                    dp[j] = Dot(dot, v.Slice(j * kvWidth + g * headDim, headDim));
                    weighted += p[j] * dp[j];
                    AddScaled(dv.Slice(j * kvWidth + g * headDim, headDim), p[j], dot);
                }
                var qt = q.Slice(t * qWidth + h * headDim, headDim);
                var dqt = dq.Slice(t * qWidth + h * headDim, headDim);
                for (int j = 0; j <= t; j++)
                {
                    T ds = p[j] * (dp[j] - weighted) * scale;
                    if (ds == T.Zero) continue;
                    AddScaled(dqt, ds, k.Slice(j * kvWidth + g * headDim, headDim));
                    AddScaled(dk.Slice(j * kvWidth + g * headDim, headDim), ds, qt);
                }
            }
        }
    }

    public static T Sigmoid(T x) => T.One / (T.One + T.Exp(-x));

    /// <summary>h = silu(gate) ⊙ up, elementwise.</summary>
    public static void SwiGlu(ReadOnlySpan<T> gate, ReadOnlySpan<T> up, Span<T> h)
    {
        for (int i = 0; i < gate.Length; i++) h[i] = gate[i] * Sigmoid(gate[i]) * up[i];
    }

    /// <summary>dgate and dup (written) from dh; silu'(g) = σ(g)(1 + g(1 − σ(g))).</summary>
    public static void SwiGluBackward(ReadOnlySpan<T> gate, ReadOnlySpan<T> up, ReadOnlySpan<T> dh, Span<T> dGate, Span<T> dUp)
    {
        for (int i = 0; i < gate.Length; i++)
        {
            T s = Sigmoid(gate[i]);
            dUp[i] = dh[i] * gate[i] * s;
            dGate[i] = dh[i] * up[i] * s * (T.One + gate[i] * (T.One - s));
        }
    }

    /// <summary>
    /// The loss of one position's logits, and its gradient (written to <paramref name="dLogits"/>, times
    /// <paramref name="weight"/>): (1 − α) · cross-entropy with <paramref name="target"/> plus α · τ² · KL(teacher_τ ‖
    /// student_τ), where <paramref name="teacherLogProbs"/> are the teacher's log-probabilities at temperature τ (or
    /// empty when α is 0). The τ² keeps the soft term's gradients on the scale of the hard term's, as Hinton et al.
    /// </summary>
    public static T DistillationLoss(ReadOnlySpan<T> logits, int target, ReadOnlySpan<T> teacherLogProbs, T alpha, T temperature, T weight, Span<T> dLogits)
    {
        int n = logits.Length;
        T max = T.NegativeInfinity;
        for (int i = 0; i < n; i++) max = T.Max(max, logits[i]);
        T loss = T.Zero;
        T hard = T.One - alpha;
        dLogits[..n].Clear();
        if (hard != T.Zero)
        {
            T sum = T.Zero;
            for (int i = 0; i < n; i++) sum += T.Exp(logits[i] - max);
            T logSum = T.Log(sum) + max;
            loss += hard * (logSum - logits[target]);
            for (int i = 0; i < n; i++) dLogits[i] = weight * hard * T.Exp(logits[i] - logSum);
            dLogits[target] -= weight * hard;
        }
        if (alpha != T.Zero)
        {
            T sum = T.Zero;
            for (int i = 0; i < n; i++) sum += T.Exp((logits[i] - max) / temperature);
            T logSum = T.Log(sum);
            T kl = T.Zero;
            for (int i = 0; i < n; i++)
            {
                T studentLog = (logits[i] - max) / temperature - logSum;
                T teacher = T.Exp(teacherLogProbs[i]);
                if (teacher > T.Zero) kl += teacher * (teacherLogProbs[i] - studentLog);
                // d/dz of τ² KL = τ (softmax(z/τ) − p_teacher).
                dLogits[i] += weight * alpha * temperature * (T.Exp(studentLog) - teacher);
            }
            loss += alpha * temperature * temperature * kl;
        }
        return loss * weight;
    }
}
