using System.Text.Json;
using Velo.Formats;
using Velo.Tensors;
using Velo.Text;

namespace Velo.Models.HuggingFace;

/// <summary>One tensor of the GGUF file a conversion writes: its llama.cpp name, ggml shape, and where its rows come from.</summary>
internal sealed record ConvertedTensor(string Name, long[] Shape, GgmlType SourceType, RowSource Rows);

/// <summary>
/// Converts a Hugging Face model folder (<c>config.json</c>, <c>*.safetensors</c> incl. sharded, <c>tokenizer.json</c>,
/// <c>tokenizer_config.json</c> with its chat template, <c>generation_config.json</c>) to a GGUF file the way llama.cpp's
/// convert_hf_to_gguf.py does: its tensor names and hyperparameter keys, Llama's Q/K rows permuted from Hugging Face's
/// rotate-half layout to rope's adjacent pairs, Gemma's norm weights stored as 1 + w, Phi-3's fused QKV and gate-up
/// kept fused, Llama 3's rope frequency factors computed from <c>rope_scaling</c>, and tied embeddings left tied.
/// Rows stream from the memory-mapped safetensors through the quantizers, so no tensor is held whole in memory.
/// </summary>
public static class HuggingFaceConverter
{
    /// <summary>Tensors a checkpoint may hold that llama.cpp's converter skips (rotary caches recomputed at run time).</summary>
    private static bool IsSkipped(string name) => name.EndsWith("rotary_emb.inv_freq", StringComparison.Ordinal);

    /// <summary>Whether <paramref name="path"/> is a folder with a <c>config.json</c>, as Hugging Face lays a model out.</summary>
    public static bool IsModelFolder(string path) => Directory.Exists(path) && File.Exists(Path.Combine(path, "config.json"));

    /// <summary>Hugging Face model classes the converter reads.</summary>
    public static IEnumerable<string> SupportedModelClasses => HuggingFaceConfig.ArchitectureOf.Keys;

    /// <summary>
    /// Writes the folder's model to <paramref name="outputPath"/>. <paramref name="fileType"/> null keeps each matrix in
    /// its own float type (F32, F16 or BF16: nothing rounded); otherwise every tensor gets the type llama.cpp's
    /// per-tensor mix for that file type gives it. Vectors (norms, biases, rope factors) are F32 as llama.cpp writes them.
    /// </summary>
    public static void Convert(string folder, string outputPath, ModelFileType? fileType = null, int threads = 0,
        Action<string>? tensorStarted = null, Action<long>? bytesWritten = null)
    {
        var config = HuggingFaceConfig.Read(folder);
        using var checkpoint = SafetensorsCheckpoint.Open(folder);
        var tensors = Plan(config, checkpoint);
        var types = TypesOf(config, tensors, fileType);

        var writer = new GgufWriter();
        writer.Set("general.architecture", config.Architecture);
        writer.Set("general.name", Path.GetFileName(Path.TrimEndingDirectorySeparator(Path.GetFullPath(folder))));
        WriteHyperparameters(config, writer, tensors);
        writer.Set("general.file_type", (uint)(fileType ?? FileTypeOf(tensors.Where(t => t.Shape.Length > 1).Select(t => t.SourceType))));
        if (types.Any(t => t is not (GgmlType.F32 or GgmlType.F16 or GgmlType.BF16))) writer.Set("general.quantization_version", 2u);
        int vocabulary = checked((int)tensors.First(t => t.Name == "token_embd.weight").Shape[1]);
        HuggingFaceVocabulary.Write(folder, vocabulary, writer);

        var rows = new RowStreamer(threads > 0 ? threads : Environment.ProcessorCount);
        for (int i = 0; i < tensors.Count; i++)
        {
            var (tensor, type) = (tensors[i], types[i]);
            long columns = tensor.Shape[0];
            if (columns > int.MaxValue) throw new NotSupportedException($"tensor '{tensor.Name}' has rows of {columns} values, more than Velo converts");
            if (columns % GgmlTypeInfo.BlockSize(type) != 0)
                throw new NotSupportedException($"tensor '{tensor.Name}' has rows of {columns} values, not whole {type} blocks");
            writer.AddTensor(tensor.Name, type, tensor.Shape, stream =>
            {
                tensorStarted?.Invoke($"{tensor.Name} {type}");
                rows.Write(stream, type, (int)columns, tensor.Shape.Length > 1 ? tensor.Shape[1] : 1, tensor.Rows, bytesWritten);
            });
        }
        writer.WriteAtomically(outputPath);
    }

