using Velo.Text.ChatTemplates;

namespace Velo.Tests.Text.ChatTemplates;

/// <summary>The Jinja subset itself: expressions, filters, tests, statements and whitespace rules, with expected
/// outputs following Jinja 3 with transformers' settings (trim_blocks, lstrip_blocks).</summary>
public class JinjaEngineTests
{
    private static string Render(string source, params (string Name, object? Value)[] variables) =>
        ChatTemplate.Parse(source).Render([], false, "", "", variables.ToDictionary(v => v.Name, v => v.Value));

    [Theory]
    [InlineData("{{ 1 + 2 * 3 }}", "7")]
    [InlineData("{{ (1 + 2) * 3 }}", "9")]
    [InlineData("{{ 7 // 2 }} {{ -7 // 2 }} {{ -7 % 3 }} {{ 7 % -3 }}", "3 -4 2 -2")]
    [InlineData("{{ 1 / 2 }} {{ 10 / 5 }} {{ 2 ** 10 }} {{ 2 ** -1 }}", "0.5 2.0 1024 0.5")]
    [InlineData("{{ 'a' ~ 1 ~ none ~ true }}", "a1NoneTrue")]
    [InlineData("{{ 'ab' * 3 }}{{ [1] + [2] }}", "ababab[1, 2]")]
    [InlineData("{{ 1 < 2 < 3 }} {{ 3 < 2 < 5 }} {{ 1 == 1.0 }} {{ 'a' < 'b' }}", "True False True True")]
    [InlineData("{{ 'ell' in 'hello' }} {{ 3 not in [1, 2] }} {{ 'k' in {'k': 1} }}", "True True True")]
    [InlineData("{{ not 1 == 2 }} {{ none or 'fallback' }} {{ 0 and 1 }}", "True fallback 0")]
    [InlineData("{{ 'yes' if 2 > 1 else 'no' }}{{ 'never' if false }}", "yes")]
    [InlineData("{{ [1, 'a', true, none, 1.5] }} {{ {'k': [2], 3: 'x'} }} {{ (1, 2) }}", "[1, 'a', True, None, 1.5] {'k': [2], 3: 'x'} (1, 2)")]
    [InlineData("{{ 1e20 }} {{ 0.0001 }} {{ 0.00001 }} {{ 1.0 }} {{ 123456789012345.6 }}", "1e+20 0.0001 1e-05 1.0 123456789012345.6")]
    [InlineData("{{ 'hello'[::-1] }} {{ [1, 2, 3, 4][1:3] }} {{ [1, 2, 3][-1] }} {{ 'abcdef'[5:1:-2] }}", "olleh [2, 3] 3 fd")]
    [InlineData("{{ 'a' 'b' }}{{ \"it's\" }}{{ 'tab\\there' }}", "abit'stab\there")]
    public void Expressions(string source, string expected) => Assert.Equal(expected, Render(source));

    [Theory]
    [InlineData(1e16, "1e+16")]
    [InlineData(1e15, "1000000000000000.0")]
    [InlineData(0.1, "0.1")]
    [InlineData(1.0 / 3, "0.3333333333333333")]
    [InlineData(2.5e-5, "2.5e-05")]
    [InlineData(-1.5, "-1.5")]
    [InlineData(1.7976931348623157e308, "1.7976931348623157e+308")]
    [InlineData(5e-324, "5e-324")]
    [InlineData(double.PositiveInfinity, "inf")]
    public void FloatsPrintAsPythonRepr(double value, string expected) => Assert.Equal(expected, Render("{{ x }}", ("x", value)));

