using System.Security.Cryptography;
using Velo.Formats;

namespace Velo.Pipeline;

/// <summary>
/// What tells two model files apart without reading their weights: the SHA-256 of the GGUF header (every metadata
/// key, the tokenizer and the tensor table with each tensor's name, type, shape and offset) and of the file's size.
/// A stage reads only its own blocks' tensors, so hashing the whole file would defeat the split; two files that
/// differ only in weight values (one fine-tuned from the other, keeping every name and type) share an identity.
/// </summary>
internal static class ModelIdentity
{
    public static byte[] Of(GgufFile file)
    {
        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        using (var stream = File.OpenRead(file.Path))
        {
            var buffer = new byte[1 << 16];
            for (long left = file.DataOffset; left > 0;)
            {
                int read = stream.Read(buffer, 0, (int)Math.Min(buffer.Length, left));
                if (read == 0) throw new EndOfStreamException($"{file.Path}: the file ended inside its header");
                hash.AppendData(buffer, 0, read);
                left -= read;
            }
        }
        hash.AppendData(BitConverter.GetBytes(file.FileSize));
        return hash.GetHashAndReset();
    }
}
