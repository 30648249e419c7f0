using System.Buffers;
using System.Text;

namespace Velo.Text;

/// <summary>
/// Byte-level BPE (GGUF <c>gpt2</c>: GPT-2, Llama 3, Qwen2/3, DeepSeek, Falcon, StarCoder, ...): the pre-tokenizer
/// cuts text into words, each word's UTF-8 bytes start as one token each, and adjacent tokens merge lowest merge
/// rank first.
/// </summary>
public sealed class ByteLevelBpeTokenizer : TokenizerBase
{
    private const int NoToken = -1;

    private readonly int[] _byteTokens = new int[256]; // NoToken for a byte the vocabulary has no token for
    private readonly bool _dropsText;
    private readonly MergeTable _merges;
    private readonly PreTokenizer _preTokenizer;
    private readonly bool _ignoreMerges;
    private readonly WordCache _wordCache = new();

    [ThreadStatic] private static Scratch? t_scratch;

    public ByteLevelBpeTokenizer(TokenizerData data) : base(data)
    {
        if (data.Kind != TokenizerKind.ByteLevelBpe) throw new ArgumentException($"not a byte-level BPE vocabulary: {data.Kind}");
        // Some vocabularies lack byte tokens: MPT, StarCoder and Refact have none for 0xC0 (a byte valid UTF-8 never
        // holds), Falcon none for 0x03. llama.cpp loads them, and a byte without a token is dropped when it is
        // tokenized (see Merge), so a missing byte is recorded here rather than refused.
        for (int b = 0; b < 256; b++)
        {
            int id = TokenId([ByteLevel.Encode((byte)b)]);
            _byteTokens[b] = id;
            if (id < 0 && OccursInUtf8((byte)b)) _dropsText = true;
        }

        var merges = data.Merges;
        if (merges == null || merges.Count == 0) throw new InvalidDataException("byte-level BPE vocabulary has no merges");
        _merges = new MergeTable(merges.Count);
        for (int rank = 0; rank < merges.Count; rank++)
        {
            var (left, right) = merges[rank];
            int leftId = MergePart(left, rank, left, right), rightId = MergePart(right, rank, left, right);
            int result = MergePart(left + right, rank, left, right);
            // A repeated pair keeps its first (best) rank, as in llama.cpp.
            _merges.TryAdd(leftId, rightId, rank, result);
        }

        _preTokenizer = data.PreTokenizerPatterns is { Count: > 0 } patterns
            ? PreTokenizer.FromPatterns(patterns)
            : PreTokenizer.ForName(data.PreTokenizer);
        _ignoreMerges = data.IgnoreMerges;
        BuildPieces();
    }

    private int MergePart(string piece, int rank, string left, string right)
    {
        int id = TokenId(piece);
        if (id < 0) throw new InvalidDataException($"merge {rank} '{left} {right}' needs '{piece}', which is not in the vocabulary");
        return id;
    }

    public PreTokenizer PreTokenizer => _preTokenizer;

    /// <summary>
    /// No bound when a byte that UTF-8 text can hold has no token: text made of that byte encodes to no tokens at all.
    /// Bytes that never occur in UTF-8 (0xC0, 0xC1, 0xF5 to 0xFF) can be missing without loosening the bound.
    /// </summary>
    public override int MaxInputBytesPerToken => _dropsText ? 0 : base.MaxInputBytesPerToken;

    private static bool OccursInUtf8(byte b) => b is not (0xC0 or 0xC1 or >= 0xF5);

    protected override bool StripsLeadingSpace => false;

    protected override byte[] DecodePiece(int id, string text)
    {
        var bytes = new List<byte>(text.Length);
        Span<byte> utf8 = stackalloc byte[4];
        foreach (var rune in text.EnumerateRunes())
        {
            int b = rune.IsBmp ? ByteLevel.Decode((char)rune.Value) : -1;
            if (b >= 0) bytes.Add((byte)b);
            else bytes.AddRange(utf8[..rune.EncodeToUtf8(utf8)]);
        }
        return bytes.ToArray();
    }

    protected override void EncodeText(ReadOnlySpan<char> text, bool afterSpecial, List<int> output)
    {
        var scratch = t_scratch ??= new Scratch();
        var words = scratch.Words;
        words.Clear();
        _preTokenizer.Split(text, words);
        foreach (var (start, length) in words)
            EncodeWord(text.Slice(start, length), output, scratch);
    }

    private void EncodeWord(ReadOnlySpan<char> word, List<int> output, Scratch scratch)
    {
        if (_wordCache.TryAppend(word, output)) return;
        int start = output.Count;
        MergeWord(word, output, scratch);
        _wordCache.Add(word, output, start);
    }

    private void MergeWord(ReadOnlySpan<char> word, List<int> output, Scratch scratch)
    {
        int byteCount = Encoding.UTF8.GetByteCount(word);
        byte[]? rented = byteCount > 256 ? ArrayPool<byte>.Shared.Rent(byteCount) : null;
        try
        {
            Span<byte> buffer = rented ?? stackalloc byte[256];
            var bytes = buffer[..Encoding.UTF8.GetBytes(word, buffer)];
            if (_ignoreMerges && TryWholeWord(bytes, output)) return;
            Merge(bytes, output, scratch);
        }
        finally
        {
            if (rented != null) ArrayPool<byte>.Shared.Return(rented);
        }
    }

