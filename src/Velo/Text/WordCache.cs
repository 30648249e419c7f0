using System.Collections.Concurrent;
using System.Runtime.InteropServices;

namespace Velo.Text;

/// <summary>
/// Remembers the ids of words already tokenized: natural text repeats its words, and a lookup costs far less than
/// merging. Thread-safe; starts over when full so that text of a new kind is not left with only misses.
/// </summary>
internal sealed class WordCache
{
    private const int Limit = 1 << 16;

    private readonly ConcurrentDictionary<string, int[]> _words = new(StringComparer.Ordinal);
    private readonly ConcurrentDictionary<string, int[]>.AlternateLookup<ReadOnlySpan<char>> _lookup;
    private int _size; // ConcurrentDictionary.Count takes every lock, so the size is counted here

    public WordCache() => _lookup = _words.GetAlternateLookup<ReadOnlySpan<char>>();

    public bool TryAppend(ReadOnlySpan<char> word, List<int> output)
    {
        if (!_lookup.TryGetValue(word, out int[]? ids)) return false;
        output.AddRange(ids);
        return true;
    }

    /// <summary>Stores the ids at the end of <paramref name="output"/> from <paramref name="start"/> on.</summary>
    public void Add(ReadOnlySpan<char> word, List<int> output, int start)
    {
        if (Volatile.Read(ref _size) >= Limit)
            lock (_words)
                if (_size >= Limit)
                {
                    _words.Clear();
                    _size = 0;
                }
        if (_words.TryAdd(word.ToString(), CollectionsMarshal.AsSpan(output)[start..].ToArray()))
            Interlocked.Increment(ref _size);
    }
}
