using System.Buffers;
using System.Text;

namespace Velo.Text;

/// <summary>
/// What every tokenizer kind shares: the vocabulary, special-token splitting, special ids, and decoding through
/// per-token byte pieces. Subclasses only turn a run of plain text into ids.
/// </summary>
public abstract class TokenizerBase : ITokenizer
{
    // llama.cpp treats these texts as end-of-turn markers whatever the metadata says; the order picks the EOT id.
    private static readonly string[] EndOfTurnTexts =
    [
        "<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<|end_of_text|>", "<EOT>", "_<EOT>",
        "<｜end▁of▁sentence｜>", "<end_of_utterance>",
    ];

    private static readonly string[] EndOfGenerationTexts =
    [
        "<|eot_id|>", "<|im_end|>", "<|end|>", "<|return|>", "<|call|>", "<end_of_turn>", "<|endoftext|>", "<|eom_id|>",
        "<EOT>", "_<EOT>", "<|end_of_text|>", "<end_of_utterance>",
    ];

    private readonly string[] _tokens;
    private readonly TokenType[] _types;
    private readonly Dictionary<string, int> _ids;
    private readonly byte[][] _pieces;
    private readonly int[] _matchableSpecials;
    private readonly HashSet<int> _endOfGeneration = [];
    private readonly IReadOnlySet<int> _leftStrip, _rightStrip;

    protected TokenizerBase(TokenizerData data)
    {
        string[] tokens = data.Tokens ?? throw new InvalidDataException("the tokenizer has no token list");
        if (tokens.Length == 0) throw new InvalidDataException("the tokenizer's token list is empty");
        if (data.Scores != null && data.Scores.Length != tokens.Length)
            throw new InvalidDataException($"the tokenizer has {tokens.Length} tokens but {data.Scores.Length} scores");
        if (data.TokenTypes != null && data.TokenTypes.Length != tokens.Length)
            throw new InvalidDataException($"the tokenizer has {tokens.Length} tokens but {data.TokenTypes.Length} token types");

        _tokens = new string[tokens.Length];
        _types = new TokenType[tokens.Length];
        _ids = new Dictionary<string, int>(tokens.Length, StringComparer.Ordinal);
        for (int id = 0; id < tokens.Length; id++)
        {
            // llama.cpp renames empty pieces the same way, so ids of later tokens stay reachable by text.
            string text = string.IsNullOrEmpty(tokens[id]) ? $"[EMPTY_{id}]" : tokens[id];
            if (!_ids.TryAdd(text, id))
                throw new InvalidDataException($"token '{text}' appears twice in the vocabulary (ids {_ids[text]} and {id})");
            _tokens[id] = text;
            _types[id] = data.TokenTypes?[id] ?? TokenType.Normal;
        }
        Lookup = _ids.GetAlternateLookup<ReadOnlySpan<char>>();

        BosId = CheckId(data.BosId, "BOS");
        EosId = CheckId(data.EosId, "EOS");
        UnknownId = CheckId(data.UnknownId, "unknown");
        SepId = CheckId(data.SepId, "SEP");
        PadId = CheckId(data.PadId, "padding");
        ClsId = CheckId(data.ClsId, "CLS");
        MaskId = CheckId(data.MaskId, "mask");
        EomId = CheckId(data.EomId, "EOM");
        EotId = CheckId(data.EotId, "EOT");
        if (EotId < 0)
            foreach (string text in EndOfTurnTexts)
                if (_ids.TryGetValue(text, out int id)) { EotId = id; break; }
        foreach (string text in EndOfGenerationTexts)
        {
            if (!_ids.TryGetValue(text, out int id)) continue;
            _endOfGeneration.Add(id);
            // An end marker must be a control token so that plain text cannot produce it (llama.cpp does the same).
            _types[id] = TokenType.Control;
        }
        foreach (int id in (int[])[EosId, EotId, EomId])
            if (id >= 0) _endOfGeneration.Add(id);

        AddBos = data.AddBos;
        AddEos = data.AddEos;
        AddSep = data.AddSep;
        if (AddBos && BosId < 0) throw new InvalidDataException("the tokenizer adds BOS but has no BOS token");
        if (AddEos && EosId < 0) throw new InvalidDataException("the tokenizer adds EOS but has no EOS token");
        if (AddSep && SepId < 0) throw new InvalidDataException("the tokenizer adds SEP but has no SEP token");

        _leftStrip = data.LeftStripTokens ?? new HashSet<int>();
        _rightStrip = data.RightStripTokens ?? new HashSet<int>();
        _matchableSpecials = Enumerable.Range(0, _tokens.Length)
            .Where(id => _types[id] is TokenType.Control or TokenType.UserDefined or TokenType.Unknown)
            .OrderByDescending(id => _tokens[id].Length).ThenBy(id => id)
            .ToArray();

        _pieces = new byte[_tokens.Length][];
    }

