using System.Globalization;
using System.Runtime.ExceptionServices;
using System.Text;
using System.Text.RegularExpressions;

namespace Velo.Text.ChatTemplates;

/// <summary>The Jinja filters chat templates use, with Jinja's argument names and defaults.</summary>
internal static partial class Filters
{
    private delegate object? Filter(object? value, CallArguments args, Renderer renderer);

    private static readonly Dictionary<string, Filter> All = new(StringComparer.Ordinal)
    {
        ["trim"] = (v, a, _) => Members.Strip(Members.RequireString(v, "trim"), a.Get(0, "chars"), true, true),
        ["length"] = (v, _, _) => Py.Length(v),
        ["count"] = (v, _, _) => Py.Length(v),
        ["tojson"] = (v, a, r) => r.CheckLength(Json.Dumps(v, a.Get(0, "indent"), r.Limits.MaxStringLength)),
        ["upper"] = (v, _, _) => Members.RequireString(v, "upper").ToUpperInvariant(),
        ["lower"] = (v, _, _) => Members.RequireString(v, "lower").ToLowerInvariant(),
        ["title"] = (v, _, _) => Title(Members.RequireString(v, "title")),
        ["capitalize"] = (v, _, _) => Members.RequireString(v, "capitalize") is var s && s.Length > 0 ? char.ToUpperInvariant(s[0]) + s[1..].ToLowerInvariant() : "",
        ["first"] = (v, _, _) => Py.Iterate(v) is { Count: > 0 } items ? items[0] : new Undefined("first: the sequence is empty"),
        ["last"] = (v, _, _) => Py.Iterate(v) is { Count: > 0 } items ? items[^1] : new Undefined("last: the sequence is empty"),
        ["default"] = Default,
        ["d"] = Default,
        ["join"] = Join,
        ["replace"] = (v, a, r) => Members.Replace(Py.ToStr(v), Py.ToStr(a.Get(0, "old")), Py.ToStr(a.Get(1, "new")), a.Get(2, "count"), r),
        ["items"] = (v, _, _) => v switch
        {
            Undefined => new List<object?>(),
            OrderedDictionary<object, object?> dict => dict.Select(kv => (object?)new PyTuple([kv.Key, kv.Value])).ToList(),
            _ => throw new TemplateRuntimeException($"items: expected a mapping, got {Py.TypeName(v)}"),
        },
        ["list"] = (v, _, _) => Py.Iterate(v).ToList(),
        ["string"] = (v, _, _) => Py.ToStr(v),
        ["safe"] = (v, _, _) => v,
        ["int"] = ToInt,
        ["float"] = ToFloat,
        ["abs"] = (v, _, _) => v switch
        {
            long l => (object)checked(Math.Abs(l)),
            double d => Math.Abs(d),
            bool b => b ? 1L : 0L,
            _ => throw new TemplateRuntimeException($"abs: expected a number, got {Py.TypeName(v)}"),
        },
        ["reverse"] = (v, _, _) => v is string s ? new string(s.Reverse().ToArray()) : Py.Iterate(v).Reverse().ToList(),
        ["unique"] = (v, _, _) => Py.Iterate(v).Aggregate(new List<object?>(), (seen, item) =>
        {
            if (!seen.Any(x => Py.AreEqual(x, item)))
                seen.Add(item);
            return seen;
        }),
        ["sort"] = Sort,
        ["indent"] = Indent,
        ["select"] = (v, a, r) => SelectOrReject(v, a, r, attribute: false, keep: true),
        ["reject"] = (v, a, r) => SelectOrReject(v, a, r, attribute: false, keep: false),
        ["selectattr"] = (v, a, r) => SelectOrReject(v, a, r, attribute: true, keep: true),
        ["rejectattr"] = (v, a, r) => SelectOrReject(v, a, r, attribute: true, keep: false),
        ["map"] = Map,
    };

    public static bool IsKnown(string name) => All.ContainsKey(name);

    public static object? Apply(string name, object? value, CallArguments args, Renderer renderer) => All[name](value, args, renderer);

    private static object? Default(object? value, CallArguments args, Renderer renderer)
    {
        var onFalsy = Py.IsTruthy(args.Get(1, "boolean", false));
        return value is Undefined || (onFalsy && !Py.IsTruthy(value)) ? args.Get(0, "default_value", "") : value;
    }

    private static object? Join(object? value, CallArguments args, Renderer renderer)
    {
        var separator = Py.ToStr(args.Get(0, "d", ""));
        var items = Py.Iterate(value);
        if (args.Get(1, "attribute") is { } attribute)
            items = items.Select(item => Members.GetPath(item, Py.ToStr(attribute))).ToList();
        return renderer.CheckLength(string.Join(separator, items.Select(Py.ToStr)));
    }

