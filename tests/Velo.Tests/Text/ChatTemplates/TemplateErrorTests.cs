using Velo.Text.ChatTemplates;

namespace Velo.Tests.Text.ChatTemplates;

/// <summary>Broken and hostile templates fail fast with a positioned <see cref="ChatTemplateException"/>.</summary>
public class TemplateErrorTests
{
    private static ChatTemplateException ParseError(string source) =>
        Assert.Throws<ChatTemplateException>(() => ChatTemplate.Parse(source));

    private static ChatTemplateException RenderError(string source, RenderLimits? limits = null)
    {
        var template = ChatTemplate.Parse(source);
        return Assert.Throws<ChatTemplateException>(() =>
            template.Render([new("user", "hi")], false, "", "", null, TimeProvider.System, limits ?? RenderLimits.Default));
    }

    [Theory]
    [InlineData("Hello\n{% if x %}\nworld", 2, 4, "'{% if %}' is never closed: expected '{% endif %}'")]
    [InlineData("{% for m in messages %}{{ m }}", 1, 4, "expected '{% endfor %}'")]
    [InlineData("ab {{ name ", 1, 4, "unterminated tag")]
    [InlineData("ab\n  {% if x ", 2, 3, "unterminated tag")]
    [InlineData("x {# never closed", 1, 3, "unterminated comment")]
    [InlineData("{{ 'abc }}", 1, 4, "unterminated string literal")]
    [InlineData("{{ x | nosuchfilter }}", 1, 6, "unknown filter 'nosuchfilter'")]
    [InlineData("{{ x is nosuchtest }}", 1, 9, "unknown test 'nosuchtest'")]
    [InlineData("\n\n   {% frobnicate %}", 3, 7, "unknown tag 'frobnicate'")]
    [InlineData("{{ 1 + }}", 1, 8, "unexpected '}}'")]
    [InlineData("{{ (1 + 2 }}", 1, 11, "unexpected '}'")]
    [InlineData("{{ a ? b }}", 1, 6, "unexpected character '?'")]
    [InlineData("{% endif %}", 1, 4, "unknown tag 'endif'")]
    [InlineData("{% for x in y %}{% endfor %}{% break %}", 1, 32, "'break' outside a for loop")]
    [InlineData("{% set = 1 %}", 1, 8, "expected a name")]
    [InlineData("{{ 99999999999999999999 }}", 1, 4, "integer literal 99999999999999999999 is too large")]
    public void SyntaxErrorsCarryTheirPosition(string source, int line, int column, string message)
    {
        var error = ParseError(source);

        Assert.Equal(ChatTemplateErrorKind.Syntax, error.Kind);
        Assert.Contains(message, error.Detail);
        Assert.Equal((line, column), (error.Line, error.Column));
        Assert.Contains($"line {line}, column {column}", error.Message);
    }

    [Theory]
    [InlineData("line one\n{{ foo.bar }}", 2, 7, "'foo' is undefined")]
    [InlineData("{{ 1 + 'a' }}", 1, 6, "unsupported operand types for +: 'int' and 'str'")]
    [InlineData("{{ 1 / 0 }}", 1, 6, "division by zero")]
    [InlineData("{{ 2 ** 100 }}", 1, 6, "integer overflow")]
    [InlineData("{{ -(-9223372036854775807 - 1) }}", 1, 4, "integer overflow")]
    [InlineData("{{ (-9223372036854775807 - 1)|abs }}", 1, 30, "integer overflow")]
    [InlineData("{{ messages[0].content.nosuchmethod() }}", 1, 36, "'str object' has no attribute 'nosuchmethod'")]
    [InlineData("{% set x = 5 %}{% set x.attr = 1 %}", 1, 23, "only a namespace() takes attribute assignments")]
    [InlineData("{% for a, b in [1] %}{% endfor %}", 1, 4, "cannot unpack int into 2 names")]
    [InlineData("{{ 'a' < 1 }}", 1, 4, "cannot compare str with int")]
    [InlineData("{{ [1, 'a']|sort }}", 1, 12, "cannot compare")]
    public void RuntimeErrorsCarryThePositionOfTheFailingExpression(string source, int line, int column, string message)
    {
        var error = RenderError(source);

        Assert.Equal(ChatTemplateErrorKind.Runtime, error.Kind);
        Assert.Contains(message, error.Detail);
        Assert.Equal((line, column), (error.Line, error.Column));
    }

    [Fact]
    public void RaiseExceptionSurfacesTheTemplatesMessage()
    {
        var error = RenderError("{% if messages|length < 2 %}\n  {{ raise_exception('Need at least two messages') }}\n{% endif %}");

        Assert.Equal(ChatTemplateErrorKind.Raised, error.Kind);
        Assert.Equal("Need at least two messages", error.Detail);
        Assert.Equal(2, error.Line);
    }

    [Theory]
    [InlineData("{% for i in range(100000000) %}x{% endfor %}", "range() of 100000000 items exceeds the cap")]
    [InlineData("{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}", "more than 1000000 loop iterations")]
    [InlineData("{{ 'x' * 100000000 }}", "longer than 16777216 characters")]
    [InlineData("{% set ns = namespace(s='x') %}{% for i in range(100) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}", "longer than 16777216 characters")]
    [InlineData("{% set ns = namespace(l=[1]) %}{% for i in range(100) %}{% set ns.l = ns.l + ns.l %}{% endfor %}", "list longer than 1000000 items")]
    [InlineData("{% for i in range(100000) %}{{ 'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx' * 1000 }}{% endfor %}", "output exceeds 16777216 characters")]
    [InlineData("{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}", "macro calls nest deeper than 64")]
    public void HostileTemplatesHitACapInsteadOfHanging(string source, string message)
    {
        // The default caps, except time: on a loaded machine the clock could trip first and hide which cap works.
        var untimed = RenderLimits.Default with { MaxDuration = TimeSpan.FromHours(1) };

        var error = RenderError(source, untimed);

        Assert.Equal(ChatTemplateErrorKind.LimitExceeded, error.Kind);
        Assert.Contains(message, error.Detail);
    }

    [Fact]
    public void RenderingStopsAtTheTimeLimit()
    {
        var noTime = RenderLimits.Default with { MaxDuration = TimeSpan.FromTicks(-1) };

        var error = RenderError("{% for i in range(3) %}{% endfor %}", noTime);

        Assert.Equal(ChatTemplateErrorKind.LimitExceeded, error.Kind);
        Assert.Contains("took longer than", error.Detail);
    }

    [Fact]
    public void DeeplyNestedExpressionIsASyntaxErrorNotAStackOverflow()
    {
        var error = ParseError("{{ " + new string('(', 100_000) + "1" + new string(')', 100_000) + " }}");

        Assert.Equal(ChatTemplateErrorKind.Syntax, error.Kind);
        Assert.Contains("nests deeper than 200 levels", error.Detail);
    }

    [Fact]
    public void DeeplyNestedBlocksAreASyntaxErrorNotAStackOverflow()
    {
        var error = ParseError(string.Concat(Enumerable.Repeat("{% if true %}", 100_000)));

        Assert.Equal(ChatTemplateErrorKind.Syntax, error.Kind);
        Assert.Contains("nests deeper than 200 levels", error.Detail);
    }
}