    [Theory]
    [InlineData("{{ ' a  b '.split() }} {{ 'a,b,,c'.split(',') }} {{ 'a,b,c'.split(',', 1) }}", "['a', 'b'] ['a', 'b', '', 'c'] ['a', 'b,c']")]
    [InlineData("{{ 'xxhixx'.strip('x') }}|{{ '\\n\\nhi\\n'.lstrip('\\n') }}|{{ 'hi  '.rstrip() }}", "hi|hi\n|hi")]
    [InlineData("{{ 'hello'.startswith('he') }} {{ 'hello'.endswith(('x', 'lo')) }}", "True True")]
    [InlineData("{{ 'Hello'.upper() }} {{ 'Hello'.lower() }} {{ 'hello world'.title() }} {{ 'hELLO'.capitalize() }}", "HELLO hello Hello World Hello")]
    [InlineData("{{ 'a-a-a'.replace('-', '+') }} {{ 'abc'.find('c') }} {{ 'abab'.count('ab') }} {{ ', '.join(['x', 'y']) }}", "a+a+a 2 2 x, y")]
    [InlineData("{{ {'a': 1}.get('b', 5) }} {{ {'a': 1}.get('a') }} {{ {'a': 1, 'b': 2}.keys()|list }} {{ {'a': 1}.items()|list }}", "5 1 ['a', 'b'] [('a', 1)]")]
    public void StringAndDictMethods(string source, string expected) => Assert.Equal(expected, Render(source));

    [Theory]
    [InlineData("[{{ '  hi \\n'|trim }}] {{ 'abc'|upper }} {{ 'ABC'|lower }} {{ 'a-b c'|title }}", "[hi] ABC abc A-B C")]
    [InlineData("{{ [1, 2, 3]|length }} {{ 'abc'|length }} {{ missing|length }} {{ [4, 5]|first }} {{ [4, 5]|last }}", "3 3 0 4 5")]
    [InlineData("{{ missing|default('d') }} {{ none|default('d') }} {{ ''|default('d', true) }}", "d None d")]
    [InlineData("{{ [1, 2]|join('-') }} {{ 'aXbX'|replace('X', 'y') }} {{ 'aXbX'|replace('X', 'y', 1) }}", "1-2 ayby aybX")]
    [InlineData("{{ {'a': 1, 'b': 2}|items|list }}", "[('a', 1), ('b', 2)]")]
    [InlineData("{{ '3'|int + 1 }} {{ 'x'|int }} {{ 2|float }} {{ 3|string ~ 'x' }} {{ -3|abs }}", "4 0 2.0 3x 3")]
    [InlineData("{{ [3, 1, 2]|sort }} {{ ['b', 'A', 'a']|sort }} {{ [1, 2]|reverse|list }} {{ [1, 1, 2]|unique|list }}", "[1, 2, 3] ['A', 'a', 'b'] [2, 1] [1, 2]")]
    [InlineData("{{ 'a\\nb'|indent(2) }}|{{ 'abc'|list }}", "a\n  b|['a', 'b', 'c']")]
    [InlineData("{{ range(10)|select('odd')|list }} {{ range(4)|reject('even')|list }} {{ ['a', 'b']|map('upper')|join }}", "[1, 3, 5, 7, 9] [1, 3] AB")]
    public void Filters(string source, string expected) => Assert.Equal(expected, Render(source));

    [Fact]
    public void AttributeFiltersWorkOnMessages()
    {
        var messages = new List<ChatMessage> { new("user", "a"), new("assistant", "b"), new("user", "c") };

        Assert.Equal("2|a,c|user,assistant|a",
            Render("{{ messages|selectattr('role', 'equalto', 'user')|list|length }}|" +
                   "{{ messages|selectattr('role', 'equalto', 'user')|map(attribute='content')|join(',') }}|" +
                   "{{ messages|map(attribute='role')|unique|join(',') }}|" +
                   "{{ (messages|rejectattr('role', 'ne', 'user')|first).content }}",
                ("messages", messages)));
    }

