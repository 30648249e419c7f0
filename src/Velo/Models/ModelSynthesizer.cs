using Velo.Formats;
using Velo.Tensors;

namespace Velo.Models;

/// <summary>
/// Writes random-weight GGUF files of any supported architecture and shape, so speed and correctness can be measured without
/// downloading a model. Every value is a pure function of (seed, tensor name, row), so a test can regenerate the
/// exact floats a file was made from.
/// </summary>
public static class ModelSynthesizer
{
    /// <summary>
    /// Writes the model to <paramref name="path"/>, computing and quantizing rows on <paramref name="threads"/>
    /// threads (0: all cores); <paramref name="tensorStarted"/> and <paramref name="bytesWritten"/> report progress.
    /// </summary>
    public static void Write(
        string path, SynthSpec spec, SynthTokenizer? tokenizer = null, int threads = 0,
        Action<string>? tensorStarted = null, Action<long>? bytesWritten = null)
    {
        var writer = new GgufWriter();
        string a = spec.Architecture;
        writer.Set("general.architecture", a)
            .Set("general.name", spec.Name)
            .Set("general.file_type", spec.DeclaredFileType)
            .Set($"{a}.context_length", (uint)spec.ContextLength)
            .Set($"{a}.embedding_length", (uint)spec.Dim)
            .Set($"{a}.block_count", (uint)spec.Layers)
            .Set($"{a}.feed_forward_length", (uint)spec.FfnDim)
            .Set($"{a}.attention.head_count", (uint)spec.Heads)
            .Set($"{a}.attention.head_count_kv", (uint)spec.EffectiveKvHeads)
            .Set($"{a}.attention.layer_norm_rms_epsilon", spec.NormEpsilon)
            .Set($"{a}.rope.freq_base", spec.RopeBase)
            .Set($"{a}.rope.dimension_count", (uint)spec.EffectiveRopeDims)
            .Set($"{a}.vocab_size", (uint)spec.VocabSize);
        if (spec.EffectiveHeadDim != spec.Dim / spec.Heads)
        {
            writer.Set($"{a}.attention.key_length", (uint)spec.EffectiveHeadDim);
            writer.Set($"{a}.attention.value_length", (uint)spec.EffectiveHeadDim);
        }
        ModelRegistry.WriteSynthesisMetadata(spec, writer);
        if (Tensors(spec).Any(t => spec.TypeOf(t.Name, t.Shape) is not (GgmlType.F32 or GgmlType.F16 or GgmlType.BF16)))
            writer.Set("general.quantization_version", 2u); // ggml's GGML_QNT_VERSION
        if (tokenizer != null) tokenizer.Write(writer, spec.VocabSize);
        else WriteSyntheticTokenizer(writer, spec.VocabSize);

        var rows = new RowStreamer(threads > 0 ? threads : Environment.ProcessorCount);
        foreach (var (name, shape) in Tensors(spec))
        {
            var type = spec.TypeOf(name, shape);
            writer.AddTensor(name, type, shape, stream =>
            {
                tensorStarted?.Invoke($"{name} {type}");
                long rowCount = shape.Length > 1 ? shape[1] : 1;
                rows.Write(stream, type, (int)shape[0], rowCount, (row, values) => FillRow(spec, name, row, values), bytesWritten);
            });
        }
        writer.WriteAtomically(path);
    }

    /// <summary>Bytes of tensor data the file will hold.</summary>
    public static long TensorBytes(SynthSpec spec) => Tensors(spec).Sum(t => GgufWriter.ByteSize(spec.TypeOf(t.Name, t.Shape), t.Shape));

    /// <summary>Tensor names and shapes (ggml order: ne[0] first) in llama.cpp's order, as the spec's architecture family lays them out.</summary>
    public static IEnumerable<(string Name, long[] Shape)> Tensors(SynthSpec spec) => ModelRegistry.SynthesisTensors(spec);

