using Velo.Backends;
using Velo.Kernels;
using Velo.Tensors;

namespace Velo.Models.Blocks;

/// <summary>A gated feed-forward network's weights: <c>ffn_gate</c>, <c>ffn_up</c> and <c>ffn_down</c>.</summary>
internal readonly struct FeedForwardWeights
{
    public required WeightMatrix Gate { get; init; }
    public required WeightMatrix Up { get; init; }
    public required WeightMatrix Down { get; init; }

    public static FeedForwardWeights Bind(WeightBinder bind, string prefix, int dim, int ffnDim) => new()
    {
        Gate = bind.Matrix(prefix + "ffn_gate.weight", ffnDim, dim),
        Up = bind.Matrix(prefix + "ffn_up.weight", ffnDim, dim),
        Down = bind.Matrix(prefix + "ffn_down.weight", dim, ffnDim),
    };
}

/// <summary>llama.cpp's <c>build_ffn</c> for a gated network: <c>out = Wdown · (act(Wgate·x) ⊙ Wup·x)</c>.</summary>
internal static unsafe class FeedForward
{
    /// <summary><paramref name="gate"/> and <paramref name="up"/> hold rows × ffnDim floats; <paramref name="output"/> may be <paramref name="input"/>.</summary>
    public static void Forward(IBackend backend, in FeedForwardWeights w, GatedActivation activation, float* gate, float* up,
        int rows, int ffnDim, float* input, float* output)
    {
        backend.MatMul([new MatMulTarget(w.Gate, gate), new MatMulTarget(w.Up, up)], input, rows);
        backend.GatedActivation(activation, gate, up, (long)rows * ffnDim);
        backend.MatMul(w.Down, gate, rows, output);
    }
}
