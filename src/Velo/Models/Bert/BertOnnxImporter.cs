using System.Text.Json;
using Velo.Formats;
using Velo.Tensors;
using Velo.Text;

namespace Velo.Models.Bert;

/// <summary>What <c>velo convert</c> is asked for beyond the ONNX file itself.</summary>
public sealed record BertImportOptions
{
    /// <summary>F32, F16 or Q8_0: the type of the linear and token-embedding matrices; norms, biases and the small
    /// position and type tables stay F32. With Q8_0 the value projections (<c>attn_v</c>) stay F16, as llama.cpp's
    /// mixes give <c>attn_v</c> more bits: they carry BERT's outlier hidden dimensions straight into the output, and
    /// quantized (with their 8-bit activations) they alone cost all-MiniLM-L6-v2's near-empty inputs a cosine of
    /// 0.9985 to F32; kept F16, the worst is 0.9992 for a twelfth of the multiplications.</summary>
    public GgmlType Type { get; init; } = GgmlType.F32;

    /// <summary>Null: from the sentence-transformers folder when given, else mean.</summary>
    public EmbeddingPooling? Pooling { get; init; }

    /// <summary>A sentence-transformers folder (config.json, sentence_bert_config.json, 1_Pooling/config.json), or null.</summary>
    public string? ConfigDir { get; init; }
}

/// <summary>
/// Imports a BERT encoder exported to ONNX by PyTorch (sentence-transformers' all-MiniLM-L6-v2 and its kin) into
/// llama.cpp's <c>bert</c> GGUF layout. Embeddings, norms and biases are named initializers (HF parameter names);
/// the linear weights are anonymous initializers stored [in, out], found by following the graph from each named
/// bias: the bias's Add reads a MatMul whose second input is the weight, which is transposed to ggml's [in, out]
/// shape of an [out, in] row-major matrix.
/// </summary>
public static class BertOnnxImporter
{
    public static void Convert(string onnxPath, string vocabPath, string outputPath, BertImportOptions options)
    {
        if (options.Type is not (GgmlType.F32 or GgmlType.F16 or GgmlType.Q8_0))
            throw new ArgumentException($"--type must be f32, f16 or q8_0, not {options.Type}");
        var onnx = OnnxModel.Load(onnxPath);
        var vocab = ReadVocabTxt(vocabPath);
        var writer = Build(onnx, vocab, options);
        writer.WriteAtomically(outputPath);
    }

