using System.Globalization;
using System.Text.RegularExpressions;

namespace Velo.Text;

/// <summary>
/// Splits text into the words byte-level BPE merges within. Each model family has its own split patterns, chosen by
/// the GGUF <c>tokenizer.ggml.pre</c> name (llama.cpp's names) or given as regexes by a tokenizer.json.
/// </summary>
public abstract class PreTokenizer
{
    /// <summary>Appends (start, length) of each word of <paramref name="text"/>, in order, covering all of it.</summary>
    public abstract void Split(ReadOnlySpan<char> text, List<(int Start, int Length)> words);

    public const string Gpt2Pattern = @"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)";

    public const string Llama3Pattern =
        @"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

    public const string Qwen2Pattern =
        @"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

    private const string CjkRuns = @"[\u4E00-\u9FA5\u0800-\u4E00\uAC00-\uD7FF]+";

    private const string Gpt4oPattern =
        @"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";

    private const string TekkenPattern =
        @"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";

    private const string DeepSeek3Pattern =
        @"[!""#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+|[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+| ?[\p{P}\p{S}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

    private const string FinnishPattern = @" ?[^(\s|.,!?\u2026\u3002\uFF0C\u3001\u0964\u06D4\u060C)]+";

    /// <summary>
    /// The patterns llama.cpp applies for each <c>tokenizer.ggml.pre</c> name, one after another: each pattern cuts
    /// every piece left by the previous ones into its matches and the gaps between them.
    /// </summary>
    private static readonly Dictionary<string, string[]> PatternsByName = BuildNameTable();

    private static Dictionary<string, string[]> BuildNameTable()
    {
        var table = new Dictionary<string, string[]>(StringComparer.Ordinal);
        void Add(string[] patterns, params string[] names)
        {
            foreach (string name in names) table[name] = patterns;
        }

        Add([@"[\p{P}\$\+<=>\^~\|]+", Gpt2Pattern, @"\p{N}+", "[0-9][0-9][0-9]"], "default");
        Add([Llama3Pattern], "llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral", "midm-2.0", "lfm2",
            "dbrx", "smaug-bpe", "glm4", "chatglm-bpe");
        Add([Qwen2Pattern], "qwen2", "deepseek-r1-qwen", "kormo", "megrez", "stablelm2", "hunyuan", "grok-2");
        Add([Gpt2Pattern], "gpt-2", "phi-2", "jina-es", "jina-de", "gigachat", "jina-v2-es", "jina-v2-de", "a.x-4.0",
            "mellum", "jina-v1-en", "jina-v2-code", "roberta-bpe", "exaone4", "mpt", "olmo", "jais", "trillion",
            "granite-docling");
        Add([@"\p{N}", Gpt2Pattern], "starcoder", "refact", "command-r", "smollm", "codeshell", "exaone", "minerva-7b");
        Add([@"[\p{P}\$\+<=>\^~\|`]+", Gpt2Pattern, "[0-9][0-9][0-9]"], "falcon");
        // The original letter class lists, range by range, the cased letters (Lu, Ll, Lt) of the BMP plus five
        // cased scripts beyond it; the categories say the same more briefly.
        Add([@"[\r\n]", @"\s?[\p{Lu}\p{Ll}\p{Lt}]+", @"\s?[!-/:-~\uFF01-\uFF0F\uFF1A-\uFF5E\u2018-\u201F\u3000-\u3002]+", @"\s+\z",
             CjkRuns, @"\p{N}+"], "deepseek-llm");
        Add([@"[\r\n]", @"\s?\p{L}+", @"\s?\p{P}+", CjkRuns, @"\p{N}"], "deepseek-coder");
        Add([@"\p{N}{1,3}", @"[\u4E00-\u9FA5\u3040-\u309F\u30A0-\u30FF]+", DeepSeek3Pattern], "deepseek-v3", "hunyuan-dense");
        Add([FinnishPattern], "poro-chat", "bloom", "gpt3-finnish");
        Add([FinnishPattern, @"\p{N}"], "viking");
        Add([TekkenPattern], "tekken");
        Add([Gpt4oPattern], "gpt-4o", "llama4", "minimax-m2");
        Add([@"<sentinel:[0-9]+>", "(IMGIMG)((A|B|C|D|E|F|G|H|I){1,4})Z", @"([\t\n]|    |  )", @"\p{N}",
             @"[\p{P}!-/:-@\[-`{-~]", Gpt2Pattern], "chameleon");
        Add([@"'(?:[sSdDmMtT]|[lL][lL]|[vV][eE]|[rR][eE])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+"],
            "bailingmoe", "bailingmoe2", "llada-moe");
        Add([@"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1}| ?[^\s\p{L}\p{N}\r\n]+|\s*[\r\n]+|\s+(?!\S)|\s+"],
            "seed-coder");
        return table;
    }