    [Fact]
    public void ToJsonMatchesPythonJsonDumps()
    {
        var value = new Dictionary<string, object?>
        {
            ["text"] = "é \u001b\t\"q\" 😀 \\",
            ["numbers"] = new List<object?> { 1, 2.0, 0.5, null, true },
            ["empty"] = new Dictionary<string, object?>(),
        };

        Assert.Equal("{\"text\": \"é \\u001b\\t\\\"q\\\" 😀 \\\\\", \"numbers\": [1, 2.0, 0.5, null, true], \"empty\": {}}",
            Render("{{ value|tojson }}", ("value", value)));
        Assert.Equal("{\n  \"text\": \"é \\u001b\\t\\\"q\\\" 😀 \\\\\",\n  \"numbers\": [\n    1,\n    2.0,\n    0.5,\n    null,\n    true\n  ],\n  \"empty\": {}\n}",
            Render("{{ value|tojson(indent=2) }}", ("value", value)));
    }

    [Theory]
    [InlineData("{{ x is defined }} {{ y is defined }} {{ y is undefined }} {{ x.y is defined }} {{ x.z is defined }}", "True False True True False")]
    [InlineData("{{ none is none }} {{ x is not none }} {{ 'a' is string }} {{ 1 is string }} {{ x is mapping }} {{ [] is mapping }}", "True True True False True False")]
    [InlineData("{{ 1 is number }} {{ 1.5 is float }} {{ 1 is integer }} {{ true is boolean }} {{ false is false }}", "True True True True True")]
    [InlineData("{{ 6 is divisibleby 3 }} {{ 3 is odd }} {{ 4 is even }} {{ 'a' is in ['a'] }} {{ 1 is equalto 1 }} {{ x is iterable }}", "True True True True True True")]
    public void Tests(string source, string expected) =>
        Assert.Equal(expected, Render(source, ("x", new Dictionary<string, object?> { ["y"] = 1 })));

    [Theory]
    [InlineData("{% for i in [1, 2, 3] %}{{ loop.index }}{{ loop.index0 }}{{ loop.first }}{{ loop.last }}{{ loop.length }}{{ loop.revindex }};{% endfor %}",
        "10TrueFalse33;21FalseFalse32;32FalseTrue31;")]
    [InlineData("{% for i in [] %}x{% else %}empty{% endfor %}", "empty")]
    [InlineData("{% for i in range(10) if i is odd %}{{ i }}:{{ loop.index }},{% endfor %}", "1:1,3:2,5:3,7:4,9:5,")]
    [InlineData("{% for i in range(10) %}{% if i == 2 %}{% continue %}{% endif %}{% if i == 5 %}{% break %}{% endif %}{{ i }}{% endfor %}", "0134")]
    [InlineData("{% for k, v in {'a': 1, 'b': 2}|items %}{{ k }}={{ v }};{% endfor %}", "a=1;b=2;")]
    [InlineData("{% for i in [1, 2, 3] %}{{ loop.previtem }}<{{ i }}>{{ loop.nextitem }} {% endfor %}", "<1>2 1<2>3 2<3> ")]
    [InlineData("{% for i in [1, 2, 3] %}{{ loop.cycle('a', 'b') }}{% endfor %}", "aba")]
    [InlineData("{% if false %}a{% elif 1 %}b{% else %}c{% endif %}{% if none %}d{% else %}e{% endif %}", "be")]
    public void Statements(string source, string expected) => Assert.Equal(expected, Render(source));

    [Fact]
    public void SetInsideALoopDoesNotLeak_NamespaceAttributesDo()
    {
        Assert.Equal("1", Render("{% set x = 1 %}{% for i in [1] %}{% set x = 2 %}{% endfor %}{{ x }}"));
        Assert.Equal("2", Render("{% set ns = namespace(x=1) %}{% for i in [1] %}{% set ns.x = ns.x + 1 %}{% endfor %}{{ ns.x }}"));
        // Each iteration starts from the outer variables again, so y from the first pass is gone in the second.
        Assert.Equal("[]", Render("{% for i in [1, 2] %}{% if i == 2 %}[{{ y }}]{% endif %}{% set y = i %}{% endfor %}"));
        // An if block is no scope: its set is visible after it.
        Assert.Equal("3", Render("{% if true %}{% set z = 3 %}{% endif %}{{ z }}"));
    }

