using System.Runtime.CompilerServices;

namespace Velo.Text;

/// <summary>
/// Open-addressing hash table from a token-id pair to its merge (rank and resulting token). Lookups are the inner
/// loop of byte-level BPE, and a Dictionary with a comparer pays an interface call per probe.
/// </summary>
internal sealed class MergeTable
{
    private const long Empty = -1; // ids are non-negative, so no real key is negative

    private readonly long[] _keys;
    private readonly long[] _values;
    private readonly int _mask;

    public MergeTable(int capacity)
    {
        int size = 16;
        while (size < capacity * 2) size *= 2;
        _keys = new long[size];
        Array.Fill(_keys, Empty);
        _values = new long[size];
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
        while (_keys[slot] != Empty)
        {
            if (_keys[slot] == key) return false;
            slot = (slot + 1) & _mask;
        }
        if (Count + 1 > _keys.Length / 2) throw new InvalidOperationException("merge table is full");
        _keys[slot] = key;
        _values[slot] = ((long)rank << 32) | (uint)result;
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
            long found = _keys[slot];
            if (found == key)
            {
                long value = _values[slot];
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