    public static IReadOnlyCollection<string> KnownNames => PatternsByName.Keys;

    /// <summary>
    /// The pre-tokenizer for a GGUF name; like llama.cpp, an unknown name falls back to <c>default</c>.
    /// The commonest pattern sets get hand-written splitters that give the same words faster.
    /// </summary>
    public static PreTokenizer ForName(string? name) =>
        FromPatterns(PatternsByName.GetValueOrDefault(name ?? "default") ?? PatternsByName["default"]);

    public static PreTokenizer FromPatterns(IReadOnlyList<string> patterns)
    {
        if (patterns.Count == 1)
        {
            switch (patterns[0])
            {
                case Gpt2Pattern: return new Gpt2Splitter();
                case Llama3Pattern: return new Llama3Splitter(maxDigits: 3);
                case Qwen2Pattern: return new Llama3Splitter(maxDigits: 1);
            }
        }
        return new RegexPreTokenizer(patterns);
    }
}

/// <summary>
/// Applies split patterns with .NET regexes. .NET matches UTF-16 units, so the text is first rewritten with one
/// character per code point: a supplementary-plane character is replaced by a BMP character of the same Unicode
/// category, which keeps <c>\p{L}</c>, <c>\p{N}</c>, <c>\s</c> and counted repetitions exact.
/// </summary>
public sealed class RegexPreTokenizer : PreTokenizer
{
    private readonly Regex[] _patterns;

    public RegexPreTokenizer(IReadOnlyList<string> patterns)
    {
        if (patterns.Count == 0) throw new ArgumentException("a regex pre-tokenizer needs at least one pattern");
        _patterns = patterns.Select(p =>
        {
            try { return new Regex(p, RegexOptions.CultureInvariant | RegexOptions.Compiled); }
            catch (ArgumentException e) { throw new InvalidDataException($"pre-tokenizer pattern '{p}' is not a valid regex: {e.Message}", e); }
        }).ToArray();
    }

    public override void Split(ReadOnlySpan<char> text, List<(int Start, int Length)> words)
    {
        if (text.IsEmpty) return;
        var proxy = new char[text.Length];
        var offsets = new int[text.Length + 1]; // UTF-16 offset in text of each proxy character
        int count = 0;
        for (int i = 0; i < text.Length; i++)
        {
            offsets[count] = i;
            char c = text[i];
            if (char.IsHighSurrogate(c) && i + 1 < text.Length && char.IsLowSurrogate(text[i + 1]))
            {
                proxy[count++] = StandIn(CharUnicodeInfo.GetUnicodeCategory(char.ConvertToUtf32(c, text[i + 1])));
                i++;
            }
            else proxy[count++] = c;
        }
        offsets[count] = text.Length;
        string proxyText = new(proxy, 0, count);

        var pieces = new List<(int Start, int Length)> { (0, count) };
        var next = new List<(int Start, int Length)>();
        foreach (var regex in _patterns)
        {
            next.Clear();
            foreach (var (start, length) in pieces)
            {
                int position = start;
                for (var match = regex.Match(proxyText, start, length); match.Success; match = match.NextMatch())
                {
                    if (match.Length == 0) continue;
                    if (match.Index > position) next.Add((position, match.Index - position));
                    next.Add((match.Index, match.Length));
                    position = match.Index + match.Length;
                }
                if (position < start + length) next.Add((position, start + length - position));
            }
            (pieces, next) = (next, pieces);
        }
        foreach (var (start, length) in pieces)
            words.Add((offsets[start], offsets[start + length] - offsets[start]));
    }

    /// <summary>A BMP character of the given category, outside ASCII so that literal ASCII ranges never match it.</summary>
    internal static char StandIn(UnicodeCategory category) => category switch
    {
        UnicodeCategory.UppercaseLetter => 'À',
        UnicodeCategory.LowercaseLetter => 'ß',
        UnicodeCategory.TitlecaseLetter => 'ǅ',
        UnicodeCategory.ModifierLetter => 'ʰ',
        UnicodeCategory.OtherLetter => 'א',
        UnicodeCategory.NonSpacingMark => '\u0300',
        UnicodeCategory.SpacingCombiningMark => '\u0903',
        UnicodeCategory.EnclosingMark => '\u20DD',
        UnicodeCategory.DecimalDigitNumber => '\u0660',
        UnicodeCategory.LetterNumber => 'Ⅰ',
        UnicodeCategory.OtherNumber => '²',
        UnicodeCategory.ConnectorPunctuation => '‿',
        UnicodeCategory.DashPunctuation => '‐',
        UnicodeCategory.OpenPunctuation => '⁅',
        UnicodeCategory.ClosePunctuation => '⁆',
        UnicodeCategory.InitialQuotePunctuation => '«',
        UnicodeCategory.FinalQuotePunctuation => '»',
        UnicodeCategory.OtherPunctuation => '¡',
        UnicodeCategory.MathSymbol => '¬',
        UnicodeCategory.CurrencySymbol => '¢',
        UnicodeCategory.ModifierSymbol => '¨',
        UnicodeCategory.OtherSymbol => '¦',
        UnicodeCategory.Format => '\u00AD',
        UnicodeCategory.PrivateUse => '\uE000',
        _ => '\u0378', // unassigned
    };
}

