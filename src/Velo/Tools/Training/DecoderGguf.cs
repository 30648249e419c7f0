using System.Runtime.InteropServices;
using Velo.Formats;
using Velo.Tensors;

namespace Velo.Tools.Training;

/// <summary>Reads a Llama GGUF's weights into a float parameter vector, and writes one back as an ordinary GGUF.</summary>
public static unsafe class DecoderGguf
{
    /// <summary>The architectures whose tensors and rope this trainer reproduces exactly.</summary>
    public static readonly IReadOnlyList<string> Architectures = ["llama", "mistral"];

    public static string RequireArchitecture(GgufFile file) =>
        file.Architecture is { } arch && Architectures.Contains(arch)
            ? arch
            : throw new NotSupportedException(
                $"{file.Path}: architecture '{file.Architecture}' cannot be pruned or trained; only {string.Join(" and ", Architectures)} (plain Llama decoders) can");

    public static DecoderShape ReadShape(GgufFile file)
    {
        string arch = RequireArchitecture(file);
        var m = file.Metadata;
        int Int(string key, uint? fallback = null)
        {
            uint value = fallback is { } f ? m.GetUInt32($"{arch}.{key}", f) : m.RequireUInt32($"{arch}.{key}");
            return value <= 1 << 24 ? (int)value : throw new GgufFormatException($"{file.Path}: '{arch}.{key}' = {value} is too large to train");
        }
        int dim = Int("embedding_length");
        int heads = Int("attention.head_count");
        int kvHeads = Int("attention.head_count_kv", (uint)heads);
        if (heads == 0 || kvHeads == 0 || heads % kvHeads != 0)
            throw new GgufFormatException($"{file.Path}: {heads} attention heads cannot be shared by {kvHeads} KV heads");
        int headDim = Int("attention.key_length", (uint)(dim / heads));
        if (Int("rope.dimension_count", (uint)headDim) != headDim)
            throw new NotSupportedException($"{file.Path}: rope over part of each head is not supported for training");
        if (m.GetString($"{arch}.rope.scaling.type") is { } scaling and not "none")
            throw new NotSupportedException($"{file.Path}: rope scaling '{scaling}' is not supported for training");
        if (file.FindTensor("rope_freqs.weight") != null)
            throw new NotSupportedException($"{file.Path}: rope frequency factors are not supported for training");
        var embedding = file.RequireTensor("token_embd.weight");
        if (embedding.Shape.Count != 2 || embedding.Shape[0] != dim || embedding.Shape[1] > 1 << 24)
            throw new GgufFormatException($"{file.Path}: 'token_embd.weight' has shape [{string.Join(", ", embedding.Shape)}], expected [{dim}, vocabulary]");
        var shape = new DecoderShape(dim, Int("block_count"), heads, kvHeads, headDim, Int("feed_forward_length"), (int)embedding.Shape[1],
            m.GetFloat32($"{arch}.attention.layer_norm_rms_epsilon", 1e-5f), m.GetFloat32($"{arch}.rope.freq_base", 10000f),
            TiedOutput: file.FindTensor("output.weight") == null);
        shape.Validate();
        return shape;
    }

    /// <summary>Every tensor of the layout, dequantized to float, checked against the file's shapes.</summary>
    public static float[] ReadParameters(GgufFile file, ParameterLayout layout)
    {
        long bytes = (long)layout.Count * sizeof(float);
        long available = Inference.AvailableMemory.Measure();
        if (bytes > available)
            throw new InvalidOperationException($"{file.Path}: its {layout.Count} parameters take {bytes >> 20} MiB in F32, more than the {available >> 20} MiB available");
        var parameters = new float[layout.Count];
        foreach (var tensor in layout.Tensors)
            ReadTensor(file, tensor.Name, tensor.Shape, parameters.AsSpan(tensor.Offset, tensor.Length));
        return parameters;
    }

    /// <summary>Dequantizes a whole tensor into <paramref name="destination"/> after checking its shape.</summary>
    public static void ReadTensor(GgufFile file, string name, long[] expectedShape, Span<float> destination)
    {
        var info = file.RequireTensor(name);
        if (!info.Shape.SequenceEqual(expectedShape))
            throw new GgufFormatException($"{file.Path}: tensor '{name}' has shape [{string.Join(", ", info.Shape)}], expected [{string.Join(", ", expectedShape)}]");
        int columns = (int)expectedShape[0];
        long rows = info.ElementCount / columns;
        int rowBytes = checked((int)GgmlTypeInfo.RowBytes(info.Type, columns));
        var bytes = file.TensorBytes(info);
        for (long r = 0; r < rows; r++)
            Dequantize.Row(info.Type, bytes.Slice((int)(r * rowBytes), rowBytes), destination.Slice((int)(r * columns), columns));
    }

    /// <summary>The llama.cpp hyperparameter keys that describe <paramref name="shape"/>.</summary>
    public static void SetShape(GgufWriter writer, string arch, DecoderShape shape)
    {
        writer.Set($"{arch}.embedding_length", (uint)shape.Dim);
        writer.Set($"{arch}.block_count", (uint)shape.Layers);
        writer.Set($"{arch}.feed_forward_length", (uint)shape.FfnDim);
        writer.Set($"{arch}.attention.head_count", (uint)shape.Heads);
        writer.Set($"{arch}.attention.head_count_kv", (uint)shape.KvHeads);
        // llama.cpp derives the head size as embedding_length / head_count unless told: once heads are pruned it must be told.
        writer.Set($"{arch}.attention.key_length", (uint)shape.HeadDim);
        writer.Set($"{arch}.attention.value_length", (uint)shape.HeadDim);
        writer.Set($"{arch}.rope.dimension_count", (uint)shape.HeadDim);
    }

    /// <summary>
    /// Writes the parameters as an F32 GGUF: the metadata (tokenizer, names) of <paramref name="template"/>, the shape
    /// of <paramref name="layout"/>.
    /// </summary>
    public static void Write(string path, GgufFile template, ParameterLayout layout, float[] parameters)
    {
        string arch = RequireArchitecture(template);
        var writer = new GgufWriter(template.Alignment);
        writer.SetAll(template.Metadata);
        SetShape(writer, arch, layout.Shape);
        writer.Set("general.file_type", 0u); // LLAMA_FTYPE_ALL_F32
        foreach (var tensor in layout.Tensors)
        {
            var values = parameters.AsMemory(tensor.Offset, tensor.Length);
            writer.AddTensor(tensor.Name, GgmlType.F32, tensor.Shape, stream => stream.Write(MemoryMarshal.AsBytes(values.Span)));
        }
        writer.WriteAtomically(path);
    }
}
