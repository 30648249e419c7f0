using System.Globalization;
using System.Text;

namespace Velo.Text.ChatTemplates;

/// <summary>
/// The <c>tojson</c> filter as transformers defines it: <c>json.dumps(x, ensure_ascii=False, indent=indent)</c>, so keys
/// keep their order and the separators are Python's (<c>", "</c> and <c>": "</c>, or <c>","</c> at line ends when
/// indenting), not Jinja's HTML-safe default.
/// </summary>
/// <remarks>
/// Written by hand rather than with System.Text.Json because the bytes must equal Python's, which the model saw in
/// training: System.Text.Json has no ", " separators, and even its relaxed encoder escapes emoji, U+2028 and other
/// characters that <c>ensure_ascii=False</c> leaves alone, and writes upper-case hex escapes.
/// </remarks>
internal static class Json
{
    private const int MaxDepth = 64;

    public static string Dumps(object? value, object? indent)
    {
        var indentText = indent switch
        {
            null => null,
            long n => new string(' ', (int)Math.Clamp(n, 0, 64)),
            string s => s,
            _ => throw new TemplateRuntimeException($"tojson: indent must be an integer or string, got {Py.TypeName(indent)}"),
        };
        var sb = new StringBuilder();
        Write(sb, value, indentText, 0);
        return sb.ToString();
    }

    private static void Write(StringBuilder sb, object? value, string? indent, int depth)
    {
        if (depth > MaxDepth)
            throw new TemplateRuntimeException($"tojson: value nests deeper than {MaxDepth} levels");
        switch (value)
        {
            case null: sb.Append("null"); break;
            case bool b: sb.Append(b ? "true" : "false"); break;
            case long l: sb.Append(l.ToString(CultureInfo.InvariantCulture)); break;
            case double d: sb.Append(FormatNumber(d)); break;
            case string s: WriteString(sb, s); break;
            case List<object?> list:
                WriteContainer(sb, '[', ']', list, indent, depth, (item, level) => Write(sb, item, indent, level));
                break;
            case OrderedDictionary<object, object?> dict:
                WriteContainer(sb, '{', '}', dict.ToList(), indent, depth, (pair, level) =>
                {
                    WriteString(sb, KeyText(pair.Key));
                    sb.Append(": ");
                    Write(sb, pair.Value, indent, level);
                });
                break;
            default:
                throw new TemplateRuntimeException($"Object of type {Py.TypeName(value)} is not JSON serializable");
        }
    }

    private static void WriteContainer<T>(StringBuilder sb, char open, char close, IReadOnlyList<T> items, string? indent, int depth, Action<T, int> writeItem)
    {
        sb.Append(open);
        if (items.Count == 0)
        {
            sb.Append(close);
            return;
        }
        for (var i = 0; i < items.Count; i++)
        {
            if (i > 0)
                sb.Append(indent == null ? ", " : ",");
            if (indent != null)
                sb.Append('\n').Insert(sb.Length, indent, depth + 1);
            writeItem(items[i], depth + 1);
        }
        if (indent != null)
            sb.Append('\n').Insert(sb.Length, indent, depth);
        sb.Append(close);
    }

    /// <summary>JSON object keys must be strings; Python's json converts numbers, booleans and None to their JSON text.</summary>
    private static string KeyText(object key) => key switch
    {
        string s => s,
        bool b => b ? "true" : "false",
        long l => l.ToString(CultureInfo.InvariantCulture),
        double d => FormatNumber(d),
        _ => throw new TemplateRuntimeException($"keys must be str, int, float or bool, not {Py.TypeName(key)}"),
    };

    private static string FormatNumber(double d) =>
        double.IsNaN(d) ? "NaN" : double.IsInfinity(d) ? (d > 0 ? "Infinity" : "-Infinity") : Py.FormatFloat(d);

    /// <summary>Python's escaping with <c>ensure_ascii=False</c>: quotes, backslashes and control characters only.</summary>
    private static void WriteString(StringBuilder sb, string s)
    {
        sb.Append('"');
        foreach (var c in s)
        {
            switch (c)
            {
                case '"': sb.Append("\\\""); break;
                case '\\': sb.Append("\\\\"); break;
                case '\n': sb.Append("\\n"); break;
                case '\r': sb.Append("\\r"); break;
                case '\t': sb.Append("\\t"); break;
                case '\b': sb.Append("\\b"); break;
                case '\f': sb.Append("\\f"); break;
                case < ' ': sb.Append("\\u").Append(((int)c).ToString("x4", CultureInfo.InvariantCulture)); break;
                default: sb.Append(c); break;
            }
        }
        sb.Append('"');
    }
}