    /// <summary>
    /// Merges a word's bytes into tokens: the lowest-ranked adjacent pair first, the leftmost among equals. The
    /// symbols form a linked list; queued pairs go stale when a neighbour merges and are skipped.
    /// </summary>
    /// <remarks>
    /// A byte the vocabulary has no token for takes part in no merge (every merge part is a token) and is dropped
    /// from the output, as llama.cpp does: llm_tokenizer_bpe_session::tokenize (src/llama-vocab.cpp) looks a symbol
    /// with no token up again one UTF-8 byte of its text at a time and appends only the lookups that succeed. A lone
    /// byte's text is a printable ASCII character that is itself missing, or a two-byte character whose halves are
    /// not valid UTF-8 and so no token of a well-formed vocabulary: nothing is appended.
    /// </remarks>
    private void Merge(ReadOnlySpan<byte> bytes, List<int> output, Scratch scratch)
    {
        if (bytes.IsEmpty) return;
        scratch.Reset(bytes.Length);
        int[] ids = scratch.Ids, prev = scratch.Prev, next = scratch.Next;
        var queue = scratch.Queue;
        var initial = scratch.Initial;
        initial.Clear();
        for (int i = 0; i < bytes.Length; i++)
        {
            ids[i] = _byteTokens[bytes[i]];
            prev[i] = i - 1;
            next[i] = i + 1 < bytes.Length ? i + 1 : -1;
            if (i > 0 && TryMerge(ids[i - 1], ids[i], out int rank, out int result))
                initial.Add((new Pair(i - 1, i, ids[i - 1], ids[i], result), Priority(rank, i - 1)));
        }
        queue.EnqueueRange(initial);

        while (queue.TryDequeue(out var pair, out _))
        {
            // A queued pair is stale once either side has merged: merging always changes a symbol's id.
            if (ids[pair.Left] != pair.LeftId || ids[pair.Right] != pair.RightId) continue;
            ids[pair.Left] = pair.Result;
            ids[pair.Right] = NoToken;
            int after = next[pair.Right];
            next[pair.Left] = after;
            if (after >= 0) prev[after] = pair.Left;
            Enqueue(queue, ids, prev[pair.Left], pair.Left);
            Enqueue(queue, ids, pair.Left, after);
        }
        for (int i = 0; i >= 0; i = next[i])
            if (ids[i] != NoToken) output.Add(ids[i]);
    }

    /// <summary>The merge of two adjacent symbols; none when either is a byte without a token.</summary>
    private bool TryMerge(int left, int right, out int rank, out int result)
    {
        // The merge table's empty-slot key is the pair (NoToken, NoToken), so a missing byte must never be looked up.
        if (left == NoToken || right == NoToken)
        {
            rank = result = 0;
            return false;
        }
        return _merges.TryGet(left, right, out rank, out result);
    }

    private bool TryWholeWord(ReadOnlySpan<byte> bytes, List<int> output)
    {
        char[]? rented = bytes.Length > 256 ? ArrayPool<char>.Shared.Rent(bytes.Length) : null;
        try
        {
            Span<char> mapped = (rented ?? stackalloc char[256])[..bytes.Length];
            for (int i = 0; i < bytes.Length; i++) mapped[i] = ByteLevel.Encode(bytes[i]);
            if (!Lookup.TryGetValue(mapped, out int id)) return false;
            output.Add(id);
            return true;
        }
        finally
        {
            if (rented != null) ArrayPool<char>.Shared.Return(rented);
        }
    }

    private void Enqueue(PriorityQueue<Pair, long> queue, int[] ids, int left, int right)
    {
        if (left < 0 || right < 0) return;
        if (!TryMerge(ids[left], ids[right], out int rank, out int result)) return;
        queue.Enqueue(new Pair(left, right, ids[left], ids[right], result), Priority(rank, left));
    }

    /// <summary>Lowest rank first; among equal ranks the leftmost pair.</summary>
    private static long Priority(int rank, int left) => ((long)rank << 32) | (uint)left;

    private readonly record struct Pair(int Left, int Right, int LeftId, int RightId, int Result);

    /// <summary>Per-thread buffers, so that encoding allocates only for words it has not seen before.</summary>
    private sealed class Scratch
    {
        public readonly List<(int Start, int Length)> Words = [];
        public readonly PriorityQueue<Pair, long> Queue = new();
        public readonly List<(Pair, long)> Initial = [];
        public int[] Ids = new int[64], Prev = new int[64], Next = new int[64];

        public void Reset(int length)
        {
            Queue.Clear();
            if (Ids.Length >= length) return;
            int size = Math.Max(length, Ids.Length * 2);
            Ids = new int[size];
            Prev = new int[size];
            Next = new int[size];
        }
    }
}
