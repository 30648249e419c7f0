using System.Globalization;
using Velo.Formats;
using Velo.Tensors;
using Velo.Tools.Training;

namespace Velo.Tools.Pruning;

/// <summary>What to remove: layers (a count, or explicit indices), and the fractions of FFN channels and KV head groups to keep.</summary>
public sealed record PruningRequest
{
    /// <summary>Remove this many layers, those of least block influence (0: none).</summary>
    public int DropLayerCount { get; init; }

    /// <summary>Remove exactly these layers (instead of <see cref="DropLayerCount"/>).</summary>
    public IReadOnlyList<int>? DropLayers { get; init; }

    /// <summary>Fraction of feed-forward channels each layer keeps, in (0, 1].</summary>
    public double FfnKeep { get; init; } = 1;

    /// <summary>Fraction of attention heads each layer keeps, in (0, 1]; whole KV groups go together.</summary>
    public double HeadsKeep { get; init; } = 1;

    /// <summary>
    /// Parses <c>--drop-layers</c>: a count ("1") or a comma-separated list of layer indices ("0,3"). A single number
    /// is a count; to drop only layer 3, write "3,".
    /// </summary>
    public static PruningRequest WithLayers(string? text, PruningRequest request)
    {
        if (string.IsNullOrWhiteSpace(text)) return request;
        if (!text.Contains(','))
            return int.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out int count)
                ? request with { DropLayerCount = count }
                : throw new ArgumentException($"--drop-layers takes a count or a list of layer indices such as 0,3; got '{text}'");
        var indices = new List<int>();
        foreach (string part in text.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
            indices.Add(int.TryParse(part, NumberStyles.None, CultureInfo.InvariantCulture, out int index)
                ? index
                : throw new ArgumentException($"--drop-layers: '{part}' is not a layer index"));
        return request with { DropLayers = indices };
    }

    public void Validate(DecoderShape shape)
    {
        if (!(FfnKeep > 0 && FfnKeep <= 1)) throw new ArgumentException($"--ffn-keep must be in (0, 1], got {FfnKeep.ToString(CultureInfo.InvariantCulture)}");
        if (!(HeadsKeep > 0 && HeadsKeep <= 1)) throw new ArgumentException($"--heads-keep must be in (0, 1], got {HeadsKeep.ToString(CultureInfo.InvariantCulture)}");
        if (DropLayers is { } list)
        {
            foreach (int index in list)
                if (index < 0 || index >= shape.Layers)
                    throw new ArgumentException($"--drop-layers: layer {index} is out of range; the model has layers 0 to {shape.Layers - 1}");
            if (list.Distinct().Count() != list.Count) throw new ArgumentException("--drop-layers names a layer twice");
            if (list.Count >= shape.Layers) throw new ArgumentException($"--drop-layers would remove all {shape.Layers} layers");
        }
        else if (DropLayerCount < 0 || DropLayerCount >= shape.Layers)
        {
            throw new ArgumentException($"--drop-layers {DropLayerCount}: the model has {shape.Layers} layers, so between 0 and {shape.Layers - 1} can be dropped");
        }
    }

    public bool NeedsScores => DropLayers == null && DropLayerCount > 0 || FfnKeep < 1 || HeadsKeep < 1;
}

/// <summary>The decided cut: layers kept (in order), and per kept layer the FFN channels and KV groups kept (ascending).</summary>
public sealed record PruningPlan(
    DecoderShape Original, DecoderShape Pruned, int[] KeptLayers, int[][] KeptChannels, int[][] KeptKvGroups, double[]? LayerInfluence);

