using Velo.Formats;

namespace Velo.Models.Blocks;

/// <summary>
/// Reads a decoder's hyperparameters from its <c>{architecture}.*</c> metadata, the one place every family refuses
/// hostile numbers: a uint32 that does not fit an int is refused by name (not wrapped negative or left to an
/// OverflowException), the attention shape and the embedding's shape are checked, and sizes the forward pass
/// multiplies must fit.
/// </summary>
internal sealed class HyperparameterReader(GgufFile file, string architecture)
{
    private readonly GgufMetadata _metadata = file.Metadata;

    public int Int(string key, uint? defaultValue = null)
    {
        string fullKey = $"{architecture}.{key}";
        uint value = defaultValue is { } d ? _metadata.GetUInt32(fullKey, d) : _metadata.RequireUInt32(fullKey);
        return value <= int.MaxValue
            ? (int)value
            : throw new GgufFormatException($"{file.Path}: metadata '{fullKey}' = {value} is too large (at most {int.MaxValue})");
    }

    public float Float(string key, float defaultValue) => _metadata.GetFloat32($"{architecture}.{key}", defaultValue);

    public float RequireFloat(string key) => _metadata.TryGetFloat32($"{architecture}.{key}", out float value)
        ? value
        : throw new GgufFormatException($"{file.Path}: required metadata key '{architecture}.{key}' is missing");

    /// <summary>The residual width and the attention heads: query heads shared evenly by KV heads, keys and values of one length.</summary>
    public (int Dim, int Heads, int KvHeads, int HeadDim) AttentionShape()
    {
        int dim = Int("embedding_length");
        int heads = Int("attention.head_count");
        int kvHeads = Int("attention.head_count_kv", (uint)heads);
        if (heads <= 0 || kvHeads <= 0 || heads % kvHeads != 0)
            throw new GgufFormatException($"{file.Path}: {heads} attention heads cannot be shared by {kvHeads} KV heads");
        int headDim = Int("attention.key_length", (uint)(dim / heads));
        int valueDim = Int("attention.value_length", (uint)headDim);
        if (valueDim != headDim)
            throw new NotSupportedException($"{file.Path}: key length {headDim} differs from value length {valueDim}");
        return (dim, heads, kvHeads, headDim);
    }

    /// <summary>The vocabulary size, from the token embedding's shape [dim, vocabulary].</summary>
    public int VocabularyFromEmbedding(int dim)
    {
        var embedding = file.RequireTensor("token_embd.weight");
        if (embedding.Shape.Count != 2 || embedding.Shape[0] != dim || embedding.Shape[1] > int.MaxValue)
            throw new GgufFormatException(
                $"{file.Path}: tensor 'token_embd.weight' has shape [{string.Join(", ", embedding.Shape)}], expected [{dim} (embedding_length), vocabulary size of at most {int.MaxValue}]");
        return (int)embedding.Shape[1];
    }

    /// <summary>Checks what every decoder's sizes need; <paramref name="describe"/> shows the whole configuration in the error.</summary>
    public static void CheckDecoder(GgufFile file, DecoderDimensions d, int contextLength, object describe)
    {
        string path = file.Path;
        if (d.Dim <= 0 || d.Layers <= 0 || d.FfnDim <= 0 || d.HeadDim <= 0 || contextLength <= 0 || d.VocabSize <= 0)
            throw new GgufFormatException($"{path}: model hyperparameters are not all positive: {describe}");
        // Each layer has several tensors of its own: a block count beyond the file's tensors is corrupt, and must not
        // size the per-layer arrays.
        if (d.Layers > file.Tensors.Count)
            throw new GgufFormatException($"{path}: block_count {d.Layers} is impossible for a file of {file.Tensors.Count} tensors");
        // QueryDim and KvDim are int products the forward pass relies on.
        if ((long)d.Heads * d.HeadDim > int.MaxValue)
            throw new GgufFormatException($"{path}: {d.Heads} heads of {d.HeadDim} dimensions are too many (at most {int.MaxValue} in all)");
        if (d.HeadDim % 2 != 0 || d.RopeDims % 2 != 0 || d.RopeDims <= 0 || d.RopeDims > d.HeadDim)
            throw new GgufFormatException($"{path}: rope over {d.RopeDims} of {d.HeadDim} head dimensions is not possible");
    }
}
