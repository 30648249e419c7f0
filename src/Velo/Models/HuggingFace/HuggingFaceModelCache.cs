using System.Security.Cryptography;
using System.Text;

namespace Velo.Models.HuggingFace;

/// <summary>
/// Lets every command take a Hugging Face folder where it takes a GGUF file: the folder is converted once, each matrix
/// in its own float type (nothing rounded), into a GGUF file in a cache folder, and that file is memory-mapped as
/// any other. Every model family binds llama.cpp's tensor layout (Llama's permuted Q/K, Gemma's 1 + w norms), so a
/// converted copy is what runs; it is reused while the folder's files keep their names, sizes and times.
/// </summary>
public static class HuggingFaceModelCache
{
    /// <summary>Bumped when the converter's output changes, so files written by an older one are not reused.</summary>
    private const int FormatVersion = 1;

    /// <summary>
    /// The cache folder: <c>VELO_CACHE_DIR</c>, else <c>$XDG_CACHE_HOME/velo</c>, else <c>~/.cache/velo</c> (the
    /// local application data folder on Windows), with converted models under <c>hf/</c>.
    /// </summary>
    public static string DefaultDirectory
    {
        get
        {
            string? root = Environment.GetEnvironmentVariable("VELO_CACHE_DIR");
            if (string.IsNullOrEmpty(root))
            {
                string? xdg = Environment.GetEnvironmentVariable("XDG_CACHE_HOME");
                root = !string.IsNullOrEmpty(xdg) ? Path.Combine(xdg, "velo")
                    : OperatingSystem.IsWindows() ? Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.LocalApplicationData), "velo")
                    : Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".cache", "velo");
            }
            return Path.Combine(root, "hf");
        }
    }

    /// <summary>Raised with the folder and the cache file when a folder is converted (it can take minutes), so a front end can say so.</summary>
    public static event Action<string, string>? ConversionStarted;

    /// <summary>
    /// <paramref name="path"/> itself unless it is a Hugging Face model folder; then the GGUF file converted from it,
    /// converting first when the cache has no current copy.
    /// </summary>
    public static string Resolve(string path, string? cacheDirectory = null)
    {
        if (!HuggingFaceConverter.IsModelFolder(path)) return path;
        string folder = Path.GetFullPath(path);
        string directory = cacheDirectory ?? DefaultDirectory;
        string name = Path.GetFileName(Path.TrimEndingDirectorySeparator(folder));
        string cached = Path.Combine(directory, $"{name}-{Fingerprint(folder)}.gguf");
        if (File.Exists(cached)) return cached;

        Directory.CreateDirectory(directory);
        ConversionStarted?.Invoke(folder, cached);
        // A name of its own, so two processes converting the same folder at once do not write one file.
        string temporary = $"{cached}.{Environment.ProcessId}.{Guid.NewGuid():N}.tmp";
        try
        {
            HuggingFaceConverter.Convert(folder, temporary);
            File.Move(temporary, cached, overwrite: true);
        }
        finally
        {
            File.Delete(temporary);
        }
        return cached;
    }

    /// <summary>A hash of the folder's path and each model file's name, size and last write time.</summary>
    private static string Fingerprint(string folder)
    {
        var text = new StringBuilder().Append(FormatVersion).Append('\n').Append(folder).Append('\n');
        foreach (string file in Directory.EnumerateFiles(folder).Order(StringComparer.Ordinal))
        {
            string fileName = Path.GetFileName(file);
            if (!(fileName.EndsWith(".json", StringComparison.Ordinal) || fileName.EndsWith(".safetensors", StringComparison.Ordinal)
                  || fileName.EndsWith(".jinja", StringComparison.Ordinal))) continue;
            var info = new FileInfo(file);
            text.Append(fileName).Append('\t').Append(info.Length).Append('\t').Append(info.LastWriteTimeUtc.Ticks).Append('\n');
        }
        return Convert.ToHexString(SHA256.HashData(Encoding.UTF8.GetBytes(text.ToString())), 0, 8).ToLowerInvariant();
    }
}
