using System.Globalization;
using System.Text;

namespace Velo.Sampling.Grammars;

/// <summary>
/// Reads llama.cpp's GBNF into a <see cref="Grammar"/>. Repetitions become right-recursive helper rules (so matching
/// them never deepens the stack), character classes become byte-level alternatives, and the finished grammar is
/// checked: every referenced rule defined, a <c>root</c>, no left recursion (which would never terminate), bounded size.
/// </summary>
internal sealed class GbnfParser
{
    private const int MaxNesting = 64;
    private const int MaxRepetition = 100_000;

    private readonly string _text;
    private int _position;
    private readonly Dictionary<string, int> _ruleIds = new(StringComparer.Ordinal);
    private readonly List<string> _ruleNames = [];
    private readonly List<List<List<Symbol>>?> _rules = [];
    private readonly Dictionary<(ulong, ulong, ulong, ulong), int> _byteSetIds = [];
    private readonly List<ulong> _byteSets = [];
    private readonly Dictionary<string, Symbol> _classCache = new(StringComparer.Ordinal);
    private long _symbolCount;

    private readonly record struct Symbol(ElementKind Kind, int Argument);

    private GbnfParser(string text) => _text = text;

    public static Grammar Parse(string text)
    {
        var parser = new GbnfParser(text);
        parser.ParseRules();
        return parser.Build();
    }

    // ---- Parsing ----

    private void ParseRules()
    {
        SkipSpace(newlines: true);
        while (_position < _text.Length)
        {
            string name = ParseName();
            SkipSpace(newlines: false);
            if (!_text.AsSpan(_position).StartsWith("::=")) throw Error($"expected '::=' after rule name '{name}'");
            _position += 3;
            SkipSpace(newlines: true);
            int id = RuleId(name);
            if (_rules[id] != null) throw Error($"rule '{name}' is defined twice");
            _rules[id] = ParseAlternatives(depth: 0);
            if (_position < _text.Length && _text[_position] is not ('\n' or '\r'))
                throw Error($"unexpected '{_text[_position]}' in rule '{name}'");
            SkipSpace(newlines: true);
        }
    }

    private List<List<Symbol>> ParseAlternatives(int depth)
    {
        var alternatives = new List<List<Symbol>> { ParseSequence(depth) };
        while (true)
        {
            // At the top level an alternative may continue on the next line when that line starts with '|'.
            int save = _position;
            SkipSpace(newlines: true);
            if (_position < _text.Length && _text[_position] == '|')
            {
                _position++;
                SkipSpace(newlines: true);
                alternatives.Add(ParseSequence(depth));
                continue;
            }
            if (depth == 0) _position = save;
            return alternatives;
        }
    }

    private List<Symbol> ParseSequence(int depth)
    {
        var sequence = new List<Symbol>();
        int lastStart = -1;
        while (_position < _text.Length)
        {
            char c = _text[_position];
            int start = sequence.Count;
            if (c == '"')
            {
                _position++;
                ParseLiteral(sequence);
            }
            else if (c == '[')
            {
                _position++;
                sequence.Add(ParseClass());
            }
            else if (c == '.')
            {
                _position++;
                sequence.Add(ClassSymbol(".", [(0, Utf8Ranges.MaxScalar)], negate: false));
            }
            else if (c == '(')
            {
                if (depth >= MaxNesting) throw Error($"groups nest deeper than {MaxNesting}");
                _position++;
                SkipSpace(newlines: true);
                var inner = ParseAlternatives(depth + 1);
                SkipSpace(newlines: true);
                if (_position >= _text.Length || _text[_position] != ')') throw Error("expected ')'");
                _position++;
                if (inner.Count == 1) sequence.AddRange(inner[0]);
                else sequence.Add(Reference(NewRule("group", inner)));
            }
            else if (IsNameChar(c))
            {
                string name = ParseName();
                sequence.Add(Reference(RuleId(name)));
            }
            else if (c is '*' or '+' or '?' or '{')
            {
                if (lastStart < 0) throw Error($"'{c}' has nothing to repeat");
                ApplyRepetition(sequence, lastStart);
                SkipSpace(newlines: depth > 0);
                continue;
            }
            else break;
            lastStart = start;
            SkipSpace(newlines: depth > 0);
        }
        return sequence;
    }

