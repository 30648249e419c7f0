using System.Numerics.Tensors;

namespace Velo.Kernels;

// INTERIM: plain versions of the kernels the kern branch provides; deleted at merge.
public static unsafe class InterimKernels
{
    public static void RmsNorm(float* x, float* weight, float* y, int n, float eps)
    {
        var xs = new ReadOnlySpan<float>(x, n);
        float ss = TensorPrimitives.SumOfSquares(xs) / n;
        float scale = 1f / MathF.Sqrt(ss + eps);
        for (int i = 0; i < n; i++) y[i] = x[i] * scale * weight[i];
    }

    public static void SwiGlu(float* gate, float* up, float* y, int n)
    {
        for (int i = 0; i < n; i++)
        {
            float g = gate[i];
            y[i] = g / (1 + MathF.Exp(-g)) * up[i];
        }
    }
}

public static unsafe class InterimRope
{
    public static void Apply(float* x, int heads, int headDim, int ropeDims, float* cos, float* sin, bool neox)
    {
        int half = ropeDims / 2;
        for (int h = 0; h < heads; h++)
        {
            float* v = x + h * headDim;
            for (int i = 0; i < half; i++)
            {
                int a = neox ? i : 2 * i, b = neox ? i + half : 2 * i + 1;
                float x0 = v[a], x1 = v[b];
                v[a] = x0 * cos[i] - x1 * sin[i];
                v[b] = x0 * sin[i] + x1 * cos[i];
            }
        }
    }
}