    /// <summary>The float values of one row of a tensor, before any quantization.</summary>
    public static void FillRow(SynthSpec spec, string name, long row, Span<float> values)
    {
        var rng = new SplitMix64(spec.Seed ^ Hash(name) ^ (ulong)row * 0x9E3779B97F4A7C15);
        if (name.EndsWith("norm.weight", StringComparison.Ordinal))
        {
            for (int i = 0; i < values.Length; i++) values[i] = 1 + spec.NormJitter * rng.NextNormal();
        }
        else if (name == "rope_freqs.weight")
        {
            // Llama 3's long-context factors: 1 for high frequencies rising to 8 for the lowest.
            for (int i = 0; i < values.Length; i++) values[i] = 1 + 7f * i / Math.Max(1, values.Length - 1) * (float)rng.NextDouble();
        }
        else if (name is "rope_factors_short.weight" or "rope_factors_long.weight")
        {
            // LongRoPE's divisors rise from 1 for the highest frequencies: to about 3 in the short set, as Phi-3's,
            // and up to the context's growth in the long set, which stretches the lowest frequencies over it.
            float top = name == "rope_factors_short.weight" ? 3 : Math.Max(1f, (float)spec.ContextLength / Math.Max(1, spec.OriginalContextLength));
            for (int i = 0; i < values.Length; i++) values[i] = 1 + (top - 1) * i / Math.Max(1, values.Length - 1) * (float)(0.5 + 0.5 * rng.NextDouble());
        }
        else
        {
            for (int i = 0; i < values.Length; i++) values[i] = spec.WeightStd * rng.NextNormal();
        }
    }

    private static void WriteSyntheticTokenizer(GgufWriter writer, int vocabSize)
    {
        // A SentencePiece-style vocabulary of control tokens, the 256 byte-fallback pieces and filler pieces: any
        // text can be encoded with it, which is all a speed measurement needs.
        if (vocabSize < 259) throw new ArgumentException("a synthetic tokenizer needs a vocabulary of at least 259 tokens");
        var pieces = new string[vocabSize];
        var scores = new float[vocabSize];
        var types = new int[vocabSize];
        (pieces[0], types[0]) = ("<unk>", 2);
        (pieces[1], types[1]) = ("<s>", 3);
        (pieces[2], types[2]) = ("</s>", 3);
        for (int b = 0; b < 256; b++) (pieces[3 + b], types[3 + b]) = ($"<0x{b:X2}>", 6);
        for (int i = 259; i < vocabSize; i++) (pieces[i], types[i], scores[i]) = ($"▁tok{i}", 1, -i);
        writer.Set("tokenizer.ggml.model", "llama")
            .Set("tokenizer.ggml.tokens", pieces)
            .Set("tokenizer.ggml.scores", scores)
            .Set("tokenizer.ggml.token_type", types)
            .Set("tokenizer.ggml.bos_token_id", 1u)
            .Set("tokenizer.ggml.eos_token_id", 2u)
            .Set("tokenizer.ggml.unknown_token_id", 0u);
    }

    private static ulong Hash(string s)
    {
        ulong h = 14695981039346656037;
        foreach (char c in s) h = (h ^ c) * 1099511628211;
        return h;
    }

    private struct SplitMix64(ulong state)
    {
        private ulong _state = state;

        public ulong Next()
        {
            ulong z = _state += 0x9E3779B97F4A7C15;
            z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9;
            z = (z ^ (z >> 27)) * 0x94D049BB133111EB;
            return z ^ (z >> 31);
        }

        public double NextDouble() => (Next() >> 11) * (1.0 / (1UL << 53));

        public float NextNormal()
        {
            // Box–Muller; the second value is dropped to keep each element a function of its position only.
            double u1 = 1.0 - NextDouble(), u2 = NextDouble();
            return (float)(Math.Sqrt(-2 * Math.Log(u1)) * Math.Cos(2 * Math.PI * u2));
        }
    }
}
