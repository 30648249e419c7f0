namespace Velo.Sampling.Grammars;

/// <summary>
/// The sampling stage that keeps only the tokens a grammar allows next (end-of-generation only once the output is
/// complete). It runs after bias and penalties and before truncation, so whatever the sampling settings, the token
/// drawn continues a valid output. The pipeline moves the matcher past each chosen token.
/// </summary>
public sealed class GrammarStage(GrammarMatcher matcher) : ISamplingStage
{
    public GrammarMatcher Matcher { get; } = matcher ?? throw new ArgumentNullException(nameof(matcher));

    public void Apply(Candidates candidates, in SamplingContext context) => candidates.Retain(Matcher.NextTokens());
}
