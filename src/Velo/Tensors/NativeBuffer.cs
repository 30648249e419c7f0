using System.Runtime.InteropServices;

namespace Velo.Tensors;

/// <summary>
/// A 64-byte aligned block of native memory. Activations and KV caches live here so the hot paths touch no managed
/// heap. Zeroed at allocation unless the caller opts out: large buffers that are always written before being read
/// (KV caches) skip it so the pages they never reach stay out of resident memory.
/// </summary>
internal sealed unsafe class NativeBuffer : IDisposable
{
    public const int Alignment = 64;

    private void* _pointer;

    /// <summary>
    /// <paramref name="hugePages"/> asks Linux to back a large buffer with 2 MiB pages (Linux's transparent huge
    /// pages, where enabled for <c>madvise</c>): weights repacked at load touch every page once, and on a VM each
    /// 4 KiB page's first touch cost about 13 µs, ten times the copying itself.
    /// </summary>
    public NativeBuffer(long bytes, bool zero = true, bool hugePages = false)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(bytes);
        Length = bytes;
        nuint size = (nuint)Math.Max(bytes, Alignment);
        bool huge = hugePages && bytes >= PageAdvice.HugePageBytes;
        if (huge) size = (size + PageAdvice.HugePageBytes - 1) / PageAdvice.HugePageBytes * PageAdvice.HugePageBytes;
        _pointer = NativeMemory.AlignedAlloc(size, huge ? (nuint)PageAdvice.HugePageBytes : Alignment);
        if (huge) PageAdvice.UseHugePages(_pointer, size);
        if (zero) NativeMemory.Clear(_pointer, (nuint)Math.Max(bytes, Alignment));
    }


    public long Length { get; }

    public void* Pointer => _pointer != null ? _pointer : throw new ObjectDisposedException(nameof(NativeBuffer));

    public float* Floats => (float*)Pointer;

    public Span<T> AsSpan<T>() where T : unmanaged => new(Pointer, checked((int)(Length / sizeof(T))));

    public void Dispose()
    {
        if (_pointer != null)
        {
            NativeMemory.AlignedFree(_pointer);
            _pointer = null;
        }
        GC.SuppressFinalize(this);
    }

    ~NativeBuffer() => Dispose();
}