    /// <summary>Fills the decoded bytes of every token; subclasses call it once their own tables are ready.</summary>
    protected void BuildPieces()
    {
        for (int id = 0; id < _tokens.Length; id++)
            _pieces[id] = _types[id] switch
            {
                TokenType.Control or TokenType.UserDefined or TokenType.Unknown => Encoding.UTF8.GetBytes(_tokens[id]),
                TokenType.Normal or TokenType.Byte => DecodePiece(id, _tokens[id]),
                _ => [],
            };
        // A typed ▁ is 3 bytes of input but SentencePiece decodes it to a 1-byte space, so a normal token's stored
        // text can cover more input than its decoded bytes; one character can also become one unknown token (4 bytes).
        MaxInputBytesPerToken = Math.Max(4, Enumerable.Range(0, _tokens.Length)
            .Max(id => _types[id] == TokenType.Normal ? Math.Max(_pieces[id].Length, Encoding.UTF8.GetByteCount(_tokens[id])) : _pieces[id].Length));
    }

    /// <summary>The bytes a normal or byte token stands for.</summary>
    protected abstract byte[] DecodePiece(int id, string text);

    /// <summary>Appends the ids of a run of text that holds no special token.</summary>
    /// <param name="afterSpecial">The run starts the text or follows a special token.</param>
    protected abstract void EncodeText(ReadOnlySpan<char> text, bool afterSpecial, List<int> output);

    /// <summary>Whether decoding drops the space the encoder put in front of the first word.</summary>
    protected abstract bool StripsLeadingSpace { get; }

    public int VocabSize => _tokens.Length;
    public int BosId { get; }
    public int EosId { get; }
    public int EotId { get; }
    public int EomId { get; }
    public int PadId { get; }
    public int ClsId { get; }
    public int SepId { get; }
    public int MaskId { get; }
    public int UnknownId { get; }
    public bool AddBos { get; }
    public bool AddEos { get; }
    public bool AddSep { get; }
    public virtual int MaxInputBytesPerToken { get; private set; }

    protected Dictionary<string, int>.AlternateLookup<ReadOnlySpan<char>> Lookup { get; }

    public TokenType GetTokenType(int id) => _types[CheckToken(id)];

    public string TokenText(int id) => _tokens[CheckToken(id)];

    /// <summary>The token's id, or -1 when the text is not a token.</summary>
    public int TokenId(ReadOnlySpan<char> text) => Lookup.TryGetValue(text, out int id) ? id : -1;

    public bool IsEndOfGeneration(int id) => _endOfGeneration.Contains(id);

    /// <summary>The texts of the control and unknown tokens: those recognised in text only with parseSpecial.</summary>
    public IReadOnlyList<string> ParsedOnlySpecialTexts =>
        _parsedOnlySpecialTexts ??= _matchableSpecials.Where(id => _types[id] != TokenType.UserDefined).Select(id => _tokens[id]).ToArray();

    private string[]? _parsedOnlySpecialTexts;

    /// <summary>The bytes the token decodes to (empty for control tokens when <paramref name="skipSpecial"/>).</summary>
    public ReadOnlySpan<byte> TokenBytes(int id, bool skipSpecial = false) =>
        skipSpecial && _types[CheckToken(id)] is TokenType.Control or TokenType.Unknown ? default : _pieces[id];

    public int[] Encode(string text, bool addSpecial = true, bool parseSpecial = false) => Encode(text, addSpecial, parseSpecial, literalMark: null);

    public int[] Encode(MarkedPrompt prompt, bool addSpecial = true) => Encode(prompt.Text, addSpecial, parseSpecial: true, prompt.LiteralMark);