    private void ApplyRepetition(List<Symbol> sequence, int lastStart)
    {
        char op = _text[_position++];
        int min, max; // max -1: unbounded
        switch (op)
        {
            case '*': (min, max) = (0, -1); break;
            case '+': (min, max) = (1, -1); break;
            case '?': (min, max) = (0, 1); break;
            default:
                SkipSpace(newlines: false);
                min = ParseCount();
                SkipSpace(newlines: false);
                max = min;
                if (Peek() == ',')
                {
                    _position++;
                    SkipSpace(newlines: false);
                    max = char.IsAsciiDigit(Peek()) ? ParseCount() : -1;
                    SkipSpace(newlines: false);
                }
                if (Peek() != '}') throw Error("expected '}' to end a repetition");
                _position++;
                if (max >= 0 && max < min) throw Error($"repetition {{{min},{max}}} has its maximum below its minimum");
                break;
        }
        // The repeated item as one symbol.
        Symbol item = sequence.Count - lastStart == 1
            ? sequence[lastStart]
            : Reference(NewRule("item", [sequence.GetRange(lastStart, sequence.Count - lastStart)]));
        sequence.RemoveRange(lastStart, sequence.Count - lastStart);
        for (int i = 0; i < min; i++) sequence.Add(item);
        CountSymbols(min);
        if (max < 0)
        {
            // star ::= item star | (empty)
            int star = NewRule("star", null);
            _rules[star] = [[item, Reference(star)], []];
            sequence.Add(Reference(star));
        }
        else if (max > min)
        {
            // optional(k) ::= item optional(k-1) | (empty), built from the innermost out.
            int inner = -1;
            for (int k = 1; k <= max - min; k++)
            {
                var first = inner < 0 ? new List<Symbol> { item } : [item, Reference(inner)];
                inner = NewRule("optional", [first, []]);
            }
            sequence.Add(Reference(inner));
        }
    }

    private int ParseCount()
    {
        int start = _position;
        while (_position < _text.Length && char.IsAsciiDigit(_text[_position])) _position++;
        if (_position == start) throw Error("expected a number in a repetition");
        if (!int.TryParse(_text.AsSpan(start, _position - start), NumberStyles.None, CultureInfo.InvariantCulture, out int value) || value > MaxRepetition)
            throw Error($"repetition counts may be at most {MaxRepetition}");
        return value;
    }

    private void ParseLiteral(List<Symbol> sequence)
    {
        Span<byte> encoded = stackalloc byte[4];
        while (true)
        {
            if (_position >= _text.Length) throw Error("unterminated string literal");
            if (_text[_position] == '"')
            {
                _position++;
                return;
            }
            int scalar = ParseCharacter();
            int length = Utf8Ranges.Encode(scalar, encoded);
            for (int i = 0; i < length; i++) sequence.Add(Terminal(encoded[i], encoded[i]));
            CountSymbols(length);
        }
    }

    private Symbol ParseClass()
    {
        int start = _position - 1;
        bool negate = Peek() == '^';
        if (negate) _position++;
        var ranges = new List<(int, int)>();
        while (true)
        {
            if (_position >= _text.Length) throw Error("unterminated character class");
            if (_text[_position] == ']')
            {
                _position++;
                break;
            }
            int low = ParseCharacter(), high = low;
            if (Peek() == '-' && _position + 1 < _text.Length && _text[_position + 1] != ']')
            {
                _position++;
                high = ParseCharacter();
                if (high < low) throw Error("a character range ends below its start");
            }
            ranges.Add((low, high));
        }
        return ClassSymbol(_text[start.._position], ranges, negate);
    }