    /// <summary>Bytes of tensor data the converted file will hold, for a progress display; checks the folder as <see cref="Convert"/> does.</summary>
    public static long OutputBytes(string folder, ModelFileType? fileType = null)
    {
        var config = HuggingFaceConfig.Read(folder);
        using var checkpoint = SafetensorsCheckpoint.Open(folder);
        var tensors = Plan(config, checkpoint);
        var types = TypesOf(config, tensors, fileType);
        return tensors.Select((t, i) => GgufWriter.ByteSize(types[i], t.Shape)).Sum();
    }

    /// <summary>Each tensor's stored type: vectors F32 as llama.cpp writes them; matrices their own type, or the file type's per-tensor mix.</summary>
    private static GgmlType[] TypesOf(HuggingFaceConfig config, List<ConvertedTensor> tensors, ModelFileType? fileType)
    {
        bool tied = tensors.All(t => t.Name != "output.weight");
        var recipe = fileType is { } ft ? new QuantizationRecipe(ft, config.Layers, hasOutputTensor: !tied) : null;
        return tensors.Select(t => t.Shape.Length == 1 ? GgmlType.F32 : recipe?.TargetType(t.Name, t.Shape) ?? t.SourceType).ToArray();
    }

    /// <summary>What the file declares it mostly holds when matrices keep their own types.</summary>
    private static ModelFileType FileTypeOf(IEnumerable<GgmlType> matrixTypes) =>
        matrixTypes.GroupBy(t => t).OrderByDescending(g => g.Count()).Select(g => g.Key).FirstOrDefault() switch
        {
            GgmlType.F16 => ModelFileType.F16,
            GgmlType.BF16 => ModelFileType.BF16,
            _ => ModelFileType.F32,
        };

