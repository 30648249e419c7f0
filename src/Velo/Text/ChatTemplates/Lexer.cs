using System.Globalization;
using System.Text;

namespace Velo.Text.ChatTemplates;

internal enum TokenKind
{
    Text,
    VariableBegin,
    VariableEnd,
    BlockBegin,
    BlockEnd,
    Name,
    String,
    Integer,
    Float,
    Operator,
    End,
}

internal readonly record struct SourcePosition(int Line, int Column);

/// <summary><see cref="Value"/> holds the text of names, operators and template data, or the parsed literal.</summary>
internal readonly record struct Token(TokenKind Kind, object? Value, SourcePosition Position)
{
    public string Text => Value as string ?? "";

    public bool IsOperator(string op) => Kind == TokenKind.Operator && Text == op;

    public bool IsName(string name) => Kind == TokenKind.Name && Text == name;

    public override string ToString() => Kind switch
    {
        TokenKind.End => "end of template",
        TokenKind.VariableEnd => "'}}'",
        TokenKind.BlockEnd => "'%}'",
        TokenKind.String => "string literal",
        TokenKind.Text => "template text",
        _ => $"'{Value}'",
    };
}

/// <summary>
/// Splits a template into text and tag tokens with the whitespace rules of the Jinja environment that Hugging Face's
/// <c>apply_chat_template</c> builds: <c>trim_blocks</c> and <c>lstrip_blocks</c> on, <c>keep_trailing_newline</c>
/// off, and <c>-</c>/<c>+</c> modifiers on the tag delimiters.
/// </summary>
internal sealed class Lexer
{
    private static readonly string[] Operators =
        ["//", "**", "==", "!=", ">=", "<=", "+", "-", "*", "/", "%", "~", "<", ">", "=", ".", ",", ":", "|", "(", ")", "[", "]", "{", "}"];

    private readonly string _source;
    private readonly int[] _lineStarts;
    private readonly List<Token> _tokens = [];
    private int _pos;

    private Lexer(string source)
    {
        source = source.Replace("\r\n", "\n").Replace('\r', '\n');
        // Jinja drops one trailing newline unless keep_trailing_newline is set, which transformers does not set.
        if (source.EndsWith('\n'))
            source = source[..^1];
        _source = source;
        var starts = new List<int> { 0 };
        for (var i = 0; i < source.Length; i++)
            if (source[i] == '\n')
                starts.Add(i + 1);
        _lineStarts = [.. starts];
    }

    public static List<Token> Tokenize(string source)
    {
        var lexer = new Lexer(source);
        lexer.Run();
        return lexer._tokens;
    }

    private SourcePosition PositionOf(int offset)
    {
        var line = Array.BinarySearch(_lineStarts, offset);
        if (line < 0)
            line = ~line - 1;
        return new SourcePosition(line + 1, offset - _lineStarts[line] + 1);
    }

    private ChatTemplateException Error(string message, int offset)
    {
        var p = PositionOf(offset);
        return new ChatTemplateException(ChatTemplateErrorKind.Syntax, message, p.Line, p.Column);
    }

    private void Run()
    {
        while (_pos < _source.Length)
        {
            var open = FindTagStart(_pos);
            var text = _source[_pos..(open < 0 ? _source.Length : open)];
            if (open < 0)
            {
                AddText(text, _pos);
                break;
            }

            var kind = _source[open + 1];
            var modifier = open + 2 < _source.Length ? _source[open + 2] : '\0';
            if (modifier == '-')
                text = text.TrimEnd();
            else if (kind != '{' && modifier != '+')
                text = StripIndentBeforeTag(text, _pos);
            AddText(text, _pos);

            _pos = open + 2 + (modifier is '-' or '+' ? 1 : 0);
            switch (kind)
            {
                case '#': SkipComment(open); break;
                case '{': LexTag(open, TokenKind.VariableBegin, TokenKind.VariableEnd, '}'); break;
                default: LexTag(open, TokenKind.BlockBegin, TokenKind.BlockEnd, '%'); break;
            }
        }
        _tokens.Add(new Token(TokenKind.End, null, PositionOf(_source.Length)));
    }

