using Velo.Text.ChatTemplates;

namespace Velo.Tests.Text.ChatTemplates;

/// <summary>
/// A template from a model file must not be able to overflow the stack: a stack overflow cannot be caught and kills the
/// server. Deep templates are rejected when parsed; deep values built while rendering fail with a limit error.
/// </summary>
public class NestingLimitTests
{
    private const string TooDeep = "nests deeper than 200 levels";

    /// <summary>
    /// Each construct that nests, as a template of <c>count</c> levels, and what it renders to. Those that index into
    /// a value first build one <c>count</c> levels deep, in a loop (which nests nothing).
    /// </summary>
    public static TheoryData<string> Constructs => [.. Templates.Keys];

    private static readonly Dictionary<string, (Func<int, string> Template, Func<int, string> Expected)> Templates = new()
    {
        ["filters"] = (n => "{{ 'x'" + Repeat("|upper", n) + " }}", _ => "X"),
        ["addition"] = (n => "{{ 1" + Repeat(" + 1", n) + " }}", n => (n + 1).ToString()),
        ["multiplication"] = (n => "{{ 1" + Repeat(" * 1", n) + " }}", _ => "1"),
        ["concatenation"] = (n => "{{ 'a'" + Repeat(" ~ 'a'", n) + " }}", n => new string('a', n + 1)),
        ["and"] = (n => "{{ 1" + Repeat(" and 1", n) + " }}", _ => "1"),
        ["or"] = (n => "{{ 0" + Repeat(" or 0", n) + " }}", _ => "0"),
        ["power"] = (n => "{{ 1" + Repeat(" ** 1", n) + " }}", _ => "1"),
        ["parentheses"] = (n => "{{ " + Repeat("(", n) + "1" + Repeat(")", n) + " }}", _ => "1"),
        ["lists"] = (n => "{{ " + Repeat("[", n) + "1" + Repeat("]", n) + " }}", n => Repeat("[", n) + "1" + Repeat("]", n)),
        ["dicts"] = (n => "{{ " + Repeat("{'a': ", n) + "1" + Repeat("}", n) + " }}", n => Repeat("{'a': ", n) + "1" + Repeat("}", n)),
        ["not"] = (n => "{{ " + Repeat("not ", n) + "true }}", n => n % 2 == 0 ? "True" : "False"),
        ["negation"] = (n => "{{ " + Repeat("- ", n) + "1 }}", n => n % 2 == 0 ? "1" : "-1"),
        ["inline if"] = (n => "{{ " + Repeat("1 if false else ", n) + "2 }}", _ => "2"),
        ["indexing"] = (n => BuildValue("[ns.v]", n) + "{{ ns.v" + Repeat("[0]", n) + " }}", _ => "0"),
        ["attributes"] = (n => BuildValue("{'a': ns.v}", n) + "{{ ns.v" + Repeat(".a", n) + " }}", _ => "0"),
        ["calls"] = (n => "{% macro f(x) %}{{ x }}{% endmacro %}{{ " + Repeat("f(", n) + "1" + Repeat(")", n) + " }}", _ => "1"),
        ["if blocks"] = (n => Repeat("{% if true %}", n) + "x" + Repeat("{% endif %}", n), _ => "x"),
        ["for blocks"] = (n => Repeat("{% for i in [1] %}", n) + "x" + Repeat("{% endfor %}", n), _ => "x"),
        ["set blocks"] = (n => Repeat("{% set s %}", n) + "x" + Repeat("{% endset %}", n) + "{{ s }}", _ => ""),
    };

    private static string Repeat(string text, int count) => string.Concat(Enumerable.Repeat(text, count));

    private static string BuildValue(string wrap, int levels) =>
        "{% set ns = namespace(v=0) %}{% for i in range(" + levels + ") %}{% set ns.v = " + wrap + " %}{% endfor %}";

    private static string Render(string source, RenderLimits? limits = null) =>
        ChatTemplate.Parse(source).Render([new("user", "hi")], false, "", "", null, TimeProvider.System, limits ?? RenderLimits.Default);

