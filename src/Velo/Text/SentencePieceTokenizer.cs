using System.Buffers;
using System.Text;

namespace Velo.Text;

/// <summary>
/// SentencePiece-style BPE (GGUF <c>llama</c>: Llama 2, Mistral, Phi-3, TinyLlama): spaces become <c>▁</c>, adjacent
/// pieces merge highest score first, and characters no piece covers fall back to <c>&lt;0xXX&gt;</c> byte tokens.
/// </summary>
public sealed class SentencePieceTokenizer : TokenizerBase
{
    private const char SpaceMark = '▁';

    private readonly float[] _scores;
    private readonly int[] _byteTokens = new int[256];
    private readonly WordCache _wordCache = new();

    /// <summary>
    /// No piece holds <c>▁</c> after another character, so no merge crosses the start of a space-led word and each
    /// word can be merged (and cached) on its own with the same result.
    /// </summary>
    private readonly bool _wordsAreIndependent;

    public SentencePieceTokenizer(TokenizerData data) : base(data)
    {
        if (data.Kind != TokenizerKind.SentencePiece) throw new ArgumentException($"not a SentencePiece vocabulary: {data.Kind}");
        _scores = data.Scores ?? new float[VocabSize];
        AddSpacePrefix = data.AddSpacePrefix;
        for (int b = 0; b < 256; b++)
        {
            int id = TokenId($"<0x{b:X2}>");
            if (id < 0 && b < 0x80) id = TokenId(((char)b).ToString());
            if (id < 0) id = UnknownId;
            if (id < 0)
                throw new InvalidDataException($"SentencePiece vocabulary has no byte piece <0x{b:X2}> and no unknown token to fall back to");
            _byteTokens[b] = id;
        }
        for (int id = 0; id < VocabSize; id++)
            if (GetTokenType(id) == TokenType.Byte && !TryParseBytePiece(TokenText(id), out _))
                throw new InvalidDataException($"byte token {id} is '{TokenText(id)}', not of the form <0xXX>");
        _wordsAreIndependent = !Enumerable.Range(0, VocabSize).Any(id => HasMarkAfterOtherCharacter(TokenText(id)));
        BuildPieces();
    }

    private static bool HasMarkAfterOtherCharacter(string token)
    {
        for (int i = 1; i < token.Length; i++)
            if (token[i] == SpaceMark && token[i - 1] != SpaceMark) return true;
        return false;
    }

    public bool AddSpacePrefix { get; }

    protected override bool StripsLeadingSpace => AddSpacePrefix;

    protected override byte[] DecodePiece(int id, string text)
    {
        if (GetTokenType(id) == TokenType.Byte)
        {
            TryParseBytePiece(text, out byte b);
            return [b];
        }
        return Encoding.UTF8.GetBytes(text.Replace(SpaceMark, ' '));
    }

    private static bool TryParseBytePiece(string text, out byte value)
    {
        value = 0;
        return text.Length == 6 && text.StartsWith("<0x", StringComparison.Ordinal) && text[5] == '>'
            && byte.TryParse(text.AsSpan(3, 2), System.Globalization.NumberStyles.HexNumber, null, out value);
    }

    private struct Symbol
    {
        public int Start, Length, Prev, Next;
    }

    private readonly record struct Bigram(int Left, int Right, int Length);

    private sealed class BigramOrder : IComparer<(float Score, int Left)>
    {
        public static readonly BigramOrder Instance = new();

        // Highest score first; among equal scores the leftmost pair.
        public int Compare((float Score, int Left) x, (float Score, int Left) y) =>
            x.Score != y.Score ? y.Score.CompareTo(x.Score) : x.Left.CompareTo(y.Left);
    }

    /// <summary>Per-thread buffers reused across words.</summary>
    private sealed class Scratch
    {
        public Symbol[] Symbols = new Symbol[64];
        public readonly PriorityQueue<Bigram, (float, int)> Queue = new(BigramOrder.Instance);
    }

    [ThreadStatic] private static Scratch? t_scratch;

