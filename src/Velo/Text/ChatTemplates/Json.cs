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
    /// <summary>
    /// <paramref name="maxLength"/> is checked as the text grows, not after: a value that holds one list many times
    /// over (<c>[x, x]</c> nested a few dozen times) would otherwise expand to more text than memory holds.
    /// </summary>
    public static string Dumps(object? value, object? indent, int maxLength)
    {
        var indentText = indent switch
        {
            null => null,
            long n => new string(' ', (int)Math.Clamp(n, 0, 64)),
            string s => s,
            _ => throw new TemplateRuntimeException($"tojson: indent must be an integer or string, got {Py.TypeName(indent)}"),
        };
        var writer = new Writer(indentText, maxLength);
        writer.Write(value, 0);
        return writer.ToString();
    }

    private sealed class Writer(string? indent, int maxLength)
    {
        private readonly StringBuilder _sb = new();

        public override string ToString() => _sb.ToString();

        public void Write(object? value, int depth)
        {
            Py.EnterValueLevel(depth, "tojson: cannot serialize");
            CheckLength(0);
            switch (value)
            {
                case null: _sb.Append("null"); break;
                case bool b: _sb.Append(b ? "true" : "false"); break;
                case long l: _sb.Append(l.ToString(CultureInfo.InvariantCulture)); break;
                case double d: _sb.Append(FormatNumber(d)); break;
                case string s: WriteString(_sb, s); break;
                case List<object?> list:
                    WriteContainer('[', ']', list, depth, Write);
                    break;
                case OrderedDictionary<object, object?> dict:
                    WriteContainer('{', '}', dict.ToList(), depth, (pair, level) =>
                    {
                        WriteString(_sb, KeyText(pair.Key));
                        _sb.Append(": ");
                        Write(pair.Value, level);
                    });
                    break;
                default:
                    throw new TemplateRuntimeException($"Object of type {Py.TypeName(value)} is not JSON serializable");
            }
        }

        private void WriteContainer<T>(char open, char close, IReadOnlyList<T> items, int depth, Action<T, int> writeItem)
        {
            _sb.Append(open);
            if (items.Count == 0)
            {
                _sb.Append(close);
                return;
            }
            for (var i = 0; i < items.Count; i++)
            {
                if (i > 0)
                    _sb.Append(indent == null ? ", " : ",");
                NewLine(depth + 1);
                writeItem(items[i], depth + 1);
            }
            NewLine(depth);
            _sb.Append(close);
        }

        private void NewLine(int level)
        {
            if (indent == null)
                return;
            CheckLength((long)indent.Length * level);
            _sb.Append('\n').Insert(_sb.Length, indent, level);
        }

        private void CheckLength(long adding)
        {
            if (_sb.Length + adding > maxLength)
                throw new TemplateLimitException($"template built a string longer than {maxLength} characters");
        }
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
