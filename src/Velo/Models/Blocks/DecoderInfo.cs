using System.Globalization;
using Velo.Formats;

namespace Velo.Models.Blocks;

/// <summary>The <see cref="ModelInfo"/> every decoder family reports, and the name/value pairs <c>velo info</c> shows.</summary>
internal static class DecoderInfo
{
    public static KeyValuePair<string, string> Property(string name, object value) =>
        KeyValuePair.Create(name, Convert.ToString(value, CultureInfo.InvariantCulture) ?? "");

    /// <summary>
    /// The shared hyperparameters, then <paramref name="familyProperties"/> (rope, windows, caps: what the family has
    /// of its own), then the norm epsilon and whether the output matrix is tied. <paramref name="context"/> is how the
    /// context length is shown (Phi-3 adds its original one).
    /// </summary>
    public static ModelInfo Create(string architecture, DecoderDimensions d, int contextLength, object context, float normEpsilon, GgufFile file,
        IEnumerable<KeyValuePair<string, string>> familyProperties) => new()
    {
        Architecture = architecture,
        VocabSize = d.VocabSize,
        ContextLength = contextLength,
        EmbeddingLength = d.Dim,
        Layers = Enumerable.Repeat(new KvLayerShape(d.KvHeads, d.HeadDim), d.Layers).ToArray(),
        Properties =
        [
            Property("embedding dim", d.Dim),
            Property("layers", d.Layers),
            Property("attention heads", $"{d.Heads} (KV heads {d.KvHeads}{(d.KvHeads < d.Heads ? ", grouped-query" : "")})"),
            Property("head dim", d.HeadDim),
            Property("feed-forward dim", d.FfnDim),
            Property("vocabulary", d.VocabSize),
            Property("context length", context),
            .. familyProperties,
            Property("RMSNorm epsilon", normEpsilon),
            Property("output", file.FindTensor("output.weight") != null ? "separate matrix" : "tied to the token embedding"),
        ],
    };
}
