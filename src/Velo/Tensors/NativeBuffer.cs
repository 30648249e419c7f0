using System.Runtime.InteropServices;

namespace Velo.Tensors;

/// <summary>
/// A 64-byte aligned block of native memory. Activations and KV caches live here so the hot paths touch no managed
/// heap. Zeroed at allocation unless the caller opts out: large buffers that are always written before being read
/// (KV caches) skip it so the pages they never reach stay out of resident memory.
/// </summary>
internal sealed unsafe partial class NativeBuffer : IDisposable
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
        bool huge = hugePages && OperatingSystem.IsLinux() && bytes >= HugePage;
        if (huge) size = (size + HugePage - 1) / HugePage * HugePage;
        _pointer = NativeMemory.AlignedAlloc(size, huge ? (nuint)HugePage : Alignment);
        // Advice only: where huge pages are off or the call fails, the buffer works the same with small pages.
        if (huge) _ = Madvise(_pointer, size, MadviseHugePage);
        if (zero) NativeMemory.Clear(_pointer, (nuint)Math.Max(bytes, Alignment));
    }

    private const int HugePage = 2 << 20;

    private const int MadviseHugePage = 14;

    [LibraryImport("libc", EntryPoint = "madvise")]
    private static partial int Madvise(void* address, nuint length, int advice);

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
