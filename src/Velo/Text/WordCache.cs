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

    /// <summary>
    /// A dictionary sized for the limit from the start: growing a ConcurrentDictionary rehashes it under all its
    /// locks, and Clear() would shrink it back, so a full table is replaced instead.
    /// </summary>
    private sealed class Table
    {
        public readonly ConcurrentDictionary<string, int[]> Words = new(Environment.ProcessorCount, Limit, StringComparer.Ordinal);
        public readonly ConcurrentDictionary<string, int[]>.AlternateLookup<ReadOnlySpan<char>> Lookup;
        public int Size; // ConcurrentDictionary.Count takes every lock, so the size is counted here

        public Table() => Lookup = Words.GetAlternateLookup<ReadOnlySpan<char>>();
    }

    private Table _table = new();

    public bool TryAppend(ReadOnlySpan<char> word, List<int> output)
    {
        if (!Volatile.Read(ref _table).Lookup.TryGetValue(word, out int[]? ids)) return false;
        output.AddRange(ids);
        return true;
    }

    /// <summary>Stores the ids at the end of <paramref name="output"/> from <paramref name="start"/> on.</summary>
    public void Add(ReadOnlySpan<char> word, List<int> output, int start)
    {
        var table = Volatile.Read(ref _table);
        if (Volatile.Read(ref table.Size) >= Limit)
        {
            Interlocked.CompareExchange(ref _table, new Table(), table);
            table = Volatile.Read(ref _table);
        }
        if (table.Words.TryAdd(word.ToString(), CollectionsMarshal.AsSpan(output)[start..].ToArray()))
            Interlocked.Increment(ref table.Size);
    }
}
