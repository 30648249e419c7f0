using System.Collections;
using System.Globalization;
using System.Runtime.CompilerServices;
using System.Text;
using System.Text.Json;

namespace Velo.Text.ChatTemplates;

/// <summary>
/// A missing variable, attribute or item. Like Jinja's default <c>Undefined</c> it prints as nothing, is false, iterates
/// as empty and has length 0, but any other use fails with <see cref="Description"/>.
/// </summary>
internal sealed class Undefined(string description)
{
    public string Description { get; } = description;
}

/// <summary>A Python tuple: a list in every respect except how it prints.</summary>
internal sealed class PyTuple(IEnumerable<object?> items) : List<object?>(items);

/// <summary>The object <c>namespace(...)</c> makes: the one thing a loop body may assign into that outlives the iteration.</summary>
internal sealed class Namespace
{
    public OrderedDictionary<string, object?> Attributes { get; } = new(StringComparer.Ordinal);
}

/// <summary>The <c>loop</c> variable inside a for body.</summary>
internal sealed class LoopContext(IReadOnlyList<object?> items)
{
    public int Index0 { get; set; }

    public object? Get(string name) => name switch
    {
        "index0" => (long)Index0,
        "index" => (long)Index0 + 1,
        "revindex0" => (long)(items.Count - Index0 - 1),
        "revindex" => (long)(items.Count - Index0),
        "first" => Index0 == 0,
        "last" => Index0 == items.Count - 1,
        "length" => (long)items.Count,
        "depth" => 1L,
        "depth0" => 0L,
        "previtem" => Index0 > 0 ? items[Index0 - 1] : new Undefined("there is no previous item"),
        "nextitem" => Index0 < items.Count - 1 ? items[Index0 + 1] : new Undefined("there is no next item"),
        "cycle" => new BuiltinFunction((args, _) =>
            args.Positional.Count == 0 ? throw new TemplateRuntimeException("loop.cycle needs at least one value") : args.Positional[Index0 % args.Positional.Count]),
        _ => new Undefined($"'loop' has no attribute '{name}'"),
    };
}

/// <summary>Arguments of a call, filter or test after evaluation.</summary>
internal sealed record CallArguments(IReadOnlyList<object?> Positional, IReadOnlyDictionary<string, object?> Named)
{
    public static readonly CallArguments Empty = new([], new Dictionary<string, object?>());

    /// <summary>The argument at <paramref name="position"/> or named <paramref name="name"/>; Python's binding of both kinds.</summary>
    public object? Get(int position, string name, object? fallback = null)
    {
        if (position < Positional.Count)
            return Positional[position];
        return Named.TryGetValue(name, out var value) ? value : fallback;
    }

    public bool Has(int position, string name) => position < Positional.Count || Named.ContainsKey(name);
}

internal sealed class BuiltinFunction(Func<CallArguments, Renderer, object?> invoke)
{
    public object? Invoke(CallArguments args, Renderer renderer) => invoke(args, renderer);
}

/// <summary>A method looked up on a value, e.g. <c>message.content.split</c>, waiting to be called.</summary>
internal sealed record BoundMethod(object Target, string Name);

internal sealed record MacroValue(MacroNode Definition, Scope Closure);

/// <summary>A failure while evaluating; the renderer adds the position of the expression that caused it.</summary>
internal class TemplateRuntimeException(string message) : Exception(message);

/// <summary>Compares dict keys with Python's rules, so <c>1</c>, <c>1.0</c> and <c>true</c> are the same key.</summary>
internal sealed class PyKeyComparer : IEqualityComparer<object>
{
    public static readonly PyKeyComparer Instance = new();

    public new bool Equals(object? x, object? y) => Py.AreEqual(x, y);

    public int GetHashCode(object obj) => obj switch
    {
        bool b => (b ? 1.0 : 0.0).GetHashCode(),
        long l => ((double)l).GetHashCode(),
        double d => d.GetHashCode(),
        string s => StringComparer.Ordinal.GetHashCode(s),
        _ => obj.GetHashCode(),
    };
}

/// <summary>Python semantics for the template's values: None is null, ints are long, lists are <see cref="List{T}"/>, dicts are ordered.</summary>
internal static class Py
{
    /// <summary>
    /// How deep lists, dicts and namespaces may nest when printed or compared. A template can build deeper ones in a
    /// loop (<c>{% set ns.x = [ns.x] %}</c>) or a cycle (<c>{% set ns.me = ns %}</c>); walking those recursively would
    /// overflow the stack or never end.
    /// </summary>
    public const int MaxValueDepth = 200;

