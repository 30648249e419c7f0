using System.Runtime.CompilerServices;

namespace Velo.Text;

/// <summary>
/// Open-addressing hash table from a token-id pair to its merge (rank and resulting token). Lookups are the inner
/// loop of byte-level BPE, and a Dictionary with a comparer pays an interface call per probe. Keys and values
/// alternate in one array so that a probe touches one cache line: the table is megabytes, so most probes miss.
/// </summary>
internal sealed class MergeTable
{
    private const long Empty = -1; // ids are non-negative, so no real key is negative

    private readonly long[] _slots; // key, value, key, value, ...
    private readonly int _mask;

    public MergeTable(int capacity)
    {
        int size = 16;
        while (size < capacity * 2) size *= 2;
        _slots = new long[2 * size];
        for (int i = 0; i < _slots.Length; i += 2) _slots[i] = Empty;
        _mask = size - 1;
    }

    public int Count { get; private set; }

    private static long Key(int left, int right) => ((long)left << 32) | (uint)right;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private int Slot(long key) => (int)(((ulong)key * 0x9E3779B97F4A7C15UL) >> 40) & _mask;

    /// <summary>Adds the pair unless it is already present (a repeated merge keeps its first, better rank).</summary>
    public bool TryAdd(int left, int right, int rank, int result)
    {
        long key = Key(left, right);
        int slot = Slot(key);
        while (_slots[2 * slot] != Empty)
        {
            if (_slots[2 * slot] == key) return false;
            slot = (slot + 1) & _mask;
        }
        if (Count + 1 > (_mask + 1) / 2) throw new InvalidOperationException("merge table is full");
        _slots[2 * slot] = key;
        _slots[2 * slot + 1] = ((long)rank << 32) | (uint)result;
        Count++;
        return true;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public bool TryGet(int left, int right, out int rank, out int result)
    {
        long key = Key(left, right);
        int slot = Slot(key);
        while (true)
        {
            long found = _slots[2 * slot];
            if (found == key)
            {
                long value = _slots[2 * slot + 1];
                rank = (int)(value >> 32);
                result = (int)value;
                return true;
            }
            if (found == Empty)
            {
                rank = result = 0;
                return false;
            }
            slot = (slot + 1) & _mask;
        }
    }
}
