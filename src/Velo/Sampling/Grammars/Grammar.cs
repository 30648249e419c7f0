using System.Text.Json;

namespace Velo.Sampling.Grammars;

/// <summary>
/// A compiled context-free grammar over bytes, for constrained decoding: GBNF text (llama.cpp's grammar format), a
/// JSON Schema, or any JSON object. Character classes are compiled to UTF-8 byte sequences, so a grammar matches
/// output byte by byte whatever the tokenizer: a token may span several terminals or end inside a character, and the
/// output is always valid UTF-8. Immutable and shareable; each sequence decodes with its own <see cref="GrammarMatcher"/>.
/// </summary>
public sealed class Grammar
{
    internal const int MaxElements = 1 << 21;

    // Elements of every alternative of every rule, each alternative ended by an End element. A terminal's argument
    // indexes _byteSets (four 64-bit words: the bytes it accepts); a rule reference's indexes _alternatives.
    private readonly ElementKind[] _kinds;
    private readonly int[] _arguments;
    private readonly ulong[] _byteSets;
    private readonly int[][] _alternatives;

    internal Grammar(ElementKind[] kinds, int[] arguments, ulong[] byteSets, int[][] alternatives, int root, string source)
    {
        _kinds = kinds;
        _arguments = arguments;
        _byteSets = byteSets;
        _alternatives = alternatives;
        Root = root;
        Source = source;
    }

    /// <summary>The grammar as GBNF text (for a schema, the GBNF it was compiled to).</summary>
    public string Source { get; }

    internal int Root { get; }
    internal ElementKind Kind(int position) => _kinds[position];
    internal int Argument(int position) => _arguments[position];
    internal int[] AlternativesOf(int rule) => _alternatives[rule];

    internal bool Accepts(int terminalPosition, byte value)
    {
        int set = _arguments[terminalPosition];
        return (_byteSets[set * 4 + (value >> 6)] >> (value & 63) & 1) != 0;
    }

    /// <summary>Parses llama.cpp's GBNF: <c>name ::= alternatives</c> rules with string literals, character classes
    /// (<c>[a-z]</c>, <c>[^"]</c>), <c>.</c>, groups, <c>|</c>, <c>*</c>, <c>+</c>, <c>?</c> and <c>{m,n}</c>; the start rule is
    /// <c>root</c>. Throws <see cref="GrammarException"/> naming the problem and its line.</summary>
    public static Grammar FromGbnf(string gbnf)
    {
        ArgumentNullException.ThrowIfNull(gbnf);
        return GbnfParser.Parse(gbnf);
    }

    /// <summary>Compiles a JSON Schema (the subset OpenAI's strict mode and llama.cpp's json_schema accept) to a grammar
    /// whose every complete output is a JSON document valid against it. Throws <see cref="GrammarException"/> naming an
    /// unsupported keyword and its JSON path.</summary>
    public static Grammar FromJsonSchema(JsonElement schema) => FromGbnf(JsonSchemaConverter.ToGbnf(schema));

    /// <summary>JSON valid against <paramref name="schema"/> written between the literal texts <paramref name="prefix"/>
    /// and <paramref name="suffix"/>, such as a tool call inside its format's markers.</summary>
    public static Grammar FromJsonSchema(JsonElement schema, string prefix, string suffix) =>
        FromGbnf(JsonSchemaConverter.ToGbnf(schema, prefix, suffix));

    /// <summary>Any JSON object (OpenAI's <c>response_format: {"type": "json_object"}</c>).</summary>
    public static Grammar AnyJsonObject() => FromGbnf(JsonSchemaConverter.AnyObjectGbnf);

    public override string ToString() => Source;
}

internal enum ElementKind : byte
{
    End,
    Terminal,
    RuleReference,
}

/// <summary>A grammar or schema that cannot be compiled: the message names the problem (and where it is).</summary>
public sealed class GrammarException(string message) : ArgumentException(message);