    /// <summary>Runs <paramref name="action"/> on a thread with a small stack, as a thread of a host could have.</summary>
    private static void OnThreadWithStack(int stackBytes, Action action)
    {
        Exception? failure = null;
        var thread = new Thread(() =>
        {
            try
            {
                action();
            }
            catch (Exception e)
            {
                failure = e;
            }
        }, stackBytes);
        thread.Start();
        thread.Join();
        if (failure != null)
            throw new AggregateException(failure);
    }

    [Theory]
    [MemberData(nameof(Constructs))]
    public void TemplateNestingTooDeepIsRejectedWhenParsed(string construct)
    {
        var source = Templates[construct].Template(60_000);

        var error = Assert.Throws<ChatTemplateException>(() => ChatTemplate.Parse(source));

        Assert.Equal(ChatTemplateErrorKind.Syntax, error.Kind);
        Assert.Contains(TooDeep, error.Detail);
    }

    [Theory]
    [MemberData(nameof(Constructs))]
    public void ModeratelyNestedTemplatesRenderAsBefore(string construct)
    {
        var (template, expected) = Templates[construct];

        Assert.Equal(expected(50), Render(template(50)));
    }

    /// <summary>
    /// The deepest template the parser accepts renders on a 512 KB stack with the stack probe never tripping (it trips
    /// with 128 KB still free), so an ASP.NET request thread's 1.5 MB leaves a wide margin.
    /// </summary>
    [Theory]
    [MemberData(nameof(Constructs))]
    public void TheDeepestTemplateAcceptedRendersOnA512KbStack(string construct)
    {
        var (template, expected) = Templates[construct];
        var levels = Enumerable.Range(0, 201).Reverse().First(n => Parses(template(n)));
        Assert.True(levels >= 90, $"only {levels} levels of {construct} parse");

        string? rendered = null;
        OnThreadWithStack(512 << 10, () => rendered = Render(template(levels)));

        Assert.Equal(expected(levels), rendered);
    }

    private static bool Parses(string source)
    {
        try
        {
            ChatTemplate.Parse(source);
            return true;
        }
        catch (ChatTemplateException e) when (e.Detail.Contains(TooDeep))
        {
            return false;
        }
    }

    /// <summary>Macros calling macros nest at run time; the renderer's own cap stops them before a 1 MB stack runs low.</summary>
    [Theory]
    [InlineData("{% macro f(n) %}{{ [[[f(n - 1) if n > 0 else '']]] }}{% endmacro %}{{ f(100000) }}")]
    [InlineData("{% macro f(n) %}{{ dict(a=f(n - 1) if n > 0 else '') }}{% endmacro %}{{ f(100000) }}")]
    [InlineData("{% macro f(n) %}{% for i in [1] %}{% if n > 0 %}{{ f(n - 1) }}{% endif %}{% endfor %}{% endmacro %}{{ f(100000) }}")]
    public void RecursionThroughMacrosStopsAtTheRenderNestingCap(string source)
    {
        var unlimitedCalls = RenderLimits.Default with { MaxCallDepth = int.MaxValue, MaxDuration = TimeSpan.FromHours(1) };
        ChatTemplateException? error = null;

        OnThreadWithStack(1 << 20, () => error = Assert.Throws<ChatTemplateException>(() => Render(source, unlimitedCalls)));

        Assert.Equal(ChatTemplateErrorKind.LimitExceeded, error!.Kind);
        Assert.Contains($"rendering nests deeper than {RenderLimits.Default.MaxNesting} levels", error.Detail);
    }

    /// <summary>With the nesting caps lifted, only the stack probe stands between deep rendering and a crash.</summary>
    [Fact]
    public void OnAThreadWithTooLittleStackRenderingFailsInsteadOfOverflowing()
    {
        var uncapped = RenderLimits.Default with { MaxCallDepth = int.MaxValue, MaxNesting = int.MaxValue, MaxDuration = TimeSpan.FromHours(1) };
        ChatTemplateException? error = null;

        OnThreadWithStack(256 << 10, () => error = Assert.Throws<ChatTemplateException>(() =>
            Render("{% macro f(n) %}{{ [[[f(n - 1) if n > 0 else '']]] }}{% endmacro %}{{ f(100000) }}", uncapped)));

        Assert.Equal(ChatTemplateErrorKind.LimitExceeded, error!.Kind);
        Assert.Contains("too deep for this thread's stack", error.Detail);
    }