    private int[] Encode(string text, bool addSpecial, bool parseSpecial, char? literalMark)
    {
        ArgumentNullException.ThrowIfNull(text);
        var output = new List<int>(text.Length / 3 + 4);
        if (addSpecial && AddBos) output.Add(BosId);
        bool afterSpecial = true;
        foreach (var fragment in SplitOnSpecialTokens(text, parseSpecial, literalMark))
        {
            if (fragment.TokenId >= 0)
            {
                output.Add(fragment.TokenId);
                afterSpecial = true;
                continue;
            }
            var run = text.AsSpan(fragment.Start, fragment.Length);
            if (literalMark is char mark && run.Contains(mark)) run = run.ToString().Replace(mark.ToString(), "", StringComparison.Ordinal);
            // A run that held only marks is no text at all: it must not change how the next run starts.
            if (run.Length == 0) continue;
            EncodeText(run, afterSpecial, output);
            afterSpecial = false;
        }
        if (addSpecial && AddEos) output.Add(EosId);
        if (addSpecial && AddSep) output.Add(SepId);
        return output.ToArray();
    }

    public string Decode(ReadOnlySpan<int> ids, bool skipSpecial = false)
    {
        int total = 0;
        foreach (int id in ids) total += TokenBytes(id, skipSpecial).Length;
        byte[] buffer = ArrayPool<byte>.Shared.Rent(Math.Max(total, 1));
        try
        {
            int length = 0;
            bool first = StripsLeadingSpace;
            foreach (int id in ids)
            {
                var piece = TokenBytes(id, skipSpecial);
                if (first && piece.Length > 0)
                {
                    // Only the space the encoder added before the first word goes; a rendered BOS keeps it.
                    first = false;
                    if (piece[0] == (byte)' ' && _types[id] != TokenType.Control) piece = piece[1..];
                }
                piece.CopyTo(buffer.AsSpan(length));
                length += piece.Length;
            }
            return Encoding.UTF8.GetString(buffer, 0, length);
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }
    }

    private readonly record struct Fragment(int Start, int Length, int TokenId);

    /// <summary>
    /// Cuts the text at every occurrence of a special token, longest tokens first, the way llama.cpp does: control
    /// and unknown tokens only when <paramref name="parseSpecial"/>, user-defined tokens always.
    /// </summary>
    private List<Fragment> SplitOnSpecialTokens(string text, bool parseSpecial, char? literalMark)
    {
        var fragments = new List<Fragment>();
        if (text.Length == 0) return fragments;
        fragments.Add(new Fragment(0, text.Length, -1));
        var pieces = new List<Fragment>();
        foreach (int special in _matchableSpecials)
        {
            if (!parseSpecial && _types[special] != TokenType.UserDefined) continue;
            string token = _tokens[special];
            for (int f = 0; f < fragments.Count; f++)
            {
                var (start, length, tokenId) = fragments[f];
                if (tokenId >= 0 || text.AsSpan(start, length).IndexOf(token, StringComparison.Ordinal) < 0) continue;
                pieces.Clear();
                while (length > 0)
                {
                    int match = text.AsSpan(start, length).IndexOf(token, StringComparison.Ordinal);
                    // A control token right after the literal mark is a user's text, not the template's markup.
                    while (match >= 0 && literalMark is char mark && start + match > 0 && text[start + match - 1] == mark
                           && _types[special] != TokenType.UserDefined)
                    {
                        int next = text.AsSpan(start + match + 1, length - match - 1).IndexOf(token, StringComparison.Ordinal);
                        match = next < 0 ? -1 : match + 1 + next;
                    }
                    if (match < 0)
                    {
                        pieces.Add(new Fragment(start, length, -1));
                        break;
                    }
                    int leftLength = match;
                    if (_leftStrip.Contains(special))
                        while (leftLength > 0 && IsAsciiSpace(text[start + leftLength - 1])) leftLength--;
                    if (leftLength > 0) pieces.Add(new Fragment(start, leftLength, -1));
                    pieces.Add(new Fragment(0, 0, special));
                    int end = start + length;
                    start += match + token.Length;
                    if (_rightStrip.Contains(special))
                        while (start < end && IsAsciiSpace(text[start])) start++;
                    length = end - start;
                }
                fragments.RemoveAt(f);
                fragments.InsertRange(f, pieces);
                f += pieces.Count - 1;
            }
        }
        return fragments;
    }

    private static bool IsAsciiSpace(char c) => c is ' ' or '\t' or '\n' or '\v' or '\f' or '\r';

    private int CheckId(int id, string what)
    {
        if (id < -1 || id >= _tokens.Length)
            throw new InvalidDataException($"the {what} token id {id} is outside the vocabulary of {_tokens.Length} tokens");
        return id;
    }

    private int CheckToken(int id)
    {
        if ((uint)id >= (uint)_tokens.Length)
            throw new ArgumentOutOfRangeException(nameof(id), id, $"token id outside the vocabulary of {_tokens.Length} tokens");
        return id;
    }
}
