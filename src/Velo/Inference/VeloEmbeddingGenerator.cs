using Microsoft.Extensions.AI;

namespace Velo.Inference;

/// <summary>
/// An encoder as Microsoft.Extensions.AI's <see cref="IEmbeddingGenerator{TInput,TEmbedding}"/>: each call embeds
/// its texts in packed batches through one <see cref="TextEmbedder"/>, one call at a time (the embedder's state is
/// shared). <see cref="EmbeddingGenerationOptions.Dimensions"/> keeps the first dimensions and scales them back to
/// unit length, as OpenAI's <c>dimensions</c> does.
/// </summary>
public sealed class VeloEmbeddingGenerator : IEmbeddingGenerator<string, Embedding<float>>
{
    private readonly TextEmbedder _embedder;
    private readonly Lock _lock = new();
    private readonly EmbeddingGeneratorMetadata _metadata;

    public VeloEmbeddingGenerator(TextEmbedder embedder, string modelId)
    {
        _embedder = embedder;
        _metadata = new EmbeddingGeneratorMetadata("velo", null, modelId, embedder.Dimensions);
    }

    /// <summary>The name clients know the model by.</summary>
    public string ModelId => _metadata.DefaultModelId!;

    /// <summary>The tokenizer the encoder reads its inputs with.</summary>
    public Velo.Text.ITokenizer Tokenizer => _embedder.Tokenizer;

    public Task<GeneratedEmbeddings<Embedding<float>>> GenerateAsync(IEnumerable<string> values, EmbeddingGenerationOptions? options = null,
        CancellationToken cancellationToken = default)
    {
        var texts = values.ToArray();
        int dimensions = options?.Dimensions ?? _embedder.Dimensions;
        if (dimensions < 1 || dimensions > _embedder.Dimensions)
            throw new ArgumentOutOfRangeException(nameof(options), dimensions, $"dimensions must be between 1 and the model's {_embedder.Dimensions}");
        cancellationToken.ThrowIfCancellationRequested();
        int[][] tokens;
        float[][] vectors;
        lock (_lock)
        {
            tokens = texts.Select(_embedder.Tokenize).ToArray();
            vectors = _embedder.EmbedTokens(tokens);
        }
        var result = new GeneratedEmbeddings<Embedding<float>>(vectors.Select(v => new Embedding<float>(Truncated(v, dimensions))
        {
            ModelId = _metadata.DefaultModelId, CreatedAt = DateTimeOffset.UtcNow,
        }))
        {
            Usage = new UsageDetails { InputTokenCount = tokens.Sum(t => (long)t.Length), TotalTokenCount = tokens.Sum(t => (long)t.Length) },
        };
        return Task.FromResult(result);
    }

    /// <summary>The first <paramref name="dimensions"/> values at unit length again; the whole vector as it is.</summary>
    private static float[] Truncated(float[] vector, int dimensions)
    {
        if (dimensions == vector.Length) return vector;
        var cut = vector[..dimensions];
        float norm = System.Numerics.Tensors.TensorPrimitives.Norm(cut);
        if (norm > 0) System.Numerics.Tensors.TensorPrimitives.Divide(cut, norm, cut);
        return cut;
    }

    /// <summary>Embeds already tokenized inputs (the server's token-array form), one call at a time.</summary>
    public float[][] EmbedTokens(IReadOnlyList<int[]> inputs)
    {
        lock (_lock) return _embedder.EmbedTokens(inputs);
    }

    /// <summary>The embedder's tokenization: special tokens added, cut to the model's input limit.</summary>
    /// <summary>A reranker's raw scores (its first output) of each document against <paramref name="query"/>, with the
    /// tokens the pairs took.</summary>
    public float[] Rerank(string query, IReadOnlyList<string> documents, out long tokenCount)
    {
        lock (_lock)
        {
            var pairs = documents.Select(d => _embedder.TokenizePair(query, d)).ToArray();
            tokenCount = pairs.Sum(p => (long)p.Tokens.Length);
            return _embedder.EmbedTokens(pairs.Select(p => p.Tokens).ToArray(), pairs.Select(p => p.Types).ToArray()).Select(row => row[0]).ToArray();
        }
    }

    public IReadOnlyList<string> Labels => _embedder.Labels;

    public int[] Tokenize(string text)
    {
        lock (_lock) return _embedder.Tokenize(text);
    }

    public int Dimensions => _embedder.Dimensions;
    public int MaxInputTokens => _embedder.MaxInputTokens;
    public int VocabSize => _embedder.Tokenizer.VocabSize;

    /// <summary>Cuts <paramref name="vector"/> to its first <paramref name="dimensions"/> and renormalizes, as <c>dimensions</c> does.</summary>
    public static float[] WithDimensions(float[] vector, int dimensions) => Truncated(vector, dimensions);

    public object? GetService(Type serviceType, object? serviceKey = null) =>
        serviceKey != null ? null
        : serviceType == typeof(EmbeddingGeneratorMetadata) ? _metadata
        : serviceType.IsInstanceOfType(this) ? this
        : serviceType.IsInstanceOfType(_embedder) ? _embedder
        : null;

    /// <summary>The embedder belongs to the caller, who disposes it.</summary>
    public void Dispose()
    {
    }
}