    [Fact]
    public void SetForms()
    {
        Assert.Equal("21", Render("{% set a, b = [1, 2] %}{{ b }}{{ a }}"));
        Assert.Equal("[in 2]", Render("{% set b %}in {{ 1 + 1 }}{% endset %}[{{ b }}]"));
    }

    [Fact]
    public void Macros()
    {
        Assert.Equal("Hello, Ann! Hi, Bob!",
            Render("{% macro greet(name, greeting='Hello') %}{{ greeting }}, {{ name }}!{% endmacro %}{{ greet('Ann') }} {{ greet('Bob', greeting='Hi') }}"));
    }

    [Theory]
    // lstrip_blocks removes the indent before a block tag; trim_blocks removes the newline after it.
    [InlineData("<a>\n  {% if true %}\n    x\n  {% endif %}\n</a>", "<a>\n    x\n</a>")]
    // Neither applies to {{ }}.
    [InlineData("{{ 'a' }}\nb", "a\nb")]
    [InlineData("a  {%- if true -%}  b  {%- endif -%}  c", "abc")]
    [InlineData("a\n  {{- 'b' -}}\n  c", "abc")]
    // '+' keeps the indentation lstrip_blocks would remove.
    [InlineData("  {%+ if true %}x{% endif %}", "  x")]
    [InlineData("a\n{# comment #}\nb", "a\nb")]
    [InlineData("a {# comment #}\nb", "a b")]
    // Text before the tag on its line keeps its spaces.
    [InlineData("x {% if true %}\n y{% endif %}", "x  y")]
    // One trailing newline of the template is dropped, as Jinja does without keep_trailing_newline.
    [InlineData("hi\n", "hi")]
    [InlineData("hi\n\n", "hi\n")]
    [InlineData("{% for i in [1, 2] %}\n{{ i }}\n{% endfor %}\n", "1\n2\n")]
    [InlineData("{%- for m in [1, 2] -%}\n  {{ m }}\n{%- endfor %}", "12")]
    [InlineData("line\r\n{% if true %}\r\nx\r\n{% endif %}", "line\nx\n")]
    public void Whitespace(string source, string expected) => Assert.Equal(expected, Render(source));

    [Fact]
    public void DictLiteralInsideAnOutputTagIsNotMistakenForItsEnd()
    {
        Assert.Equal("{'a': {'b': 1}}", Render("{{ {'a': {'b': 1}} }}"));
    }

    [Fact]
    public void UndefinedValuesPrintAsNothingButFailWhenUsed()
    {
        Assert.Equal("[]", Render("[{{ nothing }}]"));
        Assert.Equal("none", Render("{% for x in nothing %}x{% else %}none{% endfor %}"));
        var error = Assert.Throws<ChatTemplateException>(() => Render("{{ nothing + 'a' }}"));
        Assert.Equal(ChatTemplateErrorKind.Runtime, error.Kind);
        Assert.Equal("'nothing' is undefined", error.Detail);
    }

    [Fact]
    public void ExtraVariablesOverrideDefaults()
    {
        var template = ChatTemplate.Parse("{{ bos_token }}|{{ tools is none }}|{{ tools|join(',') if tools }}|{{ messages|length }}|{{ flag }}");

        Assert.Equal("<s>|True||1|", template.Render([new("user", "x")], false, "<s>", "</s>"));
        Assert.Equal("<s>|False|a,b|1|False", template.Render([new("user", "x")], false, "<s>", "</s>",
            new Dictionary<string, object?> { ["tools"] = new[] { "a", "b" }, ["flag"] = false }));
    }
}