    /// <summary>
    /// The most items one comparison may visit: nesting a list twice in itself per loop iteration
    /// (<c>{% set ns.x = [ns.x, ns.x] %}</c>) makes a value whose full walk doubles with each iteration.
    /// </summary>
    private const int MaxComparisonSteps = 1_000_000;

    /// <summary>The longest text <see cref="Repr"/> builds, for the same reason: the renderer's default output cap.</summary>
    private static readonly int MaxReprLength = RenderLimits.Default.MaxStringLength;

    public static OrderedDictionary<object, object?> NewDict() => new(PyKeyComparer.Instance);

    /// <summary>
    /// Guards one level of a recursive walk over a value. The stack probe covers a walk that starts when rendering has
    /// already used most of a small stack. <paramref name="action"/> starts the message, e.g. "cannot print".
    /// </summary>
    public static void EnterValueLevel(int depth, string action)
    {
        if (depth > MaxValueDepth)
            throw new TemplateLimitException($"{action} a value nested deeper than {MaxValueDepth} levels");
        if (!RuntimeHelpers.TryEnsureSufficientExecutionStack())
            throw new TemplateLimitException($"{action} a value nested too deep for this thread's stack");
    }

    public static bool IsTruthy(object? value) => value switch
    {
        null or Undefined => false,
        bool b => b,
        long l => l != 0,
        double d => d != 0,
        string s => s.Length > 0,
        ICollection c => c.Count > 0,
        _ => true,
    };

    public static bool IsNumber(object? value) => value is long or double or bool;

    public static double ToDouble(object? value) => value switch
    {
        long l => l,
        double d => d,
        bool b => b ? 1 : 0,
        _ => throw new TemplateRuntimeException($"expected a number, got {TypeName(value)}"),
    };

    public static string TypeName(object? value) => value switch
    {
        null => "NoneType",
        Undefined => "Undefined",
        bool => "bool",
        long => "int",
        double => "float",
        string => "str",
        PyTuple => "tuple",
        List<object?> => "list",
        OrderedDictionary<object, object?> => "dict",
        Namespace => "Namespace",
        LoopContext => "LoopContext",
        _ => "function",
    };

    public static bool AreEqual(object? a, object? b)
    {
        var steps = MaxComparisonSteps;
        return AreEqual(a, b, 0, ref steps);
    }

    private static void CountComparisonStep(int depth, ref int steps)
    {
        EnterValueLevel(depth, "cannot compare");
        if (--steps < 0)
            throw new TemplateLimitException($"comparing two values took more than {MaxComparisonSteps} steps");
    }

    private static bool AreEqual(object? a, object? b, int depth, ref int steps)
    {
        CountComparisonStep(depth, ref steps);
        if (a is Undefined || b is Undefined)
            return a is Undefined && b is Undefined;
        if (a is null || b is null)
            return a is null && b is null;
        if (IsNumber(a) && IsNumber(b))
            return a is long or bool && b is long or bool ? ToLong(a) == ToLong(b) : ToDouble(a) == ToDouble(b);
        switch (a)
        {
            case string sa:
                return b is string sb && sa == sb;
            case List<object?> la:
                if (b is not List<object?> lb || la.Count != lb.Count)
                    return false;
                for (var i = 0; i < la.Count; i++)
                    if (!AreEqual(la[i], lb[i], depth + 1, ref steps))
                        return false;
                return true;
            case OrderedDictionary<object, object?> da:
                if (b is not OrderedDictionary<object, object?> db || da.Count != db.Count)
                    return false;
                foreach (var (key, value) in da)
                    if (!db.TryGetValue(key, out var other) || !AreEqual(value, other, depth + 1, ref steps))
                        return false;
                return true;
            default:
                return ReferenceEquals(a, b);
        }
    }

    private static long ToLong(object value) => value is bool b ? (b ? 1 : 0) : (long)value;

    /// <summary>Python's ordering for &lt; and friends, and for sort: numbers, strings and lists only.</summary>
    public static int Compare(object? a, object? b)
    {
        var steps = MaxComparisonSteps;
        return Compare(a, b, 0, ref steps);
    }

