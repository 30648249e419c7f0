using System.Diagnostics;
using System.Globalization;
using System.Text;

namespace Velo.Text.ChatTemplates;

/// <summary>Attribute and item lookup, slicing, and the Python str/dict methods templates call.</summary>
internal static class Members
{
    private static readonly HashSet<string> StringMethods =
    [
        "strip", "lstrip", "rstrip", "split", "rsplit", "splitlines", "startswith", "endswith", "upper", "lower",
        "title", "capitalize", "replace", "find", "rfind", "count", "join", "isdigit", "isspace", "isalpha", "isalnum",
    ];

    private static readonly HashSet<string> DictMethods = ["items", "keys", "values", "get"];

    /// <summary><c>obj.name</c>: Python attribute first, then item, as Jinja's <c>getattr</c> does.</summary>
    public static object? GetAttribute(object? target, string name)
    {
        switch (target)
        {
            case Undefined undefined:
                throw new TemplateRuntimeException(undefined.Description);
            case OrderedDictionary<object, object?> dict:
                if (DictMethods.Contains(name))
                    return new BoundMethod(dict, name);
                return dict.TryGetValue(name, out var value) ? value : Missing(target, name);
            case string s when StringMethods.Contains(name):
                return new BoundMethod(s, name);
            case Namespace ns:
                return ns.Attributes.TryGetValue(name, out var attribute) ? attribute : Missing(target, name);
            case LoopContext loop:
                return loop.Get(name);
            default:
                return Missing(target, name);
        }
    }

    /// <summary><c>obj[key]</c>: item first, then attribute for string keys, as Jinja's <c>getitem</c> does.</summary>
    public static object? GetItem(object? target, object? key)
    {
        switch (target)
        {
            case Undefined undefined:
                throw new TemplateRuntimeException(undefined.Description);
            case OrderedDictionary<object, object?> dict when key != null && dict.TryGetValue(key, out var value):
                return value;
            case List<object?> list when key is long or bool:
                return ElementAt(list.Count, key, i => list[i]) ?? Missing(target, key);
            case string s when key is long or bool:
                return ElementAt(s.Length, key, i => s[i].ToString()) ?? Missing(target, key);
        }
        return key is string name ? GetAttribute(target, name) : Missing(target, key);
    }

    private static object? ElementAt(int count, object key, Func<int, object?> at)
    {
        var index = key is bool b ? (b ? 1 : 0) : (long)key;
        if (index < 0)
            index += count;
        return index >= 0 && index < count ? at((int)index) : null;
    }

    private static Undefined Missing(object? target, object? key) =>
        new($"'{Py.TypeName(target)} object' has no attribute {Py.Repr(key)}");

    /// <summary>Python's <c>seq[start:stop:step]</c> on lists and strings.</summary>
    public static object? Slice(object? target, object? start, object? stop, object? step)
    {
        var length = target switch
        {
            List<object?> list => list.Count,
            string s => s.Length,
            Undefined u => throw new TemplateRuntimeException(u.Description),
            _ => throw new TemplateRuntimeException($"'{Py.TypeName(target)}' object cannot be sliced"),
        };
        var stride = step == null ? 1 : SliceBound(step);
        if (stride == 0)
            throw new TemplateRuntimeException("slice step cannot be zero");
        int Clamp(object? bound, int whenNull)
        {
            if (bound == null)
                return whenNull;
            var i = SliceBound(bound);
            if (i < 0)
                i += length;
            return stride > 0 ? (int)Math.Clamp(i, 0, length) : (int)Math.Clamp(i, -1, length - 1);
        }
        var from = Clamp(start, stride > 0 ? 0 : length - 1);
        var to = Clamp(stop, stride > 0 ? length : -1);
        var indices = new List<int>();
        for (var i = from; stride > 0 ? i < to : i > to; i += (int)Math.Clamp(stride, int.MinValue / 2, int.MaxValue / 2))
            indices.Add(i);
        if (target is string text)
        {
            var sb = new StringBuilder(indices.Count);
            foreach (var i in indices)
                sb.Append(text[i]);
            return sb.ToString();
        }
        var source = (List<object?>)target!;
        return indices.Select(i => source[i]).ToList();
    }