    /// <summary>The GGUF file's metadata and tensors, ready to write.</summary>
    public static GgufWriter Build(OnnxModel onnx, TokenizerData vocab, BertImportOptions options)
    {
        var byName = new Dictionary<string, OnnxTensor>();
        foreach (var t in onnx.Initializers) byName.TryAdd(t.Name, t);
        string prefix = byName.ContainsKey("bert.embeddings.word_embeddings.weight") ? "bert." : "";
        OnnxTensor Named(string name) => byName.TryGetValue(prefix + name, out var t) ? t
            : throw new OnnxFormatException($"{onnx.Path}: not a BERT encoder: initializer '{prefix + name}' is missing");

        var tokenEmbedding = Named("embeddings.word_embeddings.weight");
        if (tokenEmbedding.Dims.Length != 2) throw Shape(onnx, tokenEmbedding, "[vocab, hidden]");
        int vocabSize = Dim(onnx, tokenEmbedding, 0), dim = Dim(onnx, tokenEmbedding, 1);
        if (vocabSize != vocab.Tokens.Length)
            throw new OnnxFormatException($"{onnx.Path}: the token embedding has {vocabSize} rows but the vocabulary {vocab.Tokens.Length} tokens");
        var positions = Named("embeddings.position_embeddings.weight");
        var types = Named("embeddings.token_type_embeddings.weight");
        int contextLength = Dim(onnx, positions, 0), typeCount = Dim(onnx, types, 0);
        if (positions.Dims is not [_, var pw] || pw != dim) throw Shape(onnx, positions, $"[positions, {dim}]");
        if (types.Dims is not [_, var tw] || tw != dim) throw Shape(onnx, types, $"[types, {dim}]");

        int layers = 0;
        while (byName.ContainsKey($"{prefix}encoder.layer.{layers}.attention.self.query.bias")) layers++;
        if (layers == 0) throw new OnnxFormatException($"{onnx.Path}: not a BERT encoder: no initializer '{prefix}encoder.layer.0.attention.self.query.bias'");

        // The MatMul feeding each Add, by the Add's output; and each node's producer, to follow MatMul → Add.
        var producers = new Dictionary<string, OnnxNode>();
        foreach (var n in onnx.Nodes)
            foreach (string o in n.Outputs)
                producers.TryAdd(o, n);
        var addsByInput = new Dictionary<string, OnnxNode>();
        foreach (var n in onnx.Nodes)
            if (n.OpType == "Add")
                foreach (string i in n.Inputs)
                    addsByInput.TryAdd(i, n);

        var config = ReadConfig(options.ConfigDir);
        int heads = config.Heads ?? HeadsFromGraph(onnx, byName, producers, addsByInput, prefix + "encoder.layer.0.attention.self.query.bias", dim)
            ?? (dim % 64 == 0 ? dim / 64 : throw new OnnxFormatException(
                $"{onnx.Path}: the head count cannot be inferred for hidden size {dim}; pass --config with the model's config.json"));
        if (heads <= 0 || dim % heads != 0) throw new OnnxFormatException($"{onnx.Path}: hidden size {dim} is not a multiple of {heads} heads");

        OnnxTensor LinearWeight(string biasName)
        {
            var bias = Named(biasName);
            if (!addsByInput.TryGetValue(bias.Name, out var add))
                throw new OnnxFormatException($"{onnx.Path}: cannot map initializer '{bias.Name}': no Add node reads it");
            foreach (string input in add.Inputs)
                if (input != bias.Name && producers.TryGetValue(input, out var matmul) && matmul.OpType == "MatMul" && matmul.Inputs.Length == 2
                    && byName.TryGetValue(matmul.Inputs[1], out var weight))
                    return weight;
            throw new OnnxFormatException($"{onnx.Path}: cannot map node '{add.Name}' (Add of '{bias.Name}'): it does not add the bias to a MatMul by an initializer");
        }

        var w = new GgufWriter();
        w.Set("general.architecture", "bert");
        w.Set("general.name", config.Name ?? Path.GetFileNameWithoutExtension(onnx.Path));
        w.Set("general.file_type", options.Type switch { GgmlType.F16 => 1u, GgmlType.Q8_0 => 7u, _ => 0u });
        w.Set("bert.context_length", (uint)contextLength);
        w.Set("bert.embedding_length", (uint)dim);
        w.Set("bert.block_count", (uint)layers);
        w.Set("bert.attention.head_count", (uint)heads);
        w.Set("bert.attention.layer_norm_epsilon", config.Epsilon ?? 1e-12f);
        w.Set("bert.attention.causal", false);
        w.Set("bert.pooling_type", (uint)(options.Pooling ?? config.Pooling ?? EmbeddingPooling.Mean));
        w.Set("bert.normalize_embeddings", config.Normalize ?? true);
        if (config.MaxSequenceLength is { } max) w.Set("bert.max_sequence_length", (uint)Math.Min(max, contextLength));
        GgufTokenizerMetadata.Write(vocab, w);
        w.Set("tokenizer.ggml.token_type_count", (uint)typeCount);

        void Vector(string gguf, string onnxName, int length)
        {
            var t = Named(onnxName);
            if (t.ElementCount != length) throw Shape(onnx, t, $"[{length}]");
            AddFloats(w, gguf, GgmlType.F32, [length], t.ToFloats(onnx.Path));
        }

        void Table(string gguf, OnnxTensor t, GgmlType type) =>
            AddFloats(w, gguf, type, [t.Dims[1], t.Dims[0]], t.ToFloats(onnx.Path));

        void Linear(string gguf, string biasName, int rows, int cols, GgmlType type)
        {
            var t = LinearWeight(biasName);
            if (t.Dims is not [var inDim, var outDim] || inDim != cols || outDim != rows) throw Shape(onnx, t, $"[{cols}, {rows}]");
            float[] stored = t.ToFloats(onnx.Path), transposed = new float[stored.Length];
            for (int i = 0; i < cols; i++)
                for (int o = 0; o < rows; o++)
                    transposed[(long)o * cols + i] = stored[(long)i * rows + o];
            AddFloats(w, gguf, type, [cols, rows], transposed);
            Vector(gguf.Replace(".weight", ".bias"), biasName, rows);
        }

        Table("token_embd.weight", tokenEmbedding, options.Type);
        Table("position_embd.weight", positions, GgmlType.F32);
        Table("token_types.weight", types, GgmlType.F32);
        Vector("token_embd_norm.weight", "embeddings.LayerNorm.weight", dim);
        Vector("token_embd_norm.bias", "embeddings.LayerNorm.bias", dim);
        var valueType = options.Type == GgmlType.Q8_0 ? GgmlType.F16 : options.Type;
        int ffn = 0;
        for (int l = 0; l < layers; l++)
        {
            string p = $"encoder.layer.{l}.", b = $"blk.{l}.";
            if (l == 0)
            {
                var up = Named(p + "intermediate.dense.bias");
                ffn = (int)up.ElementCount;
                w.Set("bert.feed_forward_length", (uint)ffn);
            }
            Linear(b + "attn_q.weight", p + "attention.self.query.bias", dim, dim, options.Type);
            Linear(b + "attn_k.weight", p + "attention.self.key.bias", dim, dim, options.Type);
            Linear(b + "attn_v.weight", p + "attention.self.value.bias", dim, dim, valueType);
            Linear(b + "attn_output.weight", p + "attention.output.dense.bias", dim, dim, options.Type);
            Vector(b + "attn_output_norm.weight", p + "attention.output.LayerNorm.weight", dim);
            Vector(b + "attn_output_norm.bias", p + "attention.output.LayerNorm.bias", dim);
            Linear(b + "ffn_up.weight", p + "intermediate.dense.bias", ffn, dim, options.Type);
            Linear(b + "ffn_down.weight", p + "output.dense.bias", dim, ffn, options.Type);
            Vector(b + "layer_output_norm.weight", p + "output.LayerNorm.weight", dim);
            Vector(b + "layer_output_norm.bias", p + "output.LayerNorm.bias", dim);
        }
        return w;
    }