    /// <summary>One character of a literal or class: itself, or an escape.</summary>
    private int ParseCharacter()
    {
        char c = _text[_position];
        if (c != '\\')
        {
            if (char.IsHighSurrogate(c) && _position + 1 < _text.Length && char.IsLowSurrogate(_text[_position + 1]))
            {
                _position += 2;
                return char.ConvertToUtf32(c, _text[_position - 1]);
            }
            if (char.IsSurrogate(c)) throw Error("a lone surrogate in the grammar text");
            _position++;
            return c;
        }
        if (_position + 1 >= _text.Length) throw Error("a backslash ends the grammar");
        char escape = _text[_position + 1];
        _position += 2;
        switch (escape)
        {
            case 'n': return '\n';
            case 'r': return '\r';
            case 't': return '\t';
            case '\\' or '"' or '[' or ']' or '-' or '^' or '/' or '\'': return escape;
            case 'x': return ParseHex(2);
            case 'u': return ParseHex(4);
            case 'U': return ParseHex(8);
            default: throw Error($"unknown escape '\\{escape}'");
        }
    }

    private int ParseHex(int digits)
    {
        if (_position + digits > _text.Length
            || !int.TryParse(_text.AsSpan(_position, digits), NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture, out int value))
            throw Error($"expected {digits} hexadecimal digits");
        _position += digits;
        if (value > Utf8Ranges.MaxScalar || value is >= 0xD800 and <= 0xDFFF) throw Error($"U+{value:X} is not a Unicode scalar value");
        return value;
    }

    private string ParseName()
    {
        int start = _position;
        while (_position < _text.Length && IsNameChar(_text[_position])) _position++;
        if (_position == start) throw Error($"expected a rule name, found '{(start < _text.Length ? _text[start] : ' ')}'");
        return _text[start.._position];
    }

    private static bool IsNameChar(char c) => char.IsAsciiLetterOrDigit(c) || c is '-' or '_';

    private char Peek() => _position < _text.Length ? _text[_position] : '\0';

    /// <summary>Skips blanks and comments; newlines too when <paramref name="newlines"/> (inside groups, after ::= and |).</summary>
    private void SkipSpace(bool newlines)
    {
        while (_position < _text.Length)
        {
            char c = _text[_position];
            if (c == '#')
                while (_position < _text.Length && _text[_position] != '\n') _position++;
            else if (c is ' ' or '\t' || newlines && c is '\n' or '\r') _position++;
            else return;
        }
    }

    private GrammarException Error(string message)
    {
        int line = 1;
        for (int i = 0; i < Math.Min(_position, _text.Length); i++)
            if (_text[i] == '\n') line++;
        return new GrammarException($"grammar line {line}: {message}");
    }

    // ---- Symbols and rules ----

    private int RuleId(string name)
    {
        if (_ruleIds.TryGetValue(name, out int id)) return id;
        id = _rules.Count;
        _ruleIds[name] = id;
        _ruleNames.Add(name);
        _rules.Add(null);
        return id;
    }

    private int NewRule(string kind, List<List<Symbol>>? alternatives)
    {
        int id = _rules.Count;
        _ruleNames.Add($"<{kind} {id}>");
        _rules.Add(alternatives);
        CountSymbols(2 + (alternatives?.Sum(a => a.Count + 1) ?? 0));
        return id;
    }

    private static Symbol Reference(int rule) => new(ElementKind.RuleReference, rule);

    private Symbol Terminal(byte low, byte high)
    {
        Span<ulong> bits = stackalloc ulong[4];
        for (int b = low; b <= high; b++) bits[b >> 6] |= 1UL << (b & 63);
        return new Symbol(ElementKind.Terminal, ByteSet(bits));
    }

    private int ByteSet(ReadOnlySpan<ulong> bits)
    {
        var key = (bits[0], bits[1], bits[2], bits[3]);
        if (_byteSetIds.TryGetValue(key, out int id)) return id;
        id = _byteSets.Count / 4;
        _byteSets.AddRange(bits);
        _byteSetIds[key] = id;
        return id;
    }

