using Velo.Formats;
using Velo.Kernels;
using Velo.Models.Blocks;
using Velo.Tensors;

namespace Velo.Models.Bert;

/// <summary>A weight matrix with its bias.</summary>
internal readonly unsafe struct Linear
{
    public required WeightMatrix Weight { get; init; }
    public required float* Bias { get; init; }

    /// <summary>The weights copied into <see cref="PackedFloatGemm"/>'s panels, where that kernel takes them; else null.</summary>
    public PackedFloatMatrix? Packed { get; init; }

    public static Linear Bind(WeightBinder bind, string name, int rows, int cols) => new()
    {
        Weight = bind.Matrix(name + ".weight", rows, cols),
        Bias = bind.Vector(name + ".bias", rows),
    };

    /// <summary>
    /// A layer bound for <see cref="WithPacked"/>: float weights that <see cref="PackedFloatMatrix.CanPack"/> takes
    /// are bound as the file has them (they go into <see cref="PackedFloatGemm"/>'s panels, so repacking them for the
    /// integer kernels too would be wasted), others as <see cref="Bind"/> binds them. Q8_0 weights stay Q8_0, in
    /// the integer kernels' row groups (<see cref="RowGroupKernels"/>), which run them faster than their F32 copy.
    /// </summary>
    public static Linear BindForPacking(WeightBinder bind, string name, int rows, int cols)
    {
        // Types the integer kernels take are bound for them at once: bound first as only looked up, their file
        // pages would count as still read (WeightBinder.RepackGrowth) after the repack released them.
        if (RowGroupKernels.Handles(bind.TypeOf(name + ".weight"))) return Bind(bind, name, rows, cols);
        var plain = bind.Matrix(name + ".weight", rows, cols, multiplied: false);
        if (!TakesPanels(plain)) return Bind(bind, name, rows, cols);
        return new Linear { Weight = plain, Bias = bind.Vector(name + ".bias", rows) };
    }

    /// <summary>This layer with its weights packed, when bound for it (<see cref="BindForPacking"/>).</summary>
    public Linear WithPacked() => TakesPanels(Weight) ? this with { Packed = new PackedFloatMatrix(Weight) } : this;

    private static bool TakesPanels(in WeightMatrix w) => PackedFloatMatrix.CanPack(w) && !RowGroupKernels.Handles(w.Type);
}

/// <summary>A LayerNorm's weight and bias.</summary>
internal readonly unsafe struct Norm
{
    public required float* Weight { get; init; }
    public required float* Bias { get; init; }

    public static Norm Bind(WeightBinder bind, string name, int dim) => new()
    {
        Weight = bind.Vector(name + ".weight", dim),
        Bias = bind.Vector(name + ".bias", dim),
    };
}

/// <summary>One post-norm encoder layer.</summary>
internal readonly struct BertLayerWeights
{
    public required Linear Query { get; init; }
    public required Linear Key { get; init; }
    public required Linear Value { get; init; }
    public required Linear Output { get; init; }
    public required Norm AttentionNorm { get; init; }
    public required Linear Up { get; init; }
    public required Linear Down { get; init; }
    public required Norm OutputNorm { get; init; }
}

/// <summary>Binds a <c>bert</c> GGUF file's tensors by their llama.cpp names, checking every shape and type.</summary>
internal sealed unsafe class BertWeights : IDisposable
{
    private readonly WeightBinder _bind;

    public BertWeights(GgufFile file, BertConfig c)
    {
        _bind = new WeightBinder(file);
        TokenEmbedding = _bind.Matrix("token_embd.weight", c.VocabSize, c.Dim, multiplied: false);
        PositionEmbedding = _bind.Matrix("position_embd.weight", c.ContextLength, c.Dim, multiplied: false);
        TokenTypes = _bind.Matrix("token_types.weight", c.TokenTypes, c.Dim, multiplied: false);
        EmbeddingNorm = Norm.Bind(_bind, "token_embd_norm", c.Dim);
        // The six matrices of every layer, packed for PackedFloatGemm on all cores at once: copying and widening
        // them is most of an encoder's load time.
        var linears = new Linear[c.Layers * 6];
        for (int i = 0; i < c.Layers; i++)
        {
            string p = $"blk.{i}.";
            linears[6 * i] = Linear.BindForPacking(_bind, p + "attn_q", c.Dim, c.Dim);
            linears[6 * i + 1] = Linear.BindForPacking(_bind, p + "attn_k", c.Dim, c.Dim);
            linears[6 * i + 2] = Linear.BindForPacking(_bind, p + "attn_v", c.Dim, c.Dim);
            linears[6 * i + 3] = Linear.BindForPacking(_bind, p + "attn_output", c.Dim, c.Dim);
            linears[6 * i + 4] = Linear.BindForPacking(_bind, p + "ffn_up", c.FfnDim, c.Dim);
            linears[6 * i + 5] = Linear.BindForPacking(_bind, p + "ffn_down", c.Dim, c.FfnDim);
        }
        Parallel.For(0, linears.Length, i => linears[i] = linears[i].WithPacked());
        Layers = new BertLayerWeights[c.Layers];
        for (int i = 0; i < c.Layers; i++)
        {
            string p = $"blk.{i}.";
            Layers[i] = new BertLayerWeights
            {
                Query = linears[6 * i],
                Key = linears[6 * i + 1],
                Value = linears[6 * i + 2],
                Output = linears[6 * i + 3],
                AttentionNorm = Norm.Bind(_bind, p + "attn_output_norm", c.Dim),
                Up = linears[6 * i + 4],
                Down = linears[6 * i + 5],
                OutputNorm = Norm.Bind(_bind, p + "layer_output_norm", c.Dim),
            };
        }
        if (c.Labels.Count > 0)
        {
            Classifier = Linear.Bind(_bind, "cls", c.ClassifierWidth, c.Dim);
            if (c.HasClassifierOutput) ClassifierOutput = Linear.Bind(_bind, "cls.output", c.Labels.Count, c.ClassifierWidth);
        }
    }

    public WeightMatrix TokenEmbedding { get; }
    public WeightMatrix PositionEmbedding { get; }
    public WeightMatrix TokenTypes { get; }
    public Norm EmbeddingNorm { get; }
    public BertLayerWeights[] Layers { get; }

    /// <summary>The classification head's first layer (tanh after it), when the file has one (rank pooling uses it).</summary>
    public Linear? Classifier { get; }

    /// <summary>The head's optional second layer.</summary>
    public Linear? ClassifierOutput { get; }

    /// <summary>
    /// Bytes of the copies packed at load (<see cref="Linear.Packed"/>), plus what repacking the matrices the
    /// integer kernels read adds (<see cref="WeightBinder.RepackGrowth"/>).
    /// </summary>
    public long PackedBytes
    {
        get
        {
            long bytes = 0;
            foreach (var layer in Layers)
                foreach (var linear in (ReadOnlySpan<Linear>)[layer.Query, layer.Key, layer.Value, layer.Output, layer.Up, layer.Down])
                    if (linear.Packed is { } packed) bytes += (long)packed.Rows * packed.Cols * sizeof(float);
            return bytes + _bind.RepackGrowth;
        }
    }

    public WeightRepack Repack => _bind.Repack;

    public void Dispose()
    {
        foreach (var layer in Layers)
            foreach (var linear in (ReadOnlySpan<Linear>)[layer.Query, layer.Key, layer.Value, layer.Output, layer.Up, layer.Down])
                linear.Packed?.Dispose();
        _bind.Dispose();
    }
}