    private static void AddFloats(GgufWriter w, string name, GgmlType type, long[] shape, float[] data)
    {
        long rowLength = shape[0];
        var bytes = new byte[GgufWriter.ByteSize(type, shape)];
        int rowBytes = (int)GgmlTypeInfo.RowBytes(type, rowLength);
        for (long r = 0; r < data.Length / rowLength; r++)
            Quantize.Row(type, data.AsSpan((int)(r * rowLength), (int)rowLength), bytes.AsSpan((int)(r * rowBytes), rowBytes));
        w.AddTensor(name, type, shape, bytes);
    }

    private static int Dim(OnnxModel onnx, OnnxTensor t, int index) =>
        t.Dims.Length > index && t.Dims[index] is > 0 and <= int.MaxValue ? (int)t.Dims[index] : throw Shape(onnx, t, "two positive dimensions");

    private static OnnxFormatException Shape(OnnxModel onnx, OnnxTensor t, string expected) =>
        new($"{onnx.Path}: initializer '{t.Name}' has dims [{string.Join(", ", t.Dims)}], expected {expected}");

    /// <summary>
    /// A BERT vocab.txt (one piece a line, id = line number) in GGUF's WordPiece convention, as llama.cpp's converter
    /// and <see cref="HuggingFaceTokenizerReader"/> write it: continuation pieces lose their <c>##</c>, other pieces
    /// gain <c>▁</c>, bracketed specials stay as they are and are control tokens.
    /// </summary>
    public static TokenizerData ReadVocabTxt(string path)
    {
        var lines = File.ReadAllLines(path);
        int count = lines.Length;
        if (count > 0 && lines[^1].Length == 0) count--;
        if (count == 0) throw new InvalidDataException($"{path}: the vocabulary is empty");
        var tokens = new string[count];
        var types = new TokenType[count];
        var ids = new Dictionary<string, int>();
        for (int i = 0; i < count; i++)
        {
            string piece = lines[i];
            bool special = piece is "[PAD]" or "[UNK]" or "[CLS]" or "[SEP]" or "[MASK]";
            tokens[i] = special || (piece.StartsWith('[') && piece.EndsWith(']')) ? piece
                : piece.StartsWith("##", StringComparison.Ordinal) && piece.Length > 2 ? piece[2..]
                : "▁" + piece;
            types[i] = special ? TokenType.Control : TokenType.Normal;
            ids.TryAdd(piece, i);
        }
        int Id(string piece) => ids.GetValueOrDefault(piece, -1);
        return new TokenizerData
        {
            Kind = TokenizerKind.WordPiece, Tokens = tokens, TokenTypes = types,
            BosId = Id("[CLS]"), ClsId = Id("[CLS]"), SepId = Id("[SEP]"), UnknownId = Id("[UNK]"), PadId = Id("[PAD]"), MaskId = Id("[MASK]"),
            AddBos = true, AddSep = true, Lowercase = true, MaxWordChars = 100,
        };
    }

