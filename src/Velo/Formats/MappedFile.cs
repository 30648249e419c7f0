using System.IO.MemoryMappedFiles;

namespace Velo.Formats;

/// <summary>
/// A whole file memory-mapped read-only, for the model formats that read their tensors in place: the pointer stays
/// valid until <see cref="Dispose"/>, after which using it is refused instead of reading unmapped memory.
/// </summary>
internal sealed unsafe class MappedFile : IDisposable
{
    private readonly MemoryMappedFile _mapping;
    private readonly MemoryMappedViewAccessor _view;
    private byte* _base;

    public MappedFile(string path)
    {
        _mapping = MemoryMappedFile.CreateFromFile(path, FileMode.Open, null, 0, MemoryMappedFileAccess.Read);
        try
        {
            _view = _mapping.CreateViewAccessor(0, 0, MemoryMappedFileAccess.Read);
            _view.SafeMemoryMappedViewHandle.AcquirePointer(ref _base);
            _base += _view.PointerOffset;
        }
        catch
        {
            _mapping.Dispose();
            throw;
        }
    }

    /// <summary>The first byte of the file; throws once the mapping is disposed, naming <paramref name="owner"/>.</summary>
    public byte* Start(string owner) => _base != null ? _base : throw new ObjectDisposedException(owner);

    public void Dispose()
    {
        if (_base != null)
        {
            _view.SafeMemoryMappedViewHandle.ReleasePointer();
            _base = null;
        }
        _view.Dispose();
        _mapping.Dispose();
    }
}
