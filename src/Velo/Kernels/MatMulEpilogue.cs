using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace Velo.Kernels;

/// <summary>What a matrix product does with each result after the bias.</summary>
internal enum MatMulOutput
{
    /// <summary><c>y = W·x + b</c>.</summary>
    Store,

    /// <summary><c>y = gelu(W·x + b)</c> with <see cref="Activations.GeluErf(ReadOnlySpan{float}, Span{float})"/>'s erf GELU.</summary>
    GeluErf,

    /// <summary><c>y = y + (W·x + b)</c>: a residual connection, the output already holding the residual stream.</summary>
    AddToOutput,
}

/// <summary>
/// The element-wise steps that follow a product in an encoder's layer (bias, GELU, residual add), applied as results
/// are stored instead of in passes of their own over the whole output. Each step is the same float operation, in
/// the same order, as the separate pass (<see cref="Elementwise.Add"/>, <see cref="Activations.GeluErf(ReadOnlySpan{float}, Span{float})"/>),
/// so the results are bit for bit those of the unfused sequence.
/// </summary>
internal readonly unsafe struct MatMulEpilogue(float* bias, MatMulOutput output)
{
    /// <summary>Null, or one float per row of the weights.</summary>
    public float* Bias { get; } = bias;

    public MatMulOutput Output { get; } = output;

    public bool IsNone => Bias == null && Output == MatMulOutput.Store;

    /// <summary>Rows r..r+3 of two tokens (lanes 0..3 and 4..7); <paramref name="previous"/> is what the output held there.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public Vector256<float> Apply(Vector256<float> sums, Vector256<float> previous, int r)
    {
        if (Bias != null)
        {
            var b = Vector128.Load(Bias + r);
            sums += Vector256.Create(b, b);
        }
        if (Output == MatMulOutput.GeluErf) sums = Activations.GeluErf(sums);
        else if (Output == MatMulOutput.AddToOutput) sums = previous + sums;
        return sums;
    }

    /// <summary>One result of row <paramref name="r"/>; <paramref name="previous"/> is what the output held there.</summary>
    public float Apply(float sum, float previous, int r)
    {
        if (Bias != null) sum += Bias[r];
        if (Output == MatMulOutput.GeluErf) sum = Activations.GeluErf(Vector256.Create(sum)).ToScalar();
        else if (Output == MatMulOutput.AddToOutput) sum = previous + sum;
        return sum;
    }

    /// <summary>
    /// Rows <paramref name="r"/>..r+15 of one token through the epilogue, stored at <paramref name="y"/> (which holds
    /// the residual for <see cref="MatMulOutput.AddToOutput"/>): the same lane by lane as <see cref="Apply(float, float, int)"/>.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Store(Vector512<float> sums, float* y, int r)
    {
        if (Bias != null) sums += Vector512.Load(Bias + r);
        if (Output == MatMulOutput.GeluErf) sums = Activations.GeluErf(sums);
        else if (Output == MatMulOutput.AddToOutput) sums = Vector512.Load(y) + sums;
        sums.Store(y);
    }

    /// <summary>Rows <paramref name="r"/>..r+7 of one token through the epilogue, stored at <paramref name="y"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Store(Vector256<float> sums, float* y, int r)
    {
        if (Bias != null) sums += Vector256.Load(Bias + r);
        if (Output == MatMulOutput.GeluErf) sums = Activations.GeluErf(sums);
        else if (Output == MatMulOutput.AddToOutput) sums = Vector256.Load(y) + sums;
        sums.Store(y);
    }

    /// <summary>
    /// The epilogue as passes over rows <paramref name="rowStart"/>..<paramref name="rowEnd"/> of every token, for
    /// kernels that store plain products: <paramref name="products"/> holds them (tokens × <paramref name="rows"/>),
    /// and for <see cref="MatMulOutput.AddToOutput"/> they are added into <paramref name="output"/>.
    /// </summary>
    public void ApplyRows(float* products, float* output, int rows, int tokens, int rowStart, int rowEnd)
    {
        int width = rowEnd - rowStart;
        for (int t = 0; t < tokens; t++)
        {
            var y = new Span<float>(products + (long)t * rows + rowStart, width);
            if (Bias != null) Elementwise.Add(y, new ReadOnlySpan<float>(Bias + rowStart, width), y);
            if (Output == MatMulOutput.GeluErf) Activations.GeluErf(y, y);
            else if (Output == MatMulOutput.AddToOutput)
            {
                var o = new Span<float>(output + (long)t * rows + rowStart, width);
                Elementwise.Add(o, y, o);
            }
        }
    }
}