/// <summary>
/// Structured pruning of a Llama GGUF: drops whole layers, feed-forward channels and attention head groups, ranked by
/// <see cref="ImportanceScores"/>, and writes an ordinary GGUF of the smaller shape that Velo and llama.cpp load.
/// Every layer keeps the same FFN width and head count, since llama.cpp's <c>llama</c> architecture reads one count
/// for all layers. Tensors whose rows are cut (gate, up, Q, K, V) keep their type; those whose columns are cut
/// (down, attention output) are requantized to their type, or stored as F16 when a quantized type's block no longer
/// divides the new width.
/// </summary>
public static unsafe class Pruner
{
    public static PruningPlan Plan(DecoderShape shape, PruningRequest request, ImportanceScores? scores, float[]? parameters, ParameterLayout? layout)
    {
        request.Validate(shape);
        if (request.NeedsScores && (scores == null || parameters == null || layout == null))
            throw new ArgumentException("ranking layers, channels or heads needs calibration scores");
        double[]? influence = scores?.LayerInfluence();
        int[] dropped = request.DropLayers?.ToArray()
            ?? (request.DropLayerCount > 0
                ? influence!.Select((v, i) => (v, i)).OrderBy(p => p.v).ThenBy(p => p.i).Take(request.DropLayerCount).Select(p => p.i).ToArray()
                : []);
        int[] kept = Enumerable.Range(0, shape.Layers).Where(l => !dropped.Contains(l)).ToArray();

        int ffn = Math.Max(1, (int)Math.Round(shape.FfnDim * request.FfnKeep));
        int kvGroups = Math.Max(1, (int)Math.Round(shape.KvHeads * request.HeadsKeep));
        var channelScores = request.FfnKeep < 1 ? scores!.ChannelScores(parameters!, layout!) : null;
        var groupScores = request.HeadsKeep < 1 ? scores!.KvGroupScores() : null;
        int[] TopIndices(double[] values, int count) =>
            values.Select((v, i) => (v, i)).OrderByDescending(p => p.v).ThenBy(p => p.i).Take(count).Select(p => p.i).Order().ToArray();

        var channels = kept.Select(l => channelScores != null ? TopIndices(channelScores[l], ffn) : Enumerable.Range(0, shape.FfnDim).ToArray()).ToArray();
        var groups = kept.Select(l => groupScores != null ? TopIndices(groupScores[l], kvGroups) : Enumerable.Range(0, shape.KvHeads).ToArray()).ToArray();
        int group = shape.Heads / shape.KvHeads;
        var pruned = shape with { Layers = kept.Length, FfnDim = ffn, KvHeads = kvGroups, Heads = kvGroups * group };
        return new PruningPlan(shape, pruned, kept, channels, groups, influence);
    }

    /// <summary>Writes the pruned model; returns a line per tensor whose type had to change.</summary>
    public static IReadOnlyList<string> Write(GgufFile input, PruningPlan plan, string outputPath)
    {
        if (Path.GetFullPath(outputPath) == Path.GetFullPath(input.Path))
            throw new ArgumentException("the output file must differ from the input (the input is read while the output is written)");
        string arch = DecoderGguf.RequireArchitecture(input);
        var s = plan.Original;
        var notes = new List<string>();
        var writer = new GgufWriter(input.Alignment);
        writer.SetAll(input.Metadata);
        DecoderGguf.SetShape(writer, arch, plan.Pruned);
        int group = s.Heads / s.KvHeads;
        var newIndex = new Dictionary<int, int>();
        for (int i = 0; i < plan.KeptLayers.Length; i++) newIndex[plan.KeptLayers[i]] = i;

        foreach (var tensor in input.Tensors)
        {
            if (!TryParseLayer(tensor.Name, out int layer, out string rest))
            {
                writer.AddTensor(tensor.Name, tensor.Type, tensor.Shape.ToArray(), stream => stream.Write(input.TensorBytes(tensor)));
                continue;
            }
            if (layer >= s.Layers) throw new GgufFormatException($"{input.Path}: tensor '{tensor.Name}' belongs to layer {layer} of a {s.Layers}-layer model");
            if (!newIndex.TryGetValue(layer, out int index)) continue;
            string name = $"blk.{index}.{rest}";
            int[] channels = plan.KeptChannels[index];
            int[] heads = plan.KeptKvGroups[index].SelectMany(g => Enumerable.Range(g * group, group)).ToArray();
            int[] kvHeads = plan.KeptKvGroups[index];
            switch (rest)
            {
                case "ffn_gate.weight" or "ffn_up.weight":
                    AddRows(writer, input, tensor, name, channels, 1);
                    break;
                case "ffn_down.weight":
                    AddColumns(writer, input, tensor, name, channels, 1, notes);
                    break;
                case "attn_q.weight":
                    AddRows(writer, input, tensor, name, heads, s.HeadDim);
                    break;
                case "attn_k.weight" or "attn_v.weight":
                    AddRows(writer, input, tensor, name, kvHeads, s.HeadDim);
                    break;
                case "attn_output.weight":
                    AddColumns(writer, input, tensor, name, heads, s.HeadDim, notes);
                    break;
                case "attn_norm.weight" or "ffn_norm.weight":
                    writer.AddTensor(name, tensor.Type, tensor.Shape.ToArray(), stream => stream.Write(input.TensorBytes(tensor)));
                    break;
                default:
                    throw new NotSupportedException($"{input.Path}: tensor '{tensor.Name}' is not part of a plain Llama layer; such a model cannot be pruned");
            }
        }
        writer.WriteAtomically(outputPath);
        return notes;
    }

