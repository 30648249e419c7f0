using Velo.Backends;
using Velo.Runtime;
using Velo.Tensors;

namespace Velo.Models.Blocks;

/// <summary>The final norm and classifier, run only for the tokens that asked for logits.</summary>
internal static unsafe class OutputHead
{
    /// <param name="x">The residual stream: a row of <paramref name="width"/> per batch token.</param>
    /// <param name="scratch">Room for as many rows as the batch wants logits.</param>
    /// <param name="logits">Receives one row of <paramref name="output"/>'s rows per token that asked, in batch order.</param>
    public static void Forward(IBackend backend, float* x, float* normWeight, float normEpsilon, in WeightMatrix output,
        ForwardBatch batch, int width, float* scratch, float* logits)
    {
        int rows = backend.SelectRows(x, batch.WantLogits.AsSpan(0, batch.Count), width, scratch);
        if (rows == 0) return;
        backend.RmsNorm(scratch, normWeight, scratch, rows, width, normEpsilon);
        backend.MatMul(output, scratch, rows, logits);
    }
}