    private static int Compare(object? a, object? b, int depth, ref int steps)
    {
        CountComparisonStep(depth, ref steps);
        if (IsNumber(a) && IsNumber(b))
            return a is long or bool && b is long or bool ? ToLong(a!).CompareTo(ToLong(b!)) : ToDouble(a).CompareTo(ToDouble(b));
        if (a is string sa && b is string sb)
            return string.CompareOrdinal(sa, sb) switch { < 0 => -1, > 0 => 1, _ => 0 };
        if (a is List<object?> la && b is List<object?> lb)
        {
            for (var i = 0; i < Math.Min(la.Count, lb.Count); i++)
            {
                var c = Compare(la[i], lb[i], depth + 1, ref steps);
                if (c != 0)
                    return c;
            }
            return la.Count.CompareTo(lb.Count);
        }
        if (a is Undefined u)
            throw new TemplateRuntimeException(u.Description);
        if (b is Undefined v)
            throw new TemplateRuntimeException(v.Description);
        throw new TemplateRuntimeException($"cannot compare {TypeName(a)} with {TypeName(b)}");
    }

    /// <summary>Python's <c>str()</c>, which is what <c>{{ }}</c> prints.</summary>
    public static string ToStr(object? value) => value switch
    {
        string s => s,
        Undefined => "",
        _ => Repr(value),
    };

    /// <summary>Python's <c>repr()</c>, used for the items of a printed list or dict.</summary>
    public static string Repr(object? value)
    {
        var sb = new StringBuilder();
        WriteRepr(sb, value, 0);
        return sb.ToString();
    }

    private static void WriteRepr(StringBuilder sb, object? value, int depth)
    {
        EnterValueLevel(depth, "cannot print");
        if (sb.Length > MaxReprLength)
            throw new TemplateLimitException($"template built a string longer than {MaxReprLength} characters");
        switch (value)
        {
            case null: sb.Append("None"); break;
            case Undefined: break;
            case bool b: sb.Append(b ? "True" : "False"); break;
            case long l: sb.Append(l.ToString(CultureInfo.InvariantCulture)); break;
            case double d: sb.Append(FormatFloat(d)); break;
            case string s: WriteReprString(sb, s); break;
            case PyTuple tuple:
                WriteReprItems(sb, "(", tuple, (item, level) => WriteRepr(sb, item, level), depth);
                sb.Append(tuple.Count == 1 ? ",)" : ")");
                break;
            case List<object?> list:
                WriteReprItems(sb, "[", list, (item, level) => WriteRepr(sb, item, level), depth);
                sb.Append(']');
                break;
            case OrderedDictionary<object, object?> dict:
                WriteReprItems(sb, "{", dict, (pair, level) =>
                {
                    WriteRepr(sb, pair.Key, level);
                    sb.Append(": ");
                    WriteRepr(sb, pair.Value, level);
                }, depth);
                sb.Append('}');
                break;
            case Namespace ns:
                WriteReprItems(sb, "<Namespace {", ns.Attributes, (pair, level) =>
                {
                    WriteReprString(sb, pair.Key);
                    sb.Append(": ");
                    WriteRepr(sb, pair.Value, level);
                }, depth);
                sb.Append("}>");
                break;
            default: sb.Append('<').Append(TypeName(value)).Append('>'); break;
        }
    }

    private static void WriteReprItems<T>(StringBuilder sb, string open, IEnumerable<T> items, Action<T, int> writeItem, int depth)
    {
        sb.Append(open);
        var first = true;
        foreach (var item in items)
        {
            if (!first)
                sb.Append(", ");
            first = false;
            writeItem(item, depth + 1);
        }
    }

    private static void WriteReprString(StringBuilder sb, string s)
    {
        var quote = s.Contains('\'') && !s.Contains('"') ? '"' : '\'';
        sb.Append(quote);
        foreach (var c in s)
        {
            switch (c)
            {
                case '\\': sb.Append("\\\\"); break;
                case '\n': sb.Append("\\n"); break;
                case '\r': sb.Append("\\r"); break;
                case '\t': sb.Append("\\t"); break;
                default:
                    if (c == quote)
                        sb.Append('\\').Append(c);
                    else if (c < 0x20 || c == 0x7F)
                        sb.Append("\\x").Append(((int)c).ToString("x2", CultureInfo.InvariantCulture));
                    else
                        sb.Append(c);
                    break;
            }
        }
        sb.Append(quote);
    }

