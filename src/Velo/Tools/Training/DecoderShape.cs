namespace Velo.Tools.Training;

/// <summary>The sizes of a Llama decoder that training and pruning work on (llama.cpp's <c>llama</c> architecture).</summary>
public sealed record DecoderShape(
    int Dim, int Layers, int Heads, int KvHeads, int HeadDim, int FfnDim, int VocabSize,
    float NormEpsilon, float RopeBase, bool TiedOutput)
{
    public int QueryDim => Heads * HeadDim;
    public int KvDim => KvHeads * HeadDim;

    public void Validate()
    {
        if (Dim <= 0 || Layers <= 0 || Heads <= 0 || KvHeads <= 0 || HeadDim <= 0 || FfnDim <= 0 || VocabSize <= 0)
            throw new ArgumentException($"every size of a decoder must be positive: {this}");
        if (Heads % KvHeads != 0) throw new ArgumentException($"{Heads} attention heads cannot be shared evenly by {KvHeads} KV heads");
        if (HeadDim % 2 != 0) throw new ArgumentException($"rope needs an even head dimension, got {HeadDim}");
    }
}

/// <summary>One tensor of a <see cref="ParameterLayout"/>: a GGUF name, its GGUF shape (inputs first) and where its values lie.</summary>
public sealed record ParameterTensor(string Name, long[] Shape, int Offset, int Length)
{
    /// <summary>Matrices are decayed by AdamW; norm weights are not.</summary>
    public bool IsMatrix => Shape.Length == 2;
}

/// <summary>
/// Every parameter of a decoder in one flat array, tensor after tensor under its GGUF name, so the optimizer,
/// gradient clipping and checkpoints treat the model as a single vector.
/// </summary>
public sealed class ParameterLayout
{
    private readonly Dictionary<string, ParameterTensor> _byName = [];

    public ParameterLayout(DecoderShape shape)
    {
        shape.Validate();
        Shape = shape;
        var tensors = new List<ParameterTensor>();
        long offset = 0;
        void Add(string name, params long[] dims)
        {
            long length = dims.Aggregate(1L, (a, b) => checked(a * b));
            if (offset + length > int.MaxValue) throw new NotSupportedException($"a model of more than {int.MaxValue} parameters is too large to train here");
            var tensor = new ParameterTensor(name, dims, (int)offset, (int)length);
            tensors.Add(tensor);
            _byName[name] = tensor;
            offset += length;
        }
        Add("token_embd.weight", shape.Dim, shape.VocabSize);
        for (int l = 0; l < shape.Layers; l++)
        {
            Add($"blk.{l}.attn_norm.weight", shape.Dim);
            Add($"blk.{l}.attn_q.weight", shape.Dim, shape.QueryDim);
            Add($"blk.{l}.attn_k.weight", shape.Dim, shape.KvDim);
            Add($"blk.{l}.attn_v.weight", shape.Dim, shape.KvDim);
            Add($"blk.{l}.attn_output.weight", shape.QueryDim, shape.Dim);
            Add($"blk.{l}.ffn_norm.weight", shape.Dim);
            Add($"blk.{l}.ffn_gate.weight", shape.Dim, shape.FfnDim);
            Add($"blk.{l}.ffn_up.weight", shape.Dim, shape.FfnDim);
            Add($"blk.{l}.ffn_down.weight", shape.FfnDim, shape.Dim);
        }
        Add("output_norm.weight", shape.Dim);
        if (!shape.TiedOutput) Add("output.weight", shape.Dim, shape.VocabSize);
        Tensors = tensors;
        Count = (int)offset;
    }

    public DecoderShape Shape { get; }
    public IReadOnlyList<ParameterTensor> Tensors { get; }

    /// <summary>Parameters in all.</summary>
    public int Count { get; }

    public ParameterTensor this[string name] => _byName[name];

    /// <summary>
    /// A from-scratch initialisation: matrices N(0, 0.02²) (the residual projections scaled by 1/√(2·layers), as
    /// GPT-2 does, so the residual stream does not grow with depth), norm weights 1; seeded, so reproducible.
    /// </summary>
    public float[] RandomParameters(ulong seed)
    {
        var random = new Random(unchecked((int)(seed ^ (seed >> 32))));
        var parameters = new float[Count];
        float residualScale = 1 / MathF.Sqrt(2 * Shape.Layers);
        foreach (var tensor in Tensors)
        {
            var values = parameters.AsSpan(tensor.Offset, tensor.Length);
            if (!tensor.IsMatrix)
            {
                values.Fill(1);
                continue;
            }
            float deviation = tensor.Name.EndsWith("attn_output.weight", StringComparison.Ordinal) || tensor.Name.EndsWith("ffn_down.weight", StringComparison.Ordinal)
                ? 0.02f * residualScale
                : 0.02f;
            for (int i = 0; i < values.Length; i++)
            {
                // Box–Muller from two uniform draws in (0, 1].
                double u1 = 1 - random.NextDouble(), u2 = random.NextDouble();
                values[i] = (float)(deviation * Math.Sqrt(-2 * Math.Log(u1)) * Math.Cos(2 * Math.PI * u2));
            }
        }
        return parameters;
    }

    public ParameterTensor Layer(int layer, string tensor) => _byName[$"blk.{layer}.{tensor}.weight"];

    /// <summary>The output projection: its own tensor, or the token embedding when they are tied.</summary>
    public ParameterTensor Output => Shape.TiedOutput ? _byName["token_embd.weight"] : _byName["output.weight"];
}
