using Velo.Formats;
using Velo.Tensors;

namespace Velo.Models;

/// <summary>One tensor of a quantization plan: its name, shape, and the type it has and will have.</summary>
public sealed record TensorConversion(string Name, long[] Shape, GgmlType From, GgmlType To, long OutputBytes);

/// <summary>
/// Converts a GGUF model from F32/F16/BF16 to a quantized file type with <see cref="QuantizationRecipe"/>'s
/// per-tensor mix, like llama.cpp's llama-quantize: metadata copied (with <c>general.file_type</c> set), tensors in
/// the input's order, data streamed from the memory-mapped input a slab of rows at a time.
/// </summary>
public static unsafe class ModelQuantizer
{
    /// <summary>What each tensor will become, after checking the input can be converted.</summary>
    public static IReadOnlyList<TensorConversion> Plan(GgufFile input, ModelFileType fileType)
    {
        if (input.Tensors.Count == 0) throw new ArgumentException($"{input.Path}: the file holds no tensors (a vocabulary-only file?)");
        var recipe = new QuantizationRecipe(fileType, LayerCount(input), input.FindTensor("output.weight") != null);
        var plan = new List<TensorConversion>(input.Tensors.Count);
        foreach (var t in input.Tensors)
        {
            var target = recipe.TargetType(t.Name, t.Shape) ?? t.Type;
            if (target != t.Type && t.Type is not (GgmlType.F32 or GgmlType.F16 or GgmlType.BF16))
                throw new ArgumentException(
                    $"{input.Path}: tensor '{t.Name}' is already quantized ({t.Type}); quantize from an F32, F16 or BF16 file, since requantizing compounds the rounding errors");
            plan.Add(new TensorConversion(t.Name, t.Shape.ToArray(), t.Type, target, GgufWriter.ByteSize(target, t.Shape)));
        }
        return plan;
    }

    /// <summary>Writes the converted model; <paramref name="progress"/> hears each tensor as it starts and the bytes written.</summary>
    public static void Quantize(
        GgufFile input, string outputPath, ModelFileType fileType, int threads,
        Action<TensorConversion>? tensorStarted = null, Action<long>? bytesWritten = null)
    {
        if (Path.GetFullPath(outputPath) == Path.GetFullPath(input.Path))
            throw new ArgumentException("the output file must differ from the input (the input is read while the output is written)");
        var plan = Plan(input, fileType);
        var writer = new GgufWriter(input.Alignment);
        writer.SetAll(input.Metadata);
        writer.Set("general.file_type", (uint)fileType);
        writer.Set("general.quantization_version", 2u); // ggml's GGML_QNT_VERSION, which llama-quantize always writes

        var rows = new RowStreamer(threads);
        foreach (var conversion in plan)
        {
            var source = input.RequireTensor(conversion.Name);
            writer.AddTensor(conversion.Name, conversion.To, conversion.Shape, stream =>
            {
                tensorStarted?.Invoke(conversion);
                if (conversion.From == conversion.To) Copy(input, source, stream, bytesWritten);
                else Convert(input, source, conversion, stream, rows, bytesWritten);
            });
        }
        writer.WriteAtomically(outputPath);
    }

    private static void Copy(GgufFile input, GgufTensorInfo tensor, Stream stream, Action<long>? bytesWritten)
    {
        const int piece = 1 << 22;
        byte* data = input.TensorData(tensor);
        for (long offset = 0; offset < tensor.ByteSize; offset += piece)
        {
            int length = (int)Math.Min(piece, tensor.ByteSize - offset);
            stream.Write(new ReadOnlySpan<byte>(data + offset, length));
            bytesWritten?.Invoke(length);
        }
    }

    private static void Convert(GgufFile input, GgufTensorInfo tensor, TensorConversion conversion, Stream stream, RowStreamer rows, Action<long>? bytesWritten)
    {
        int columns = checked((int)tensor.Shape[0]);
        long rowCount = tensor.ElementCount / columns;
        int sourceRowBytes = checked((int)GgmlTypeInfo.RowBytes(tensor.Type, columns));
        nint data = (nint)input.TensorData(tensor);
        var type = tensor.Type;
        rows.Write(stream, conversion.To, columns, rowCount,
            (row, values) => Dequantize.Row(type, new ReadOnlySpan<byte>((byte*)data + row * sourceRowBytes, sourceRowBytes), values),
            bytesWritten);
    }

    /// <summary>The block count from the metadata, or from the tensor names when a file lacks it.</summary>
    private static int LayerCount(GgufFile file)
    {
        if (file.Architecture is { } arch && file.Metadata.TryGetUInt32($"{arch}.block_count", out uint blocks)) return (int)blocks;
        int layers = 0;
        foreach (var t in file.Tensors)
        {
            if (!t.Name.StartsWith("blk.", StringComparison.Ordinal)) continue;
            int end = t.Name.IndexOf('.', 4);
            if (end > 4 && int.TryParse(t.Name.AsSpan(4, end - 4), out int layer)) layers = Math.Max(layers, layer + 1);
        }
        return layers;
    }
}