    private sealed record SentenceTransformersConfig(string? Name, int? Heads, float? Epsilon, EmbeddingPooling? Pooling, bool? Normalize, int? MaxSequenceLength);

    /// <summary>What a sentence-transformers folder says: heads and epsilon (config.json), pooling (1_Pooling), the
    /// truncation length (sentence_bert_config.json) and whether a Normalize module follows (modules.json).</summary>
    /// <summary>
    /// The head count the graph splits the queries into: PyTorch exports reshape the query projection (its bias Add's
    /// output) to [batch, length, heads, headDim], the shape a Concat of int64 initializers ending in heads and
    /// headDim. Null when the graph does not show it (then 64-wide heads are assumed, BERT's usual size).
    /// </summary>
    private static int? HeadsFromGraph(OnnxModel onnx, Dictionary<string, OnnxTensor> byName, Dictionary<string, OnnxNode> producers,
        Dictionary<string, OnnxNode> addsByInput, string queryBias, int dim)
    {
        if (!addsByInput.TryGetValue(queryBias, out var add) || add.Outputs.Length == 0) return null;
        var reshape = onnx.Nodes.FirstOrDefault(n => n.OpType == "Reshape" && n.Inputs.Length == 2 && n.Inputs[0] == add.Outputs[0]);
        if (reshape == null || !producers.TryGetValue(reshape.Inputs[1], out var concat) || concat.OpType != "Concat" || concat.Inputs.Length != 4) return null;
        long? Scalar(string name)
        {
            // An int64 initializer of one element, or one passed through Unsqueeze.
            if (producers.TryGetValue(name, out var node) && node.OpType == "Unsqueeze" && node.Inputs.Length >= 1) name = node.Inputs[0];
            return byName.TryGetValue(name, out var t) && t.DataType == 7 && t.ElementCount == 1 && t.RawData.Length == 8
                ? System.Buffers.Binary.BinaryPrimitives.ReadInt64LittleEndian(t.RawData.Span) : null;
        }
        return Scalar(concat.Inputs[2]) is { } heads && Scalar(concat.Inputs[3]) is { } headDim && heads > 0 && heads * headDim == dim ? (int)heads : null;
    }

    private static SentenceTransformersConfig ReadConfig(string? dir)
    {
        if (dir == null) return new(null, null, null, null, null, null);
        if (!Directory.Exists(dir)) throw new DirectoryNotFoundException($"--config: folder '{dir}' does not exist");
        JsonElement? Json(params string[] parts)
        {
            string path = Path.Combine([dir, .. parts]);
            return File.Exists(path) ? JsonDocument.Parse(File.ReadAllText(path)).RootElement : null;
        }
        int? Int(JsonElement? e, string key) => e is { } o && o.TryGetProperty(key, out var v) && v.ValueKind == JsonValueKind.Number ? v.GetInt32() : null;

        var model = Json("config.json");
        float? epsilon = model is { } m && m.TryGetProperty("layer_norm_eps", out var eps) && eps.ValueKind == JsonValueKind.Number ? eps.GetSingle() : null;
        string? name = model is { } mm && mm.TryGetProperty("_name_or_path", out var n) && n.ValueKind == JsonValueKind.String ? Path.GetFileName(n.GetString()) : null;
        EmbeddingPooling? pooling = null;
        if (Json("1_Pooling", "config.json") is { } pool)
        {
            bool Flag(string key) => pool.TryGetProperty(key, out var v) && v.ValueKind == JsonValueKind.True;
            pooling = Flag("pooling_mode_mean_tokens") ? EmbeddingPooling.Mean : Flag("pooling_mode_cls_token") ? EmbeddingPooling.Cls
                : throw new NotSupportedException($"{dir}: 1_Pooling/config.json asks for a pooling other than mean or CLS");
        }
        bool? normalize = null;
        if (Json("modules.json") is { ValueKind: JsonValueKind.Array } modules)
            normalize = modules.EnumerateArray().Any(e => e.TryGetProperty("type", out var t) && t.GetString()?.EndsWith("Normalize") == true);
        return new(name, Int(model, "num_attention_heads"), epsilon, pooling, normalize, Int(Json("sentence_bert_config.json"), "max_seq_length"));
    }
}
