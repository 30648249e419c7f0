using Velo.Inference;
using Velo.Runtime;

namespace Velo.Tests.Models;

public static class ModelChecks
{
    /// <summary>Loads the model with its tokenizer, feeds a short prompt, and checks every logit is finite and they vary.</summary>
    public static void AssertFiniteLogits(string path)
    {
        using var model = LanguageModel.Load(path);
        int[] tokens = model.Tokenizer.Encode("Once upon a time", addSpecial: true);
        using var state = model.Model.CreateState(contextLength: 32, maxBatch: tokens.Length, maxLogitRows: tokens.Length);
        var batch = new ForwardBatch(tokens.Length);
        for (int i = 0; i < tokens.Length; i++) batch.Add(tokens[i], i, wantLogits: true);
        model.Model.Forward(state, batch);
        for (int row = 0; row < tokens.Length; row++)
        {
            var logits = state.Output(row);
            foreach (float l in logits) Assert.True(float.IsFinite(l), $"row {row} has a non-finite logit");
            Assert.True(System.Numerics.Tensors.TensorPrimitives.Max(logits) > System.Numerics.Tensors.TensorPrimitives.Min(logits));
        }
    }
}