    private static object? ToInt(object? value, CallArguments args, Renderer renderer)
    {
        var fallback = args.Get(0, "default", 0L);
        return value switch
        {
            long l => l,
            bool b => b ? 1L : 0L,
            double d when double.IsFinite(d) && Math.Abs(d) < 9e18 => (long)Math.Truncate(d),
            string s when long.TryParse(s.Trim().Replace("_", ""), NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out var l) => l,
            string s when double.TryParse(s.Trim(), NumberStyles.Float, CultureInfo.InvariantCulture, out var d) && Math.Abs(d) < 9e18 => (long)Math.Truncate(d),
            _ => fallback,
        };
    }

    private static object? ToFloat(object? value, CallArguments args, Renderer renderer)
    {
        var fallback = args.Get(0, "default", 0.0);
        return value switch
        {
            long or double or bool => Py.ToDouble(value),
            string s when double.TryParse(s.Trim(), NumberStyles.Float, CultureInfo.InvariantCulture, out var d) => d,
            _ => fallback,
        };
    }

    private static object? Sort(object? value, CallArguments args, Renderer renderer)
    {
        var descending = Py.IsTruthy(args.Get(0, "reverse", false));
        var caseSensitive = Py.IsTruthy(args.Get(1, "case_sensitive", false));
        var attribute = args.Get(2, "attribute");
        object? Key(object? item)
        {
            var key = attribute == null ? item : Members.GetPath(item, Py.ToStr(attribute));
            return !caseSensitive && key is string s ? s.ToLowerInvariant() : key;
        }
        var items = Py.Iterate(value).ToList();
        // A stable sort, as Python's is: OrderBy keeps equal items in their original order.
        var sorted = descending
            ? items.OrderByDescending(Key, Comparer<object?>.Create(Py.Compare))
            : items.OrderBy(Key, Comparer<object?>.Create(Py.Compare));
        try
        {
            return sorted.ToList();
        }
        catch (InvalidOperationException e) when (e.InnerException is TemplateRuntimeException incomparable)
        {
            // The sort wraps what the comparer throws; the template author needs the comparison error itself.
            ExceptionDispatchInfo.Throw(incomparable);
            throw;
        }
    }

    private static object? Indent(object? value, CallArguments args, Renderer renderer)
    {
        var width = args.Get(0, "width", 4L);
        var prefix = width is string w ? w : new string(' ', (int)Math.Clamp(width is long l ? l : 4, 0, 1000));
        var indentFirst = Py.IsTruthy(args.Get(1, "first", false));
        var indentBlank = Py.IsTruthy(args.Get(2, "blank", false));
        var lines = Members.RequireString(value, "indent").Split('\n');
        var sb = new StringBuilder();
        for (var i = 0; i < lines.Length; i++)
        {
            if (i > 0)
                sb.Append('\n');
            if ((i > 0 || indentFirst) && (indentBlank || lines[i].Length > 0))
                sb.Append(prefix);
            sb.Append(lines[i]);
        }
        return renderer.CheckLength(sb.ToString());
    }

    private static List<object?> SelectOrReject(object? value, CallArguments args, Renderer renderer, bool attribute, bool keep)
    {
        var offset = attribute ? 1 : 0;
        var path = attribute ? Py.ToStr(args.Get(0, "attribute")) : null;
        var testName = args.Positional.Count > offset ? Members.RequireString(args.Positional[offset], "select") : null;
        if (testName != null && !Tests.IsKnown(testName))
            throw new TemplateRuntimeException($"unknown test '{testName}'");
        var testArgs = new CallArguments(args.Positional.Skip(offset + 1).ToList(), new Dictionary<string, object?>());
        var result = new List<object?>();
        foreach (var item in Py.Iterate(value))
        {
            renderer.Tick();
            var subject = path == null ? item : Members.GetPath(item, path);
            var passes = testName == null ? Py.IsTruthy(subject) : Tests.Apply(testName, subject, testArgs);
            if (passes == keep)
                result.Add(item);
        }
        return result;
    }

    private static List<object?> Map(object? value, CallArguments args, Renderer renderer)
    {
        var items = Py.Iterate(value);
        if (args.Named.TryGetValue("attribute", out var attribute))
        {
            var hasDefault = args.Named.TryGetValue("default", out var fallback);
            return items.Select(item =>
            {
                var mapped = Members.GetPath(item, Py.ToStr(attribute));
                return hasDefault && mapped is Undefined ? fallback : mapped;
            }).ToList();
        }
        if (args.Positional.Count == 0)
            throw new TemplateRuntimeException("map needs a filter name or attribute=");
        var filter = Members.RequireString(args.Positional[0], "map");
        if (!IsKnown(filter))
            throw new TemplateRuntimeException($"unknown filter '{filter}'");
        var filterArgs = new CallArguments(args.Positional.Skip(1).ToList(), args.Named);
        return items.Select(item => Apply(filter, item, filterArgs, renderer)).ToList();
    }

    /// <summary>Jinja's <c>title</c> filter, which starts words after whitespace, hyphens and opening brackets.</summary>
    private static string Title(string s) => string.Concat(
        WordBoundary().Split(s).Where(part => part.Length > 0).Select(part => char.ToUpperInvariant(part[0]) + part[1..].ToLowerInvariant()));

    [GeneratedRegex(@"([-\s({\[<]+)")]
    private static partial Regex WordBoundary();
}