    protected override void EncodeText(ReadOnlySpan<char> text, bool afterSpecial, List<int> output)
    {
        int prefix = AddSpacePrefix && afterSpecial ? 1 : 0;
        int length = text.Length + prefix;
        if (length == 0) return;
        char[] buffer = ArrayPool<char>.Shared.Rent(length);
        try
        {
            if (prefix == 1) buffer[0] = SpaceMark;
            text.Replace(buffer.AsSpan(prefix), ' ', SpaceMark);
            var escaped = buffer.AsSpan(0, length);
            if (!_wordsAreIndependent)
            {
                EncodeWord(escaped, output);
                return;
            }
            int start = 0;
            for (int i = 1; i < escaped.Length; i++)
                if (escaped[i] == SpaceMark && escaped[i - 1] != SpaceMark)
                {
                    EncodeCachedWord(escaped[start..i], output);
                    start = i;
                }
            EncodeCachedWord(escaped[start..], output);
        }
        finally
        {
            ArrayPool<char>.Shared.Return(buffer);
        }
    }

    private void EncodeCachedWord(ReadOnlySpan<char> word, List<int> output)
    {
        if (_wordCache.TryAppend(word, output)) return;
        int start = output.Count;
        EncodeWord(word, output);
        _wordCache.Add(word, output, start);
    }

    /// <summary>Merges the highest-scoring adjacent pair that forms a piece until none does, as llama.cpp does.</summary>
    private void EncodeWord(ReadOnlySpan<char> text, List<int> output)
    {
        var scratch = t_scratch ??= new Scratch();
        if (scratch.Symbols.Length < text.Length) scratch.Symbols = new Symbol[Math.Max(text.Length, scratch.Symbols.Length * 2)];
        var symbols = scratch.Symbols;
        int count = 0;
        for (int offset = 0; offset < text.Length;)
        {
            int length = char.IsHighSurrogate(text[offset]) && offset + 1 < text.Length && char.IsLowSurrogate(text[offset + 1]) ? 2 : 1;
            symbols[count] = new Symbol { Start = offset, Length = length, Prev = count - 1, Next = offset + length == text.Length ? -1 : count + 1 };
            count++;
            offset += length;
        }

        var queue = scratch.Queue;
        queue.Clear();
        for (int i = 1; i < count; i++) TryAddBigram(text, symbols, queue, i - 1, i);
        while (queue.TryDequeue(out var bigram, out _))
        {
            ref Symbol left = ref symbols[bigram.Left];
            ref Symbol right = ref symbols[bigram.Right];
            // A pair whose symbols have changed since it was queued is stale.
            if (left.Length == 0 || right.Length == 0 || left.Length + right.Length != bigram.Length) continue;
            left.Length += right.Length;
            right.Length = 0;
            left.Next = right.Next;
            if (right.Next >= 0) symbols[right.Next].Prev = bigram.Left;
            TryAddBigram(text, symbols, queue, left.Prev, bigram.Left);
            TryAddBigram(text, symbols, queue, bigram.Left, left.Next);
        }

        Span<byte> utf8 = stackalloc byte[8];
        for (int i = 0; i >= 0; i = symbols[i].Next)
        {
            var piece = text.Slice(symbols[i].Start, symbols[i].Length);
            if (Lookup.TryGetValue(piece, out int id))
            {
                output.Add(id);
                continue;
            }
            int byteCount = Encoding.UTF8.GetBytes(piece, utf8);
            foreach (byte b in utf8[..byteCount]) output.Add(_byteTokens[b]);
        }
    }

    private void TryAddBigram(ReadOnlySpan<char> text, Symbol[] symbols, PriorityQueue<Bigram, (float, int)> queue, int left, int right)
    {
        if (left < 0 || right < 0) return;
        int length = symbols[left].Length + symbols[right].Length;
        if (!Lookup.TryGetValue(text.Slice(symbols[left].Start, length), out int id)) return;
        queue.Enqueue(new Bigram(left, right, length), (_scores[id], left));
    }
}
