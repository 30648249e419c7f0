namespace Velo.Tools.Training;

/// <summary>Learning rate by step: linear warm-up to the peak, then cosine decay to a floor.</summary>
public sealed record LearningRateSchedule(float Peak, int WarmupSteps, int TotalSteps, float FloorRatio = 0.1f)
{
    public float At(int step)
    {
        if (step < WarmupSteps) return Peak * (step + 1) / WarmupSteps;
        double progress = Math.Min(1, (double)(step - WarmupSteps) / Math.Max(1, TotalSteps - WarmupSteps));
        double floor = Peak * FloorRatio;
        return (float)(floor + (Peak - floor) * 0.5 * (1 + Math.Cos(Math.PI * progress)));
    }
}

/// <summary>
/// AdamW (Loshchilov and Hutter): Adam's bias-corrected moments, with weight decay applied to the weights directly
/// rather than through the gradient, and only to matrices (norm weights are not decayed). Moments are kept in float
/// beside the float master weights.
/// </summary>
public sealed class AdamW
{
    public AdamW(ParameterLayout layout, float beta1 = 0.9f, float beta2 = 0.95f, float epsilon = 1e-8f, float weightDecay = 0.01f)
    {
        Layout = layout;
        Beta1 = beta1;
        Beta2 = beta2;
        Epsilon = epsilon;
        WeightDecay = weightDecay;
        FirstMoment = new float[layout.Count];
        SecondMoment = new float[layout.Count];
    }

    public ParameterLayout Layout { get; }
    public float Beta1 { get; }
    public float Beta2 { get; }
    public float Epsilon { get; }
    public float WeightDecay { get; }
    public float[] FirstMoment { get; }
    public float[] SecondMoment { get; }

    /// <summary>Updates done so far (the bias correction's t).</summary>
    public int Updates { get; set; }

    /// <summary>One update of <paramref name="parameters"/> with <paramref name="gradients"/> already scaled (clipped) as wanted.</summary>
    public void Step(float[] parameters, ReadOnlySpan<float> gradients, float learningRate)
    {
        Updates++;
        float correction1 = 1 - MathF.Pow(Beta1, Updates);
        float correction2 = 1 - MathF.Pow(Beta2, Updates);
        foreach (var tensor in Layout.Tensors)
        {
            float decay = tensor.IsMatrix ? learningRate * WeightDecay : 0;
            for (int i = tensor.Offset; i < tensor.Offset + tensor.Length; i++)
            {
                float g = gradients[i];
                float m = FirstMoment[i] = Beta1 * FirstMoment[i] + (1 - Beta1) * g;
                float v = SecondMoment[i] = Beta2 * SecondMoment[i] + (1 - Beta2) * g * g;
                parameters[i] -= learningRate * (m / correction1) / (MathF.Sqrt(v / correction2) + Epsilon) + decay * parameters[i];
            }
        }
    }
}