    private static bool TryParseLayer(string name, out int layer, out string rest)
    {
        layer = -1;
        rest = "";
        if (!name.StartsWith("blk.", StringComparison.Ordinal)) return false;
        int dot = name.IndexOf('.', 4);
        if (dot < 0 || !int.TryParse(name.AsSpan(4, dot - 4), NumberStyles.None, CultureInfo.InvariantCulture, out layer)) return false;
        rest = name[(dot + 1)..];
        return true;
    }

    /// <summary>Keeps whole rows (output features), in runs of <paramref name="runLength"/> per kept index: bytes copied, type kept.</summary>
    private static void AddRows(GgufWriter writer, GgufFile input, GgufTensorInfo tensor, string name, int[] kept, int runLength)
    {
        if (tensor.Shape.Count != 2) throw new GgufFormatException($"{input.Path}: tensor '{tensor.Name}' is not a matrix");
        long rowBytes = GgmlTypeInfo.RowBytes(tensor.Type, tensor.Shape[0]);
        long rows = tensor.Shape[1];
        if (kept.Length > 0 && (long)(kept[^1] + 1) * runLength > rows)
            throw new GgufFormatException($"{input.Path}: tensor '{tensor.Name}' has {rows} rows, fewer than its layer's shape needs");
        writer.AddTensor(name, tensor.Type, [tensor.Shape[0], (long)kept.Length * runLength], stream =>
        {
            byte* data = input.TensorData(tensor);
            foreach (int index in kept)
                stream.Write(new ReadOnlySpan<byte>(data + (long)index * runLength * rowBytes, checked((int)(runLength * rowBytes))));
        });
    }

    /// <summary>Keeps columns (input features) in runs of <paramref name="runLength"/>: rows dequantized, cut and requantized.</summary>
    private static void AddColumns(GgufWriter writer, GgufFile input, GgufTensorInfo tensor, string name, int[] kept, int runLength, List<string> notes)
    {
        if (tensor.Shape.Count != 2) throw new GgufFormatException($"{input.Path}: tensor '{tensor.Name}' is not a matrix");
        int columns = checked((int)tensor.Shape[0]);
        if (kept.Length > 0 && (long)(kept[^1] + 1) * runLength > columns)
            throw new GgufFormatException($"{input.Path}: tensor '{tensor.Name}' has {columns} columns, fewer than its layer's shape needs");
        int newColumns = kept.Length * runLength;
        var type = tensor.Type;
        if (newColumns % GgmlTypeInfo.BlockSize(type) != 0)
        {
            notes.Add($"{name}: {type} blocks of {GgmlTypeInfo.BlockSize(type)} do not divide {newColumns} columns; stored as F16");
            type = GgmlType.F16;
        }
        long rows = tensor.Shape[1];
        writer.AddTensor(name, type, [newColumns, rows], stream =>
        {
            int sourceRowBytes = checked((int)GgmlTypeInfo.RowBytes(tensor.Type, columns));
            var source = new float[columns];
            var cut = new float[newColumns];
            var packed = new byte[GgmlTypeInfo.RowBytes(type, newColumns)];
            for (long r = 0; r < rows; r++)
            {
                Dequantize.Row(tensor.Type, new ReadOnlySpan<byte>(input.TensorData(tensor) + r * sourceRowBytes, sourceRowBytes), source);
                for (int i = 0; i < kept.Length; i++) source.AsSpan(kept[i] * runLength, runLength).CopyTo(cut.AsSpan(i * runLength));
                Quantize.Row(type, cut, packed);
                stream.Write(packed);
            }
        });
    }
}
