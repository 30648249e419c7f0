using Velo.Formats;
using Velo.Kernels;
using Velo.Tensors;

namespace Velo.Models;

/// <summary>The weights of one decoder layer. Matrices point into the memory-mapped file; vectors are small float copies.</summary>
public readonly unsafe struct LlamaLayerWeights
{
    public required float* AttentionNorm { get; init; }
    public required WeightMatrix Query { get; init; }
    public required WeightMatrix Key { get; init; }
    public required WeightMatrix Value { get; init; }
    public required WeightMatrix Output { get; init; }
    public float* QueryBias { get; init; }
    public float* KeyBias { get; init; }
    public float* ValueBias { get; init; }
    public float* QueryNorm { get; init; }
    public float* KeyNorm { get; init; }
    public required float* FfnNorm { get; init; }
    public required WeightMatrix Gate { get; init; }
    public required WeightMatrix Up { get; init; }
    public required WeightMatrix Down { get; init; }
}

/// <summary>Binds a Llama-family GGUF file's tensors by their llama.cpp names, checking every shape and type.</summary>
public sealed unsafe class LlamaWeights : IDisposable
{
    private readonly GgufFile _file;
    private readonly NativeBuffer _vectors;
    private long _vectorsUsed;

    public LlamaWeights(GgufFile file, LlamaConfig c)
    {
        _file = file;
        _vectors = new NativeBuffer(VectorBytes(file));
        TokenEmbedding = Matrix("token_embd.weight", c.VocabSize, c.Dim);
        OutputNorm = Vector("output_norm.weight", c.Dim);
        // Tied embeddings: without an output matrix the token embedding doubles as the classifier.
        Output = file.FindTensor("output.weight") != null ? Matrix("output.weight", c.VocabSize, c.Dim) : TokenEmbedding;
        RopeFrequencyFactors = file.FindTensor("rope_freqs.weight") != null ? Vector("rope_freqs.weight", c.RopeDims / 2) : null;

        Layers = new LlamaLayerWeights[c.Layers];
        for (int i = 0; i < c.Layers; i++)
        {
            string p = $"blk.{i}.";
            Layers[i] = new LlamaLayerWeights
            {
                AttentionNorm = Vector(p + "attn_norm.weight", c.Dim),
                Query = Matrix(p + "attn_q.weight", c.QueryDim, c.Dim),
                Key = Matrix(p + "attn_k.weight", c.KvDim, c.Dim),
                Value = Matrix(p + "attn_v.weight", c.KvDim, c.Dim),
                Output = Matrix(p + "attn_output.weight", c.Dim, c.QueryDim),
                QueryBias = OptionalVector(p + "attn_q.bias", c.QueryDim),
                KeyBias = OptionalVector(p + "attn_k.bias", c.KvDim),
                ValueBias = OptionalVector(p + "attn_v.bias", c.KvDim),
                QueryNorm = OptionalVector(p + "attn_q_norm.weight", c.HeadDim),
                KeyNorm = OptionalVector(p + "attn_k_norm.weight", c.HeadDim),
                FfnNorm = Vector(p + "ffn_norm.weight", c.Dim),
                Gate = Matrix(p + "ffn_gate.weight", c.FfnDim, c.Dim),
                Up = Matrix(p + "ffn_up.weight", c.FfnDim, c.Dim),
                Down = Matrix(p + "ffn_down.weight", c.Dim, c.FfnDim),
            };
        }
    }

    public WeightMatrix TokenEmbedding { get; }
    public float* OutputNorm { get; }
    public WeightMatrix Output { get; }
    public float* RopeFrequencyFactors { get; }
    public LlamaLayerWeights[] Layers { get; }

    private WeightMatrix Matrix(string name, int rows, int cols)
    {
        var t = _file.RequireTensor(name);
        if (t.Shape.Count != 2 || t.Shape[0] != cols || t.Shape[1] != rows)
            throw new GgufFormatException($"{_file.Path}: tensor '{name}' has shape [{string.Join(", ", t.Shape)}], expected [{cols}, {rows}]");
        if (!GgmlTypeInfo.IsSupported(t.Type))
            throw new NotSupportedException($"{_file.Path}: tensor '{name}' has type {t.Type}, which Velo cannot compute with yet");
        return new WeightMatrix(_file.TensorData(t), t.Type, rows, cols);
    }

    private float* OptionalVector(string name, int length) => _file.FindTensor(name) != null ? Vector(name, length) : null;

    private float* Vector(string name, int length)
    {
        var t = _file.RequireTensor(name);
        // Only 1-D tensors are counted in the vector buffer's size, so a vector of any other shape is refused even
        // when its element count is right: copying it would write past the buffer.
        if (t.Shape.Count != 1 || t.ElementCount != length)
            throw new GgufFormatException($"{_file.Path}: tensor '{name}' has shape [{string.Join(", ", t.Shape)}], expected [{length}]");
        if (!GgmlTypeInfo.IsSupported(t.Type))
            throw new NotSupportedException($"{_file.Path}: tensor '{name}' has type {t.Type}, which Velo cannot compute with yet");
        long bytes = AlignedFloatBytes(length);
        // The last guard before a raw copy into native memory: the buffer was sized from the file's 1-D tensors.
        if (bytes > _vectors.Length - _vectorsUsed)
            throw new InvalidOperationException($"{_file.Path}: tensor '{name}' does not fit in the {_vectors.Length} bytes reserved for vectors");
        float* dst = (float*)((byte*)_vectors.Pointer + _vectorsUsed);
        _vectorsUsed += bytes;
        Dequantize.Row(t.Type, _file.TensorBytes(t), new Span<float>(dst, length));
        return dst;
    }

    private const int FloatsPerLine = NativeBuffer.Alignment / sizeof(float);

    /// <summary>A vector's floats rounded up to whole lines, so that every vector starts aligned.</summary>
    private static long AlignedFloatBytes(long elements) =>
        SizeMath.Product("bytes of a vector as floats",
            elements / FloatsPerLine + (elements % FloatsPerLine == 0 ? 0 : 1), NativeBuffer.Alignment);

    /// <summary>Room for every 1-D tensor as floats (norms, biases, rope factors: a tiny share of the model).</summary>
    private static long VectorBytes(GgufFile file)
    {
        long total = 0;
        foreach (var t in file.Tensors)
            if (t.Shape.Count == 1 && !SizeMath.TryAdd(total, AlignedFloatBytes(t.ElementCount), out total))
                throw new GgufFormatException($"{file.Path}: the 1-D tensors hold too many elements to load as floats");
        return total;
    }

    public void Dispose() => _vectors.Dispose();
}