    private int FindTagStart(int from)
    {
        for (var i = _source.IndexOf('{', from); i >= 0 && i + 1 < _source.Length; i = _source.IndexOf('{', i + 1))
            if (_source[i + 1] is '{' or '%' or '#')
                return i;
        return -1;
    }

    /// <summary>lstrip_blocks: spaces and tabs between the start of a line and a block or comment tag go.</summary>
    private string StripIndentBeforeTag(string text, int textStart)
    {
        var lineStart = text.LastIndexOf('\n') + 1;
        var atLineStart = lineStart > 0 || textStart == 0 || _source[textStart - 1] == '\n';
        if (!atLineStart)
            return text;
        for (var i = lineStart; i < text.Length; i++)
            if (text[i] is not (' ' or '\t'))
                return text;
        return text[..lineStart];
    }

    private void AddText(string text, int offset)
    {
        if (text.Length > 0)
            _tokens.Add(new Token(TokenKind.Text, text, PositionOf(offset)));
    }

    private void SkipComment(int open)
    {
        var close = _source.IndexOf("#}", _pos, StringComparison.Ordinal);
        if (close < 0)
            throw Error("unterminated comment: '{#' has no matching '#}'", open);
        var before = close > _pos ? _source[close - 1] : '\0';
        _pos = close + 2;
        AfterTagEnd(before, trimBlocks: true);
    }

    /// <summary>Handles what follows a closing delimiter: <c>-</c> eats all whitespace, otherwise trim_blocks eats one newline.</summary>
    private void AfterTagEnd(char modifier, bool trimBlocks)
    {
        if (modifier == '-')
        {
            while (_pos < _source.Length && char.IsWhiteSpace(_source[_pos]))
                _pos++;
        }
        else if (trimBlocks && modifier != '+' && _pos < _source.Length && _source[_pos] == '\n')
        {
            _pos++;
        }
    }

    private void LexTag(int open, TokenKind begin, TokenKind end, char closeChar)
    {
        _tokens.Add(new Token(begin, null, PositionOf(open)));
        var brackets = new Stack<(char Close, int Offset)>();
        while (true)
        {
            while (_pos < _source.Length && char.IsWhiteSpace(_source[_pos]))
                _pos++;
            if (_pos >= _source.Length)
                throw Error($"unterminated tag: '{{{closeChar}' has no matching '{closeChar}}}'", open);

            // Inside brackets a '}}' is two closing braces, as in Jinja, so dict literals can sit in {{ }}.
            if (brackets.Count == 0 && TryCloseTag(end, closeChar))
                return;

            var c = _source[_pos];
            var start = _pos;
            if (char.IsAsciiLetter(c) || c == '_')
            {
                while (_pos < _source.Length && (char.IsAsciiLetterOrDigit(_source[_pos]) || _source[_pos] == '_'))
                    _pos++;
                _tokens.Add(new Token(TokenKind.Name, _source[start.._pos], PositionOf(start)));
            }
            else if (char.IsAsciiDigit(c))
            {
                LexNumber();
            }
            else if (c is '\'' or '"')
            {
                _tokens.Add(new Token(TokenKind.String, LexString(), PositionOf(start)));
            }
            else
            {
                var op = Operators.FirstOrDefault(o => string.CompareOrdinal(_source, _pos, o, 0, o.Length) == 0)
                    ?? throw Error($"unexpected character '{c}' in tag", _pos);
                if (op is "(" or "[" or "{")
                    brackets.Push((op switch { "(" => ')', "[" => ']', _ => '}' }, _pos));
                else if (op is ")" or "]" or "}")
                {
                    if (brackets.Count == 0 || brackets.Peek().Close != op[0])
                        throw Error($"unexpected '{op}'", _pos);
                    brackets.Pop();
                }
                _pos += op.Length;
                _tokens.Add(new Token(TokenKind.Operator, op, PositionOf(start)));
            }
        }
    }