    private static long SliceBound(object bound) => bound switch
    {
        long l => l,
        bool b => b ? 1 : 0,
        _ => throw new TemplateRuntimeException($"slice indices must be integers or none, not {Py.TypeName(bound)}"),
    };

    public static object? CallMethod(BoundMethod method, CallArguments args, Renderer renderer) => method.Target switch
    {
        string s => CallStringMethod(s, method.Name, args, renderer),
        OrderedDictionary<object, object?> dict => CallDictMethod(dict, method.Name, args),
        _ => throw new UnreachableException(method.Name),
    };

    private static object? CallDictMethod(OrderedDictionary<object, object?> dict, string name, CallArguments args) => name switch
    {
        "items" => dict.Select(kv => (object?)new PyTuple([kv.Key, kv.Value])).ToList(),
        "keys" => dict.Keys.Cast<object?>().ToList(),
        "values" => dict.Values.ToList(),
        _ => args.Get(0, "key") is { } key && dict.TryGetValue(key, out var value) ? value : args.Get(1, "default"),
    };

    private static object? CallStringMethod(string s, string name, CallArguments args, Renderer renderer)
    {
        switch (name)
        {
            case "strip": return Strip(s, args.Get(0, "chars"), true, true);
            case "lstrip": return Strip(s, args.Get(0, "chars"), true, false);
            case "rstrip": return Strip(s, args.Get(0, "chars"), false, true);
            case "split": return Split(s, args.Get(0, "sep"), MaxSplit(args), fromRight: false);
            case "rsplit": return Split(s, args.Get(0, "sep"), MaxSplit(args), fromRight: true);
            case "splitlines": return s.Split('\n').Select(line => (object?)line.TrimEnd('\r')).SkipLast(s.EndsWith('\n') ? 1 : 0).ToList();
            case "startswith": return Affixes(args.Get(0, "prefix")).Any(p => s.StartsWith(p, StringComparison.Ordinal));
            case "endswith": return Affixes(args.Get(0, "suffix")).Any(p => s.EndsWith(p, StringComparison.Ordinal));
            case "upper": return s.ToUpperInvariant();
            case "lower": return s.ToLowerInvariant();
            case "title": return PythonTitle(s);
            case "capitalize": return s.Length == 0 ? s : char.ToUpperInvariant(s[0]) + s[1..].ToLowerInvariant();
            case "replace": return Replace(s, RequireString(args.Get(0, "old"), "replace"), RequireString(args.Get(1, "new"), "replace"), args.Get(2, "count"), renderer);
            case "find": return (long)s.IndexOf(RequireString(args.Get(0, "sub"), "find"), StringComparison.Ordinal);
            case "rfind": return (long)s.LastIndexOf(RequireString(args.Get(0, "sub"), "rfind"), StringComparison.Ordinal);
            case "count": return CountOccurrences(s, RequireString(args.Get(0, "sub"), "count"));
            case "join": return renderer.CheckLength(string.Join(s, Py.Iterate(args.Get(0, "iterable")).Select(item => RequireString(item, "join"))));
            case "isdigit": return s.Length > 0 && s.All(char.IsDigit);
            case "isspace": return s.Length > 0 && s.All(char.IsWhiteSpace);
            case "isalpha": return s.Length > 0 && s.All(char.IsLetter);
            default: return s.Length > 0 && s.All(char.IsLetterOrDigit);
        }
    }

    private static long MaxSplit(CallArguments args) => args.Get(1, "maxsplit", -1L) is long l ? l : -1;

    public static string RequireString(object? value, string context) => value switch
    {
        string s => s,
        Undefined u => throw new TemplateRuntimeException(u.Description),
        _ => throw new TemplateRuntimeException($"{context} expects a string, got {Py.TypeName(value)}"),
    };

    private static IEnumerable<string> Affixes(object? value) =>
        value is List<object?> options ? options.Select(o => RequireString(o, "startswith/endswith")) : [RequireString(value, "startswith/endswith")];

    public static string Strip(string s, object? chars, bool left, bool right)
    {
        if (chars is null or Undefined)
            return left && right ? s.Trim() : left ? s.TrimStart() : s.TrimEnd();
        var set = RequireString(chars, "strip").ToCharArray();
        return left && right ? s.Trim(set) : left ? s.TrimStart(set) : s.TrimEnd(set);
    }