    /// <summary>Every tensor of the GGUF file in llama.cpp's order, each checked against the shape the config implies; a checkpoint tensor left unmapped is an error.</summary>
    internal static List<ConvertedTensor> Plan(HuggingFaceConfig config, SafetensorsCheckpoint checkpoint)
    {
        string arch = config.Architecture;
        int dim = config.Dim, layers = config.Layers, heads = config.Heads, kvHeads = config.KvHeads, headDim = config.HeadDim, ffn = config.FfnDim;
        if (heads % kvHeads != 0) throw new InvalidDataException($"{config.Path}: {heads} attention heads cannot be shared by {kvHeads} KV heads");
        if (headDim <= 0) throw new InvalidDataException($"{config.Path}: {heads} attention heads leave no dimensions of hidden_size {dim} to each head, and no head_dim is given");
        if (headDim % 2 != 0) throw new InvalidDataException($"{config.Path}: head dimension {headDim} is odd; rope needs pairs");
        long qDim = (long)heads * headDim, kvDim = (long)kvHeads * headDim;
        bool gemma = arch is "gemma" or "gemma2" or "gemma3";
        bool permute = arch == "llama";
        var used = new HashSet<string>(StringComparer.Ordinal);
        var plan = new List<ConvertedTensor>();

        SafetensorsTensor Source(string name, long[] hfShape)
        {
            var t = checkpoint.Require(name);
            if (!t.Shape.SequenceEqual(hfShape))
                throw new InvalidDataException($"{checkpoint.Folder}: tensor '{name}' has shape [{string.Join(", ", t.Shape)}], but config.json implies [{string.Join(", ", hfShape)}]");
            if (t.FloatType is null)
                throw new SafetensorsFormatException($"{checkpoint.Folder}: tensor '{name}' has dtype '{t.DType}', which Velo cannot read (only F32, F16 and BF16)");
            used.Add(name);
            return t;
        }

        // A matrix [out, in] in PyTorch's order is ggml's [in, out]: the same bytes, each output row a ggml row.
        void Matrix(string gguf, string hf, long outDim, long inDim, int permuteHeads = 0)
        {
            var t = Source(hf, [outDim, inDim]);
            RowSource rows = permuteHeads > 0
                ? (row, values) => checkpoint.ReadRow(t, RotateHalfRow(row, outDim / permuteHeads), values)
                : (row, values) => checkpoint.ReadRow(t, row, values);
            plan.Add(new ConvertedTensor(gguf, [inDim, outDim], t.FloatType!.Value, rows));
        }

        void Vector(string gguf, string hf, long length, int permuteHeads = 0)
        {
            var t = Source(hf, [length]);
            RowSource rows;
            if (permuteHeads > 0)
            {
                long perHead = length / permuteHeads;
                var all = new float[length];
                rows = (_, values) =>
                {
                    checkpoint.ReadRow(t, 0, all);
                    for (long i = 0; i < length; i++) values[(int)i] = all[RotateHalfRow(i, perHead)];
                };
            }
            // Hugging Face's Gemma scales by (1 + w); llama.cpp stores 1 + w and runs a plain RMSNorm.
            else if (gemma && gguf.EndsWith("norm.weight", StringComparison.Ordinal))
                rows = (_, values) =>
                {
                    checkpoint.ReadRow(t, 0, values);
                    for (int i = 0; i < values.Length; i++) values[i] += 1;
                };
            else rows = (_, values) => checkpoint.ReadRow(t, 0, values);
            plan.Add(new ConvertedTensor(gguf, [length], GgmlType.F32, rows));
        }

        void Computed(string gguf, float[] values) =>
            plan.Add(new ConvertedTensor(gguf, [values.Length], GgmlType.F32, (_, row) => values.CopyTo(row)));

        var embedding = checkpoint.Require("model.embed_tokens.weight");
        if (embedding.Shape.Length != 2 || embedding.Shape[1] != dim || embedding.Shape[0] is <= 0 or > int.MaxValue)
            throw new InvalidDataException($"{checkpoint.Folder}: model.embed_tokens.weight has shape [{string.Join(", ", embedding.Shape)}], expected [vocabulary, {dim} (hidden_size)]");
        long vocab = embedding.Shape[0];
        Matrix("token_embd.weight", "model.embed_tokens.weight", vocab, dim);
        Vector("output_norm.weight", "model.norm.weight", dim);
        // Gemma's classifier is the embedding: llama.cpp drops an lm_head a checkpoint carries anyway.
        if (!gemma && checkpoint.Find("lm_head.weight") != null) Matrix("output.weight", "lm_head.weight", vocab, dim);
        if (arch == "llama" && config.RopeScalingType == "llama3") Computed("rope_freqs.weight", Llama3RopeFactors(config));
        if (arch == "phi3" && config.RopeScalingType is "longrope" or "su")
        {
            int ropeDims = Phi3RopeDims(config);
            Computed("rope_factors_long.weight", Phi3Factors(config, "long_factor", ropeDims / 2));
            Computed("rope_factors_short.weight", Phi3Factors(config, "short_factor", ropeDims / 2));
        }

        for (int l = 0; l < layers; l++)
        {
            string hf = $"model.layers.{l}.", p = $"blk.{l}.";
            Vector(p + "attn_norm.weight", hf + "input_layernorm.weight", dim);
            if (arch == "phi3")
            {
                Matrix(p + "attn_qkv.weight", hf + "self_attn.qkv_proj.weight", qDim + 2 * kvDim, dim);
            }
            else
            {
                Matrix(p + "attn_q.weight", hf + "self_attn.q_proj.weight", qDim, dim, permute ? heads : 0);
                Matrix(p + "attn_k.weight", hf + "self_attn.k_proj.weight", kvDim, dim, permute ? kvHeads : 0);
                Matrix(p + "attn_v.weight", hf + "self_attn.v_proj.weight", kvDim, dim);
                if (checkpoint.Find(hf + "self_attn.q_proj.bias") != null)
                {
                    Vector(p + "attn_q.bias", hf + "self_attn.q_proj.bias", qDim, permute ? heads : 0);
                    Vector(p + "attn_k.bias", hf + "self_attn.k_proj.bias", kvDim, permute ? kvHeads : 0);
                    Vector(p + "attn_v.bias", hf + "self_attn.v_proj.bias", kvDim);
                }
                if (arch is "qwen3" or "gemma3")
                {
                    Vector(p + "attn_q_norm.weight", hf + "self_attn.q_norm.weight", headDim);
                    Vector(p + "attn_k_norm.weight", hf + "self_attn.k_norm.weight", headDim);
                }
            }
            Matrix(p + "attn_output.weight", hf + "self_attn.o_proj.weight", dim, qDim);
            if (arch is "gemma2" or "gemma3")
            {
                Vector(p + "post_attention_norm.weight", hf + "post_attention_layernorm.weight", dim);
                Vector(p + "ffn_norm.weight", hf + "pre_feedforward_layernorm.weight", dim);
            }
            else Vector(p + "ffn_norm.weight", hf + "post_attention_layernorm.weight", dim);
            if (arch == "phi3")
            {
                // The gate's rows, then the up projection's, as Phi-3 stores them and llama.cpp keeps them.
                Matrix(p + "ffn_up.weight", hf + "mlp.gate_up_proj.weight", 2L * ffn, dim);
            }
            else
            {
                Matrix(p + "ffn_gate.weight", hf + "mlp.gate_proj.weight", ffn, dim);
                Matrix(p + "ffn_up.weight", hf + "mlp.up_proj.weight", ffn, dim);
            }
            Matrix(p + "ffn_down.weight", hf + "mlp.down_proj.weight", dim, ffn);
            if (arch is "gemma2" or "gemma3") Vector(p + "post_ffw_norm.weight", hf + "post_feedforward_layernorm.weight", dim);
        }

        var unused = checkpoint.TensorNames.Where(n => !used.Contains(n) && !IsSkipped(n) && !(gemma && n == "lm_head.weight")).Order(StringComparer.Ordinal).ToList();
        if (unused.Count > 0)
            throw new NotSupportedException(
                $"{checkpoint.Folder}: {unused.Count} tensor(s) have no place in a {arch} model as Velo runs it, e.g. '{unused[0]}' (config.json says {config.ModelClass} with {layers} layers)");
        return plan;
    }

