namespace Velo.Sampling;

/// <summary>A token and its log-probability under the model's raw distribution (before penalties and truncation).</summary>
public readonly record struct TokenLogprob(int Id, float Logprob);