    /// <summary>Python's <c>repr(float)</c>: shortest round-trip digits, exponent form below 1e-4 and from 1e16.</summary>
    public static string FormatFloat(double d)
    {
        if (double.IsNaN(d))
            return "nan";
        if (double.IsInfinity(d))
            return d > 0 ? "inf" : "-inf";
        if (d == 0)
            return double.IsNegative(d) ? "-0.0" : "0.0";
        // "R" gives the shortest round-trip digits but in .NET's choice of notation, so take it apart and re-lay it.
        var shortest = d.ToString("R", CultureInfo.InvariantCulture);
        var negative = shortest.StartsWith('-');
        var body = negative ? shortest[1..] : shortest;
        var exponent = 0;
        var ePos = body.IndexOfAny(['E', 'e']);
        if (ePos >= 0)
        {
            exponent = int.Parse(body[(ePos + 1)..], CultureInfo.InvariantCulture);
            body = body[..ePos];
        }
        var dot = body.IndexOf('.');
        var intPart = dot >= 0 ? body[..dot] : body;
        var fracPart = dot >= 0 ? body[(dot + 1)..] : "";
        var allDigits = intPart + fracPart;
        var significant = allDigits.TrimStart('0');
        // Decimal exponent of the first significant digit.
        var pointExp = intPart.Length - (allDigits.Length - significant.Length) - 1 + exponent;
        var digits = significant.TrimEnd('0');
        string text;
        if (pointExp is >= -4 and < 16)
        {
            if (pointExp < 0)
                text = "0." + new string('0', -pointExp - 1) + digits;
            else if (digits.Length <= pointExp + 1)
                text = digits + new string('0', pointExp + 1 - digits.Length) + ".0";
            else
                text = digits[..(pointExp + 1)] + "." + digits[(pointExp + 1)..];
        }
        else
        {
            var mantissa = digits.Length == 1 ? digits : digits[0] + "." + digits[1..];
            text = mantissa + "e" + (pointExp < 0 ? "-" : "+") + Math.Abs(pointExp).ToString("00", CultureInfo.InvariantCulture);
        }
        return negative ? "-" + text : text;
    }

    public static IReadOnlyList<object?> Iterate(object? value) => value switch
    {
        List<object?> list => list,
        string s => s.EnumerateRunes().Select(r => (object?)r.ToString()).ToList(),
        OrderedDictionary<object, object?> dict => dict.Keys.Cast<object?>().ToList(),
        Undefined => [],
        _ => throw new TemplateRuntimeException($"{TypeName(value)} is not iterable"),
    };

    public static long Length(object? value) => value switch
    {
        string s => s.Length,
        List<object?> list => list.Count,
        OrderedDictionary<object, object?> dict => dict.Count,
        Undefined => 0,
        _ => throw new TemplateRuntimeException($"object of type '{TypeName(value)}' has no len()"),
    };

    /// <summary>Converts a caller's .NET value (or JSON) to a template value, deeply.</summary>
    public static object? FromClr(object? value, int depth = 0)
    {
        if (depth > 64)
            throw new ArgumentException("template variable nests deeper than 64 levels");
        switch (value)
        {
            case null: return null;
            case string or bool or long or double: return value;
            case int or short or sbyte or byte or ushort or uint: return Convert.ToInt64(value, CultureInfo.InvariantCulture);
            case ulong u: return u <= long.MaxValue ? (long)u : (double)u;
            case float or decimal: return Convert.ToDouble(value, CultureInfo.InvariantCulture);
            case ChatMessage m: return FromClr(TemplateValues.Message(m, text => text), depth);
            case JsonElement json: return FromJson(json, depth);
            case IDictionary<string, object?> map: return FromPairs(map, depth);
            case IReadOnlyDictionary<string, object?> map: return FromPairs(map, depth);
            case IDictionary legacy:
                var dict = NewDict();
                foreach (DictionaryEntry entry in legacy)
                    dict[FromClr(entry.Key, depth + 1) ?? throw new ArgumentException("dict keys cannot be null")] = FromClr(entry.Value, depth + 1);
                return dict;
            case IEnumerable items:
                var list = new List<object?>();
                foreach (var item in items)
                    list.Add(FromClr(item, depth + 1));
                return list;
            default:
                throw new ArgumentException($"a template variable cannot be a {value.GetType().Name}");
        }
    }

    private static OrderedDictionary<object, object?> FromPairs(IEnumerable<KeyValuePair<string, object?>> pairs, int depth)
    {
        var dict = NewDict();
        foreach (var (key, item) in pairs)
            dict[key] = FromClr(item, depth + 1);
        return dict;
    }

    private static object? FromJson(JsonElement json, int depth)
    {
        switch (json.ValueKind)
        {
            case JsonValueKind.Object:
                var dict = NewDict();
                foreach (var property in json.EnumerateObject())
                    dict[property.Name] = FromClr(property.Value, depth + 1);
                return dict;
            case JsonValueKind.Array:
                return json.EnumerateArray().Select(e => FromClr(e, depth + 1)).ToList();
            case JsonValueKind.String: return json.GetString();
            case JsonValueKind.Number: return json.TryGetInt64(out var l) ? l : (object)json.GetDouble();
            case JsonValueKind.True: return true;
            case JsonValueKind.False: return false;
            default: return null;
        }
    }
}
