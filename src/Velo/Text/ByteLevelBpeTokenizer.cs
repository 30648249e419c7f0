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
    private readonly int[] _byteTokens = new int[256];
    private readonly MergeTable _merges;
    private readonly PreTokenizer _preTokenizer;
    private readonly bool _ignoreMerges;
    private readonly WordCache _wordCache = new();

    [ThreadStatic] private static Scratch? t_scratch;

    public ByteLevelBpeTokenizer(TokenizerData data) : base(data)
    {
        if (data.Kind != TokenizerKind.ByteLevelBpe) throw new ArgumentException($"not a byte-level BPE vocabulary: {data.Kind}");
        for (int b = 0; b < 256; b++)
        {
            int id = TokenId([ByteLevel.Encode((byte)b)]);
            if (id < 0)
                throw new InvalidDataException($"byte-level BPE vocabulary has no token for byte 0x{b:X2} ('{ByteLevel.Encode((byte)b)}')");
            _byteTokens[b] = id;
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
            if (i > 0 && _merges.TryGet(ids[i - 1], ids[i], out int rank, out int result))
                initial.Add((new Pair(i - 1, i, ids[i - 1], ids[i], result), Priority(rank, i - 1)));
        }
        queue.EnqueueRange(initial);

        while (queue.TryDequeue(out var pair, out _))
        {
            // A queued pair is stale once either side has merged: merging always changes a symbol's id.
            if (ids[pair.Left] != pair.LeftId || ids[pair.Right] != pair.RightId) continue;
            ids[pair.Left] = pair.Result;
            ids[pair.Right] = -1;
            int after = next[pair.Right];
            next[pair.Left] = after;
            if (after >= 0) prev[after] = pair.Left;
            Enqueue(queue, ids, prev[pair.Left], pair.Left);
            Enqueue(queue, ids, pair.Left, after);
        }
        for (int i = 0; i >= 0; i = next[i]) output.Add(ids[i]);
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
        if (!_merges.TryGet(ids[left], ids[right], out int rank, out int result)) return;
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