    /// <summary>A class as one symbol: a terminal when it holds only ASCII, else a rule whose alternatives are its
    /// UTF-8 byte sequences (all one-byte members merged into one terminal).</summary>
    private Symbol ClassSymbol(string text, IEnumerable<(int, int)> ranges, bool negate)
    {
        if (_classCache.TryGetValue(text, out var cached)) return cached;
        var sequences = Utf8Ranges.Sequences(Utf8Ranges.Normalize(ranges, negate));
        if (sequences.Count == 0) throw Error($"character class {text} matches nothing");
        Span<ulong> single = stackalloc ulong[4];
        var alternatives = new List<List<Symbol>>();
        bool anySingle = false;
        foreach (var sequence in sequences)
        {
            if (sequence.Length == 1)
            {
                for (int b = sequence[0].Low; b <= sequence[0].High; b++) single[b >> 6] |= 1UL << (b & 63);
                anySingle = true;
            }
            else alternatives.Add(sequence.Select(r => Terminal(r.Low, r.High)).ToList());
        }
        Symbol symbol;
        if (alternatives.Count == 0) symbol = new Symbol(ElementKind.Terminal, ByteSet(single));
        else
        {
            if (anySingle) alternatives.Insert(0, [new Symbol(ElementKind.Terminal, ByteSet(single))]);
            symbol = Reference(NewRule("class", alternatives));
        }
        _classCache[text] = symbol;
        return symbol;
    }

    private void CountSymbols(long count)
    {
        _symbolCount += count;
        if (_symbolCount > Grammar.MaxElements) throw Error($"the grammar is too large (over {Grammar.MaxElements} elements)");
    }

    // ---- Checks and layout ----

    private Grammar Build()
    {
        foreach (var (name, id) in _ruleIds)
            if (_rules[id] == null) throw new GrammarException($"rule '{name}' is used but never defined");
        if (!_ruleIds.TryGetValue("root", out int root)) throw new GrammarException("the grammar has no 'root' rule");
        var rules = _rules.Select(r => r!).ToList();
        CheckLeftRecursion(rules);

        var kinds = new List<ElementKind>();
        var arguments = new List<int>();
        var alternatives = new int[rules.Count][];
        for (int rule = 0; rule < rules.Count; rule++)
        {
            alternatives[rule] = new int[rules[rule].Count];
            for (int a = 0; a < rules[rule].Count; a++)
            {
                alternatives[rule][a] = kinds.Count;
                foreach (var symbol in rules[rule][a])
                {
                    kinds.Add(symbol.Kind);
                    arguments.Add(symbol.Argument);
                }
                kinds.Add(ElementKind.End);
                arguments.Add(0);
            }
        }
        return new Grammar(kinds.ToArray(), arguments.ToArray(), _byteSets.ToArray(), alternatives, root, _text);
    }

    /// <summary>A rule that can reach itself without consuming a byte would make matching loop forever.</summary>
    private void CheckLeftRecursion(List<List<List<Symbol>>> rules)
    {
        var nullable = new bool[rules.Count];
        for (bool changed = true; changed;)
        {
            changed = false;
            for (int r = 0; r < rules.Count; r++)
            {
                if (nullable[r]) continue;
                if (rules[r].Any(alt => alt.All(s => s.Kind == ElementKind.RuleReference && nullable[s.Argument])))
                    nullable[r] = changed = true;
            }
        }
        // Edges to the rules each rule can start with; then a depth-first search for a cycle, without recursion.
        var edges = new List<int>[rules.Count];
        for (int r = 0; r < rules.Count; r++)
        {
            edges[r] = [];
            foreach (var alt in rules[r])
                foreach (var s in alt)
                {
                    if (s.Kind != ElementKind.RuleReference) break;
                    edges[r].Add(s.Argument);
                    if (!nullable[s.Argument]) break;
                }
        }
        var color = new byte[rules.Count]; // 0 new, 1 on the path, 2 done
        var stack = new Stack<(int Rule, int Edge)>();
        for (int start = 0; start < rules.Count; start++)
        {
            if (color[start] != 0) continue;
            stack.Push((start, 0));
            color[start] = 1;
            while (stack.Count > 0)
            {
                var (rule, edge) = stack.Pop();
                if (edge == edges[rule].Count)
                {
                    color[rule] = 2;
                    continue;
                }
                stack.Push((rule, edge + 1));
                int next = edges[rule][edge];
                if (color[next] == 1)
                    throw new GrammarException($"rule '{VisibleName(next)}' is left-recursive (it can reach itself before matching any text)");
                if (color[next] == 0)
                {
                    color[next] = 1;
                    stack.Push((next, 0));
                }
            }
        }
    }

    private string VisibleName(int rule) => _ruleNames[rule];
}
