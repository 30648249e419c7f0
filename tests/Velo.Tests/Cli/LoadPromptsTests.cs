using Velo.Diagnostics;

namespace Velo.Tests.Cli;

public sealed class LoadPromptsTests
{
    [Fact]
    public void Prompts_are_repeatable_and_differ_by_request_and_seed()
    {
        string prompt = LoadPrompts.For(seed: 1, number: 7, words: 25);
        Assert.Equal(prompt, LoadPrompts.For(1, 7, 25));
        Assert.Equal(26, prompt.Split(' ').Length); // the number, then the words
        Assert.StartsWith("7. ", prompt, StringComparison.Ordinal);
        // Past the number, no two requests of a run (and no request of another run) start alike.
        var openings = Enumerable.Range(1, 64).SelectMany(n => new[] { LoadPrompts.For(1, n, 25), LoadPrompts.For(2, n, 25) })
            .Select(p => string.Join(' ', p.Split(' ').Skip(1).Take(6))).ToArray();
        Assert.Equal(openings.Length, openings.Distinct().Count());
    }
}
