using Velo.Formats;
using Velo.Models;

namespace Velo.Tests.Generation;

/// <summary>
/// A draft model for speculation tests: a small random-weight llama with stories260K's vocabulary (or a synthetic one
/// of the same size), which disagrees with stories260K most of the time, so rollback runs constantly.
/// </summary>
internal static class RandomDraftModel
{
    /// <summary>Writes the draft into <paramref name="folder"/> once and returns its path.</summary>
    public static string Path(string folder, int vocabularySize, int contextLength, bool sameVocabulary)
    {
        string path = System.IO.Path.Combine(folder, $"draft-{sameVocabulary}.gguf");
        if (File.Exists(path)) return path;
        var spec = new SynthSpec
        {
            Name = "draft", Dim = 32, Layers = 1, Heads = 2, FfnDim = 64, VocabSize = vocabularySize, ContextLength = contextLength,
            WeightStd = 0.3f, Seed = 11,
        };
        using (var vocabulary = GgufFile.Open(TestPaths.Stories260K))
            ModelSynthesizer.Write(path, spec, sameVocabulary ? SynthTokenizer.FromGguf(vocabulary.Metadata) : null, threads: 2);
        return path;
    }
}
