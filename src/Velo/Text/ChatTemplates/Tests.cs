namespace Velo.Text.ChatTemplates;

/// <summary>The Jinja tests (<c>x is defined</c>, <c>x is string</c>, ...) chat templates use.</summary>
internal static class Tests
{
    private delegate bool Test(object? value, CallArguments args);

    private static readonly Dictionary<string, Test> All = new(StringComparer.Ordinal)
    {
        ["defined"] = (v, _) => v is not Undefined,
        ["undefined"] = (v, _) => v is Undefined,
        ["none"] = (v, _) => v is null,
        ["boolean"] = (v, _) => v is bool,
        ["true"] = (v, _) => v is true,
        ["false"] = (v, _) => v is false,
        ["integer"] = (v, _) => v is long,
        ["float"] = (v, _) => v is double,
        // Python's bool is a Number, so Jinja's 'number' test accepts true and false.
        ["number"] = (v, _) => v is long or double or bool,
        ["string"] = (v, _) => v is string,
        ["mapping"] = (v, _) => v is OrderedDictionary<object, object?>,
        ["iterable"] = (v, _) => v is string or List<object?> or OrderedDictionary<object, object?> or Undefined,
        ["sequence"] = (v, _) => v is string or List<object?> or OrderedDictionary<object, object?>,
        ["callable"] = (v, _) => v is BuiltinFunction or BoundMethod or MacroValue,
        ["even"] = (v, _) => Integer(v, "even") % 2 == 0,
        ["odd"] = (v, _) => Integer(v, "odd") % 2 != 0,
        ["divisibleby"] = (v, a) => Integer(a.Get(0, "num"), "divisibleby") is var n && n != 0
            ? Integer(v, "divisibleby") % n == 0
            : throw new TemplateRuntimeException("divisibleby 0"),
        ["equalto"] = (v, a) => Py.AreEqual(v, a.Get(0, "other")),
        ["eq"] = (v, a) => Py.AreEqual(v, a.Get(0, "other")),
        ["=="] = (v, a) => Py.AreEqual(v, a.Get(0, "other")),
        ["ne"] = (v, a) => !Py.AreEqual(v, a.Get(0, "other")),
        ["!="] = (v, a) => !Py.AreEqual(v, a.Get(0, "other")),
        ["lt"] = (v, a) => Py.Compare(v, a.Get(0, "other")) < 0,
        ["<"] = (v, a) => Py.Compare(v, a.Get(0, "other")) < 0,
        ["le"] = (v, a) => Py.Compare(v, a.Get(0, "other")) <= 0,
        ["<="] = (v, a) => Py.Compare(v, a.Get(0, "other")) <= 0,
        ["gt"] = (v, a) => Py.Compare(v, a.Get(0, "other")) > 0,
        [">"] = (v, a) => Py.Compare(v, a.Get(0, "other")) > 0,
        ["ge"] = (v, a) => Py.Compare(v, a.Get(0, "other")) >= 0,
        [">="] = (v, a) => Py.Compare(v, a.Get(0, "other")) >= 0,
        ["in"] = (v, a) => Operators.Contains(a.Get(0, "seq"), v),
        ["sameas"] = (v, a) => a.Get(0, "other") is var other && (v is null or bool or long ? Equals(v, other) : ReferenceEquals(v, other)),
        ["lower"] = (v, _) => v is string s && s.Any(char.IsLetter) && s == s.ToLowerInvariant(),
        ["upper"] = (v, _) => v is string s && s.Any(char.IsLetter) && s == s.ToUpperInvariant(),
    };

    public static bool IsKnown(string name) => All.ContainsKey(name);

    public static bool Apply(string name, object? value, CallArguments args) => All[name](value, args);

    private static long Integer(object? value, string test) => value switch
    {
        long l => l,
        bool b => b ? 1 : 0,
        double d when d == Math.Floor(d) && Math.Abs(d) < 9e18 => (long)d,
        _ => throw new TemplateRuntimeException($"'{test}' needs an integer, got {Py.TypeName(value)}"),
    };
}
