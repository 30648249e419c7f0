namespace Velo.Tensors;

/// <summary>
/// Blocks of native memory handed out back to back from slabs backed by 2 MiB pages (<see cref="NativeBuffer"/>), for
/// weights copied at load. A buffer of its own per matrix would round each up to whole huge pages, and the last one,
/// touched by the copy, becomes resident whole: on llama-1B about 100 MiB. Here only the slabs' tails go unused, and
/// pages never touched stay out of resident memory.
/// </summary>
internal sealed unsafe class HugePageArena : IDisposable
{
    private const long SlabBytes = 64L << 20;

    private readonly List<NativeBuffer> _slabs = [];
    private byte* _next;
    private long _left;

    /// <summary><paramref name="bytes"/> bytes, 64-byte aligned, not zeroed; valid until the arena is disposed.</summary>
    public byte* Allocate(long bytes)
    {
        long aligned = SizeMath.Product("bytes of a block in a huge-page arena",
            bytes / NativeBuffer.Alignment + (bytes % NativeBuffer.Alignment == 0 ? 0 : 1), NativeBuffer.Alignment);
        if (aligned > _left)
        {
            var slab = new NativeBuffer(Math.Max(SlabBytes, aligned), zero: false, hugePages: true);
            _slabs.Add(slab);
            _next = (byte*)slab.Pointer;
            _left = slab.Length;
        }
        byte* block = _next;
        _next += aligned;
        _left -= aligned;
        return block;
    }

    public void Dispose()
    {
        foreach (var slab in _slabs) slab.Dispose();
        _slabs.Clear();
        _left = 0;
    }
}