    /// <summary>
    /// The Hugging Face row a GGUF row of a Q or K projection comes from (llama.cpp's <c>LlamaModel.permute</c>):
    /// Hugging Face rotates each head's first half against its second, rope in GGUF rotates adjacent pairs, so GGUF
    /// row 2i + j of a head is Hugging Face row j·(head/2) + i.
    /// </summary>
    internal static long RotateHalfRow(long row, long perHead)
    {
        long head = row / perHead, within = row % perHead, half = perHead / 2;
        return head * perHead + within % 2 * half + within / 2;
    }

    /// <summary>Llama 3.1's frequency divisors (<c>rope_scaling.rope_type = llama3</c>), computed as llama.cpp's converter computes them.</summary>
    private static float[] Llama3RopeFactors(HuggingFaceConfig config)
    {
        var s = config.RopeScaling;
        string where = config.Path + " rope_scaling";
        double theta = config.Number("rope_theta", 10000), factor = HuggingFaceConfig.Number(s, "factor", 8, where);
        double low = HuggingFaceConfig.Number(s, "low_freq_factor", 1, where), high = HuggingFaceConfig.Number(s, "high_freq_factor", 4, where);
        double original = HuggingFaceConfig.Number(s, "original_max_position_embeddings", 8192, where);
        if (!(high > low)) throw new InvalidDataException($"{where}: high_freq_factor {high} must exceed low_freq_factor {low}");
        int dim = config.HeadDim;
        double lowWavelength = original / low, highWavelength = original / high;
        var factors = new float[dim / 2];
        for (int i = 0; i < factors.Length; i++)
        {
            double frequency = 1 / Math.Pow(theta, 2.0 * i / dim), wavelength = 2 * Math.PI / frequency;
            factors[i] = (float)(wavelength < highWavelength ? 1
                : wavelength > lowWavelength ? factor
                : 1 / ((1 - (original / wavelength - low) / (high - low)) / factor + (original / wavelength - low) / (high - low)));
        }
        return factors;
    }

    private static int Phi3RopeDims(HuggingFaceConfig config) =>
        (int)(config.Number("partial_rotary_factor", 1) * config.Dim) / config.Heads;

    private static float[] Phi3Factors(HuggingFaceConfig config, string key, int count)
    {
        var s = config.RopeScaling;
        if (!s.TryGetProperty(key, out var array) || array.ValueKind != JsonValueKind.Array || array.GetArrayLength() != count)
            throw new InvalidDataException($"{config.Path}: rope_scaling.{key} must be a list of {count} numbers (half the rotated dimensions)");
        var values = new float[count];
        for (int i = 0; i < count; i++)
            values[i] = array[i].ValueKind == JsonValueKind.Number && array[i].GetDouble() is var v && double.IsFinite(v) && v > 0
                ? (float)v
                : throw new InvalidDataException($"{config.Path}: rope_scaling.{key}[{i}] is {array[i].GetRawText()}, not a positive number");
        return values;
    }

