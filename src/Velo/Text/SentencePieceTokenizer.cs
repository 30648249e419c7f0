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
        BuildPieces();
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

    protected override void EncodeText(ReadOnlySpan<char> text, bool afterSpecial, List<int> output)
    {
        int prefix = AddSpacePrefix && afterSpecial ? 1 : 0;
        var buffer = new char[text.Length + prefix];
        if (prefix == 1) buffer[0] = SpaceMark;
        text.Replace(buffer.AsSpan(prefix), ' ', SpaceMark);
        if (buffer.Length == 0) return;

        var symbols = new List<Symbol>(buffer.Length);
        for (int offset = 0; offset < buffer.Length;)
        {
            int length = char.IsHighSurrogate(buffer[offset]) && offset + 1 < buffer.Length && char.IsLowSurrogate(buffer[offset + 1]) ? 2 : 1;
            symbols.Add(new Symbol { Start = offset, Length = length, Prev = symbols.Count - 1, Next = offset + length == buffer.Length ? -1 : symbols.Count + 1 });
            offset += length;
        }

        var queue = new PriorityQueue<Bigram, (float, int)>(BigramOrder.Instance);
        for (int i = 1; i < symbols.Count; i++) TryAddBigram(buffer, symbols, queue, i - 1, i);

        while (queue.TryDequeue(out var bigram, out _))
        {
            var span = System.Runtime.InteropServices.CollectionsMarshal.AsSpan(symbols);
            ref Symbol left = ref span[bigram.Left];
            ref Symbol right = ref span[bigram.Right];
            // A pair whose symbols have changed since it was queued is stale.
            if (left.Length == 0 || right.Length == 0 || left.Length + right.Length != bigram.Length) continue;
            left.Length += right.Length;
            right.Length = 0;
            left.Next = right.Next;
            if (right.Next >= 0) span[right.Next].Prev = bigram.Left;
            TryAddBigram(buffer, symbols, queue, left.Prev, bigram.Left);
            TryAddBigram(buffer, symbols, queue, bigram.Left, left.Next);
        }

        Span<byte> utf8 = stackalloc byte[8];
        for (int i = 0; i >= 0; i = symbols[i].Next)
        {
            var piece = buffer.AsSpan(symbols[i].Start, symbols[i].Length);
            if (Lookup.TryGetValue(piece, out int id))
            {
                output.Add(id);
                continue;
            }
            int count = Encoding.UTF8.GetBytes(piece, utf8);
            foreach (byte b in utf8[..count]) output.Add(_byteTokens[b]);
        }
    }

    private void TryAddBigram(char[] buffer, List<Symbol> symbols, PriorityQueue<Bigram, (float, int)> queue, int left, int right)
    {
        if (left < 0 || right < 0) return;
        int length = symbols[left].Length + symbols[right].Length;
        if (!Lookup.TryGetValue(buffer.AsSpan(symbols[left].Start, length), out int id)) return;
        queue.Enqueue(new Bigram(left, right, length), (_scores[id], left));
    }
}