    private bool TryCloseTag(TokenKind end, char closeChar)
    {
        var closer = closeChar == '%' ? "%}" : "}}";
        var modifier = '\0';
        var at = _pos;
        if (_source[at] is '-' or '+' && string.CompareOrdinal(_source, at + 1, closer, 0, 2) == 0)
        {
            // '+%}' only exists for blocks; in '{{ a +}}' the plus is an operator and the parser reports it.
            if (_source[at] == '+' && closeChar != '%')
                return false;
            modifier = _source[at];
            at++;
        }
        if (string.CompareOrdinal(_source, at, closer, 0, 2) != 0)
            return false;
        _tokens.Add(new Token(end, null, PositionOf(_pos)));
        _pos = at + 2;
        AfterTagEnd(modifier, trimBlocks: closeChar == '%');
        return true;
    }

    private void LexNumber()
    {
        var start = _pos;
        while (_pos < _source.Length && (char.IsAsciiDigit(_source[_pos]) || _source[_pos] == '_'))
            _pos++;
        var isFloat = false;
        if (_pos + 1 < _source.Length && _source[_pos] == '.' && char.IsAsciiDigit(_source[_pos + 1]))
        {
            isFloat = true;
            _pos++;
            while (_pos < _source.Length && (char.IsAsciiDigit(_source[_pos]) || _source[_pos] == '_'))
                _pos++;
        }
        if (_pos < _source.Length && _source[_pos] is 'e' or 'E')
        {
            var save = _pos++;
            if (_pos < _source.Length && _source[_pos] is '+' or '-')
                _pos++;
            if (_pos < _source.Length && char.IsAsciiDigit(_source[_pos]))
            {
                isFloat = true;
                while (_pos < _source.Length && char.IsAsciiDigit(_source[_pos]))
                    _pos++;
            }
            else
            {
                _pos = save;
            }
        }
        var text = _source[start.._pos].Replace("_", "");
        if (isFloat)
        {
            _tokens.Add(new Token(TokenKind.Float, double.Parse(text, CultureInfo.InvariantCulture), PositionOf(start)));
        }
        else
        {
            if (!long.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out var value))
                throw Error($"integer literal {text} is too large", start);
            _tokens.Add(new Token(TokenKind.Integer, value, PositionOf(start)));
        }
    }

    /// <summary>Reads a quoted literal, decoding escapes the way Python's unicode-escape codec does, as Jinja does.</summary>
    private string LexString()
    {
        var open = _pos;
        var quote = _source[_pos++];
        var sb = new StringBuilder();
        while (true)
        {
            if (_pos >= _source.Length)
                throw Error("unterminated string literal", open);
            var c = _source[_pos++];
            if (c == quote)
                return sb.ToString();
            if (c != '\\')
            {
                sb.Append(c);
                continue;
            }
            if (_pos >= _source.Length)
                throw Error("unterminated string literal", open);
            var e = _source[_pos++];
            switch (e)
            {
                case 'n': sb.Append('\n'); break;
                case 't': sb.Append('\t'); break;
                case 'r': sb.Append('\r'); break;
                case '0': sb.Append('\0'); break;
                case 'a': sb.Append('\a'); break;
                case 'b': sb.Append('\b'); break;
                case 'f': sb.Append('\f'); break;
                case 'v': sb.Append('\v'); break;
                case '\\' or '\'' or '"': sb.Append(e); break;
                case '\n': break;
                case 'x': sb.Append(ReadHexEscape(2)); break;
                case 'u': sb.Append(ReadHexEscape(4)); break;
                case 'U': sb.Append(ReadHexEscape(8)); break;
                default: sb.Append('\\').Append(e); break;
            }
        }
    }

    private string ReadHexEscape(int digits)
    {
        var start = _pos;
        if (_pos + digits > _source.Length
            || !int.TryParse(_source.AsSpan(_pos, digits), NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture, out var code)
            || code > 0x10FFFF)
            throw Error("invalid escape sequence in string literal", start - 2);
        _pos += digits;
        return char.ConvertFromUtf32(code is >= 0xD800 and <= 0xDFFF ? 0xFFFD : code);
    }
}