    /// <summary>
    /// Values a loop nests without limit, or a namespace that holds itself: printing, serializing or comparing them
    /// recursed once per level and overflowed the stack (or, for a cycle, never ended).
    /// </summary>
    [Theory]
    [InlineData("[ns.v]", "{{ ns.v }}", "cannot print a value nested deeper than 200 levels")]
    [InlineData("[ns.v]", "{{ ns.v|string }}", "cannot print a value nested deeper than 200 levels")]
    [InlineData("[ns.v]", "{{ ns.v|tojson }}", "tojson: cannot serialize a value nested deeper than 200 levels")]
    [InlineData("[ns.v]", "{{ ns.v == ns.v }}", "cannot compare a value nested deeper than 200 levels")]
    [InlineData("[ns.v]", "{{ ns.v < ns.v }}", "cannot compare a value nested deeper than 200 levels")]
    [InlineData("[ns.v]", "{{ ns.v in [ns.v] }}", "cannot compare a value nested deeper than 200 levels")]
    [InlineData("[ns.v]", "{{ [ns.v, ns.v]|unique|length }}", "cannot compare a value nested deeper than 200 levels")]
    [InlineData("[ns.v]", "{{ [ns.v, ns.v]|sort|length }}", "cannot compare a value nested deeper than 200 levels")]
    [InlineData("{'a': ns.v}", "{{ ns.v }}", "cannot print a value nested deeper than 200 levels")]
    [InlineData("{'a': ns.v}", "{{ ns.v|tojson(indent=1) }}", "tojson: cannot serialize a value nested deeper than 200 levels")]
    [InlineData("{'a': ns.v}", "{{ ns.v != ns.v }}", "cannot compare a value nested deeper than 200 levels")]
    [InlineData("{'a': ns.v}.items()|list", "{{ ns.v }}", "cannot print a value nested deeper than 200 levels")]
    public void ValuesNestedDeeperThanTheCapFailWhenUsed(string wrap, string use, string message)
    {
        var error = Assert.Throws<ChatTemplateException>(() => Render(BuildValue(wrap, 1_000) + use));

        Assert.True(error.Kind == ChatTemplateErrorKind.LimitExceeded, error.Message);
        Assert.Contains(message, error.Detail);
    }

    /// <summary>A namespace can hold itself; printing it, as Python would with <c>...</c>, recursed without end.</summary>
    [Theory]
    [InlineData("{{ ns }}")]
    [InlineData("{{ ns.v }}")]
    [InlineData("{{ ns|string }}")]
    public void ANamespaceThatHoldsItselfFailsWhenPrinted(string use)
    {
        var source = "{% set ns = namespace() %}{% set ns.self = ns %}{% set ns.v = [{'a': ns}] %}" + use;

        var error = Assert.Throws<ChatTemplateException>(() => Render(source));

        Assert.Equal(ChatTemplateErrorKind.LimitExceeded, error.Kind);
        Assert.Contains("cannot print a value nested deeper than 200 levels", error.Detail);
    }

    /// <summary>
    /// Nesting a list twice in itself per iteration doubles its full size each time while its depth stays small: the
    /// text it would print, and the work to compare two such lists, grow past any memory or time.
    /// </summary>
    [Theory]
    [InlineData("{{ ns.v }}", "longer than 16777216 characters")]
    [InlineData("{{ ns.v|tojson }}", "longer than 16777216 characters")]
    [InlineData("{{ ns.v|tojson(indent=2) }}", "longer than 16777216 characters")]
    [InlineData("{{ ns.v == ns.w }}", "comparing two values took more than 1000000 steps")]
    [InlineData("{{ ns.v < ns.w }}", "comparing two values took more than 1000000 steps")]
    public void ValuesThatDoubleEachIterationHitACap(string use, string message)
    {
        var source = "{% set ns = namespace(v=0, w=0) %}{% for i in range(60) %}{% set ns.v = [ns.v, ns.v] %}{% set ns.w = [ns.w, ns.w] %}{% endfor %}" + use;

        var error = Assert.Throws<ChatTemplateException>(() => Render(source));

        Assert.Equal(ChatTemplateErrorKind.LimitExceeded, error.Kind);
        Assert.Contains(message, error.Detail);
    }
}
