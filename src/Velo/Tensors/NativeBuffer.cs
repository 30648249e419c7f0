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

    public NativeBuffer(long bytes, bool zero = true)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(bytes);
        Length = bytes;
        _pointer = NativeMemory.AlignedAlloc((nuint)Math.Max(bytes, Alignment), Alignment);
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
