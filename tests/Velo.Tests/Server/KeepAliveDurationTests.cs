using Velo.Server;

namespace Velo.Tests.Server;

public sealed class KeepAliveDurationTests
{
    [Theory]
    [InlineData("5m", 300)]
    [InlineData("1h30m", 5400)]
    [InlineData("300ms", 0.3)]
    [InlineData("1.5h", 5400)]
    [InlineData("300", 300)]
    [InlineData("0", 0)]
    [InlineData("0s", 0)]
    public void Durations_parse_as_Ollama_writes_them(string text, double seconds) =>
        Assert.Equal(TimeSpan.FromSeconds(seconds), KeepAliveDuration.Parse(text));

    [Theory]
    [InlineData("-1")]
    [InlineData("-1m")]
    [InlineData("100000h")]
    public void Negative_or_very_long_durations_mean_for_ever(string text) =>
        Assert.Equal(Timeout.InfiniteTimeSpan, KeepAliveDuration.Parse(text));

    [Theory]
    [InlineData("")]
    [InlineData("soon")]
    [InlineData("5x")]
    [InlineData("m")]
    [InlineData("-")]
    [InlineData("1..2s")]
    public void Anything_else_is_refused(string text) => Assert.Null(KeepAliveDuration.Parse(text));
}