    private static List<object?> Split(string s, object? separator, long maxSplit, bool fromRight)
    {
        if (separator is null or Undefined)
        {
            // Python's whitespace split: runs of whitespace separate, and leading or trailing ones give no empty parts.
            var words = s.Split((char[]?)null, StringSplitOptions.RemoveEmptyEntries);
            if (maxSplit < 0 || words.Length <= maxSplit + 1)
                return words.Cast<object?>().ToList();
            return SplitWhitespaceLimited(s, maxSplit, fromRight);
        }
        var sep = RequireString(separator, "split");
        if (sep.Length == 0)
            throw new TemplateRuntimeException("split: empty separator");
        var parts = s.Split(sep);
        if (maxSplit < 0 || parts.Length <= maxSplit + 1)
            return parts.Cast<object?>().ToList();
        var keep = (int)maxSplit;
        return fromRight
            ? [string.Join(sep, parts[..^keep]), .. parts[^keep..]]
            : [.. parts[..keep], string.Join(sep, parts[keep..])];
    }

    private static List<object?> SplitWhitespaceLimited(string s, long maxSplit, bool fromRight)
    {
        var result = new List<object?>();
        var text = fromRight ? s.TrimEnd() : s.TrimStart();
        for (var i = 0; i < maxSplit; i++)
        {
            var at = fromRight ? text.LastIndexOfAny(WhitespaceChars) : text.IndexOfAny(WhitespaceChars);
            if (at < 0)
                break;
            result.Add(fromRight ? text[(at + 1)..] : text[..at]);
            text = fromRight ? text[..at].TrimEnd() : text[(at + 1)..].TrimStart();
        }
        result.Add(text);
        if (fromRight)
            result.Reverse();
        return result;
    }

    private static readonly char[] WhitespaceChars = [' ', '\t', '\n', '\r', '\v', '\f'];

    public static string Replace(string s, string old, string replacement, object? count, Renderer renderer)
    {
        var limit = count is long l ? l : -1;
        if (limit < 0)
            return old.Length == 0 && s.Length > 0
                ? renderer.CheckLength(replacement + string.Join(replacement, s.Select(c => c.ToString())) + replacement)
                : renderer.CheckLength(old.Length == 0 ? replacement : s.Replace(old, replacement, StringComparison.Ordinal));
        var sb = new StringBuilder();
        var pos = 0;
        for (var done = 0L; done < limit && old.Length > 0; done++)
        {
            var at = s.IndexOf(old, pos, StringComparison.Ordinal);
            if (at < 0)
                break;
            sb.Append(s, pos, at - pos).Append(replacement);
            pos = at + old.Length;
        }
        return renderer.CheckLength(sb.Append(s, pos, s.Length - pos).ToString());
    }

    private static long CountOccurrences(string s, string sub)
    {
        if (sub.Length == 0)
            return s.Length + 1;
        long count = 0;
        for (var at = s.IndexOf(sub, StringComparison.Ordinal); at >= 0; at = s.IndexOf(sub, at + sub.Length, StringComparison.Ordinal))
            count++;
        return count;
    }

    /// <summary>Python's <c>str.title()</c>: a letter after a non-letter starts a word.</summary>
    private static string PythonTitle(string s)
    {
        var sb = new StringBuilder(s.Length);
        var previousIsLetter = false;
        foreach (var c in s)
        {
            sb.Append(previousIsLetter ? char.ToLowerInvariant(c) : char.ToUpperInvariant(c));
            previousIsLetter = char.IsLetter(c);
        }
        return sb.ToString();
    }

    /// <summary>Follows a dotted path such as <c>function.name</c> or <c>0</c>, as Jinja's attribute arguments do.</summary>
    public static object? GetPath(object? target, string path)
    {
        foreach (var part in path.Split('.'))
        {
            if (target is Undefined)
                return target;
            target = long.TryParse(part, NumberStyles.None, CultureInfo.InvariantCulture, out var index)
                ? GetItem(target, index)
                : GetItem(target, part);
        }
        return target;
    }
}