/// <summary>
/// Hand-written equivalent of <see cref="PreTokenizer.Gpt2Pattern"/> (plus a final <c>\s+</c>, which only names
/// the gaps the pattern leaves):
/// <c>'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+</c>.
/// </summary>
internal sealed class Gpt2Splitter : PreTokenizer
{
    public override void Split(ReadOnlySpan<char> text, List<(int Start, int Length)> words)
    {
        int n = text.Length;
        for (int i = 0; i < n;)
        {
            int end = Contraction(text, i, caseInsensitive: false);
            if (end < 0)
            {
                int j = text[i] == ' ' ? i + 1 : i;
                var cls = j < n ? UnicodeClass.At(text, j, out _) : CharClass.Whitespace;
                end = cls == CharClass.Whitespace ? WhitespaceRun(text, i) : SameClassRun(text, j, cls);
            }
            words.Add((i, end - i));
            i = end;
        }
    }

    internal static int Contraction(ReadOnlySpan<char> text, int i, bool caseInsensitive)
    {
        if (text[i] != '\'' || i + 1 >= text.Length) return -1;
        char a = caseInsensitive ? (char)(text[i + 1] | 0x20) : text[i + 1];
        if (a is 's' or 't' or 'm' or 'd') return i + 2;
        if (i + 2 >= text.Length) return -1;
        char b = caseInsensitive ? (char)(text[i + 2] | 0x20) : text[i + 2];
        return (a, b) is ('r', 'e') or ('v', 'e') or ('l', 'l') ? i + 3 : -1;
    }

    internal static int SameClassRun(ReadOnlySpan<char> text, int i, CharClass cls, int maxCount = int.MaxValue)
    {
        int count = 0;
        while (i < text.Length && count < maxCount && UnicodeClass.At(text, i, out int length) == cls)
        {
            i += length;
            count++;
        }
        return i;
    }

    /// <summary><c>\s+(?!\S)|\s+</c> at <paramref name="i"/>: a run before a non-space keeps its last space for the next word.</summary>
    internal static int WhitespaceRun(ReadOnlySpan<char> text, int i)
    {
        int end = SameClassRun(text, i, CharClass.Whitespace);
        return end < text.Length && end - i >= 2 ? end - 1 : end;
    }
}

/// <summary>
/// Hand-written equivalent of <see cref="PreTokenizer.Llama3Pattern"/> (<paramref name="maxDigits"/> = 3) and
/// <see cref="PreTokenizer.Qwen2Pattern"/> (1).
/// </summary>
internal sealed class Llama3Splitter(int maxDigits) : PreTokenizer
{
    public override void Split(ReadOnlySpan<char> text, List<(int Start, int Length)> words)
    {
        int n = text.Length;
        for (int i = 0; i < n;)
        {
            int end = Gpt2Splitter.Contraction(text, i, caseInsensitive: true);
            if (end < 0) end = Word(text, i);
            words.Add((i, end - i));
            i = end;
        }
    }

    private int Word(ReadOnlySpan<char> text, int i)
    {
        int n = text.Length;
        var cls = UnicodeClass.At(text, i, out int length);
        // [^\r\n\p{L}\p{N}]?\p{L}+
        if (cls == CharClass.Letter) return Gpt2Splitter.SameClassRun(text, i, CharClass.Letter);
        if (cls != CharClass.Number && text[i] is not ('\r' or '\n') && i + length < n
            && UnicodeClass.At(text, i + length, out _) == CharClass.Letter)
            return Gpt2Splitter.SameClassRun(text, i + length, CharClass.Letter);
        // \p{N}{1,max}
        if (cls == CharClass.Number) return Gpt2Splitter.SameClassRun(text, i, CharClass.Number, maxDigits);
        // ' ?[^\s\p{L}\p{N}]+[\r\n]*'
        int j = text[i] == ' ' ? i + 1 : i;
        if (j < n && UnicodeClass.At(text, j, out _) == CharClass.Other)
        {
            int end = Gpt2Splitter.SameClassRun(text, j, CharClass.Other);
            while (end < n && text[end] is '\r' or '\n') end++;
            return end;
        }
        // \s*[\r\n]+ : the whitespace run up to and including its last line break
        int runEnd = Gpt2Splitter.SameClassRun(text, i, CharClass.Whitespace);
        for (int k = runEnd - 1; k >= i; k--)
            if (text[k] is '\r' or '\n') return k + 1;
        return Gpt2Splitter.WhitespaceRun(text, i);
    }
}