    /// <summary>The hyperparameters under llama.cpp's keys, as its converter writes them for each architecture.</summary>
    private static void WriteHyperparameters(HuggingFaceConfig c, GgufWriter w, List<ConvertedTensor> tensors)
    {
        string a = c.Architecture;
        string? scaling = c.RopeScalingType;
        bool ropeScalingKnown = scaling is null || (a, scaling) is ("llama", "linear" or "llama3") or ("gemma3", "linear") or ("phi3", "longrope" or "su");
        if (!ropeScalingKnown)
            throw new NotSupportedException($"{c.Path}: rope_scaling of type '{scaling}' is not supported for {c.ModelClass}");

        int contextDefault = a switch { "gemma" or "gemma2" => 8192, "gemma3" => 131072, _ => 2048 };
        w.Set($"{a}.context_length", (uint)c.Int("max_position_embeddings", contextDefault));
        w.Set($"{a}.embedding_length", (uint)c.Dim);
        w.Set($"{a}.feed_forward_length", (uint)c.FfnDim);
        w.Set($"{a}.block_count", (uint)c.Layers);
        w.Set($"{a}.attention.head_count", (uint)c.Heads);
        w.Set($"{a}.attention.head_count_kv", (uint)c.KvHeads);
        w.Set($"{a}.attention.layer_norm_rms_epsilon", (float)c.Number("rms_norm_eps", a.StartsWith("gemma", StringComparison.Ordinal) ? 1e-6 : 1e-5));
        double? theta = c.Has("rope_theta") ? c.Number("rope_theta") : a == "gemma3" ? 1_000_000 : null;
        if (theta is { } t) w.Set($"{a}.rope.freq_base", (float)t);
        if (c.Has("head_dim") || a.StartsWith("gemma", StringComparison.Ordinal))
        {
            w.Set($"{a}.attention.key_length", (uint)c.HeadDim);
            w.Set($"{a}.attention.value_length", (uint)c.HeadDim);
        }

        switch (a)
        {
            case "llama":
                w.Set($"{a}.vocab_size", (uint)tensors.First(t => t.Name == "token_embd.weight").Shape[1]);
                w.Set($"{a}.rope.dimension_count", (uint)c.HeadDim);
                if (scaling == "linear") SetLinearScaling(c, w);
                break;
            case "gemma2":
                w.Set($"{a}.attn_logit_softcapping", (float)c.Number("attn_logit_softcapping", 50));
                w.Set($"{a}.final_logit_softcapping", (float)c.Number("final_logit_softcapping", 30));
                w.Set($"{a}.attention.sliding_window", (uint)c.Int("sliding_window", 4096));
                break;
            case "gemma3":
                w.Set($"{a}.attention.sliding_window", (uint)c.Int("sliding_window"));
                // Velo's (and llama.cpp's) default for the sliding layers' base is 10000; a config that differs says so.
                if (c.Has("rope_local_base_freq") && c.Number("rope_local_base_freq") != 10000)
                    w.Set($"{a}.rope.freq_base_swa", (float)c.Number("rope_local_base_freq"));
                if (scaling == "linear") SetLinearScaling(c, w);
                break;
            case "phi3":
                int context = c.Int("max_position_embeddings"), original = c.Int("original_max_position_embeddings", context);
                w.Set($"{a}.rope.scaling.original_context_length", (uint)original);
                w.Set($"{a}.rope.dimension_count", (uint)Phi3RopeDims(c));
                w.Set($"{a}.attention.sliding_window", c.Has("sliding_window") ? (uint)c.Int("sliding_window") : 0u);
                if (scaling is "longrope" or "su")
                {
                    double scale = (double)context / original;
                    w.Set($"{a}.rope.scaling.attn_factor", (float)(scale > 1 ? Math.Sqrt(1 + Math.Log(scale) / Math.Log(original)) : 1));
                }
                break;
        }
    }

    private static void SetLinearScaling(HuggingFaceConfig c, GgufWriter w)
    {
        w.Set($"{c.Architecture}.rope.scaling.type", "linear");
        w.Set($"{c.Architecture}.rope.scaling.factor", (float)HuggingFaceConfig.Number(c.RopeScaling, "factor", null, c.Path + " rope_scaling"));
    }
}
