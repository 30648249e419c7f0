using System.Text;
using System.Text.Json;
using Velo.Formats;
using Velo.Models;
using Velo.Tensors;
using Velo.Text;
using Velo.Text.ChatTemplates;

namespace Velo.Fuzz;

/// <summary>
/// The starting corpus of each fuzz target, built from ../shared and from code rather than committed: the shared
/// files are too large for a fuzzer (which mutates small inputs far faster), so models and vocabularies are shrunk.
/// </summary>
public static class FuzzSeeds
{
    /// <summary>
    /// Token ids kept from each shared vocabulary: the first ones (special tokens, byte pieces, first merges) and a
    /// run of whole words further on (a WordPiece vocabulary starts with hundreds of unused and single-letter entries).
    /// </summary>
    private static readonly Range[] KeptIds = [0..300, 2000..2100];

    public static IEnumerable<(string Name, byte[] Data)> For(string target, string sharedDir) => target switch
    {
        "gguf" => Models(),
        "tokenizer" => Vocabularies(sharedDir).Concat(Models().Take(1)),
        "jinja" => Templates(sharedDir),
        "http" => RequestBodies(),
        "onnx" => [("tiny-bert.onnx", TinyBertOnnx())],
        "safetensors" => [("tiny.safetensors", TinySafetensors())],
        _ => throw new ArgumentException($"unknown fuzz target '{target}'", nameof(target)),
    };

    /// <summary>Two tiny random-weight models: F32 with plain attention, Q8_0 with grouped-query attention and QK norms.</summary>
    private static IEnumerable<(string, byte[])> Models()
    {
        yield return ("tiny-f32.gguf", Synthesize(new SynthSpec { Dim = 8, Layers = 1, Heads = 2, FfnDim = 16, VocabSize = 260, ContextLength = 64 }));
        yield return ("tiny-q8_0-gqa.gguf", Synthesize(new SynthSpec
        {
            Dim = 32, Layers = 1, Heads = 4, KvHeads = 2, FfnDim = 32, VocabSize = 260, ContextLength = 64,
            WeightType = GgmlType.Q8_0, QkNorm = true, TiedEmbeddings = false,
        }));
    }

    /// <summary>Three tensors of the three dtypes Velo reads and one it does not, with a __metadata__ entry, as PyTorch saves them.</summary>
    private static byte[] TinySafetensors()
    {
        var tensors = new (string Name, string DType, long[] Shape, int Bytes)[]
        {
            ("model.embed_tokens.weight", "F32", [4, 8], 128), ("model.norm.weight", "BF16", [8], 16),
            ("lm_head.weight", "F16", [4, 8], 64), ("position_ids", "I64", [1, 4], 32),
        };
        var header = new Dictionary<string, object> { ["__metadata__"] = new Dictionary<string, string> { ["format"] = "pt" } };
        long offset = 0;
        foreach (var t in tensors)
        {
            header[t.Name] = new Dictionary<string, object> { ["dtype"] = t.DType, ["shape"] = t.Shape, ["data_offsets"] = new[] { offset, offset + t.Bytes } };
            offset += t.Bytes;
        }
        byte[] json = JsonSerializer.SerializeToUtf8Bytes(header);
        var file = new MemoryStream();
        file.Write(BitConverter.GetBytes((ulong)json.Length));
        file.Write(json);
        var random = new Random(3);
        var data = new byte[offset];
        random.NextBytes(data);
        file.Write(data);
        return file.ToArray();
    }

    /// <summary>
    /// A one-layer BERT of width 64 (one head) and a vocabulary of <see cref="FuzzTargets.OnnxVocabulary"/>'s 8
    /// tokens, as PyTorch exports one: HF-named embeddings, norms and biases, anonymous [in, out] weights read by the
    /// MatMul whose output each bias's Add reads. Written field by field in protobuf's wire format.
    /// </summary>
    private static byte[] TinyBertOnnx()
    {
        const int dim = 64, vocab = 8, positions = 8;
        var random = new Random(7);
        var graph = new MemoryStream();
        int anonymous = 0;
        void Initializer(string name, params long[] dims)
        {
            var t = new MemoryStream();
            foreach (long d in dims) Varint(t, 1 << 3, (ulong)d);
            Varint(t, 2 << 3, 1);
            Bytes(t, 8 << 3 | 2, Encoding.UTF8.GetBytes(name));
            var data = new byte[dims.Aggregate(4L, (a, d) => a * d)];
            for (int i = 0; i < data.Length; i += 4) BitConverter.TryWriteBytes(data.AsSpan(i), (float)(random.NextDouble() - 0.5));
            Bytes(t, 9 << 3 | 2, data);
            Bytes(graph, 5 << 3 | 2, t.ToArray());
        }
        void Node(string op, string[] inputs, string output)
        {
            var n = new MemoryStream();
            foreach (string i in inputs) Bytes(n, 1 << 3 | 2, Encoding.UTF8.GetBytes(i));
            Bytes(n, 2 << 3 | 2, Encoding.UTF8.GetBytes(output));
            Bytes(n, 4 << 3 | 2, Encoding.UTF8.GetBytes(op));
            Bytes(graph, 1 << 3 | 2, n.ToArray());
        }
        void Linear(string bias, int input, int output)
        {
            string weight = $"{900 + anonymous++}";
            Initializer(weight, input, output);
            Initializer(bias, output);
            Node("MatMul", ["x", weight], weight + "_mm");
            Node("Add", [bias, weight + "_mm"], weight + "_out");
        }
        Initializer("embeddings.word_embeddings.weight", vocab, dim);
        Initializer("embeddings.position_embeddings.weight", positions, dim);
        Initializer("embeddings.token_type_embeddings.weight", 2, dim);
        Initializer("embeddings.LayerNorm.weight", dim);
        Initializer("embeddings.LayerNorm.bias", dim);
        const string p = "encoder.layer.0.";
        Linear(p + "attention.self.query.bias", dim, dim);
        Linear(p + "attention.self.key.bias", dim, dim);
        Linear(p + "attention.self.value.bias", dim, dim);
        Linear(p + "attention.output.dense.bias", dim, dim);
        Initializer(p + "attention.output.LayerNorm.weight", dim);
        Initializer(p + "attention.output.LayerNorm.bias", dim);
        Linear(p + "intermediate.dense.bias", dim, dim);
        Linear(p + "output.dense.bias", dim, dim);
        Initializer(p + "output.LayerNorm.weight", dim);
        Initializer(p + "output.LayerNorm.bias", dim);
        var model = new MemoryStream();
        Varint(model, 1 << 3, 7); // ir_version
        Bytes(model, 7 << 3 | 2, graph.ToArray());
        return model.ToArray();
    }

    private static void Varint(Stream s, int tag, ulong value)
    {
        Raw(s, (ulong)tag);
        Raw(s, value);
    }

    private static void Raw(Stream s, ulong value)
    {
        for (; value >= 0x80; value >>= 7) s.WriteByte((byte)(value | 0x80));
        s.WriteByte((byte)value);
    }

    private static void Bytes(Stream s, int tag, byte[] data)
    {
        Raw(s, (ulong)tag);
        Raw(s, (ulong)data.Length);
        s.Write(data);
    }

    private static byte[] Synthesize(SynthSpec spec)
    {
        string path = Path.Combine(Path.GetTempPath(), $"velo-fuzz-seed-{Environment.ProcessId}-{Guid.NewGuid():N}.gguf");
        try
        {
            ModelSynthesizer.Write(path, spec, threads: 1);
            return File.ReadAllBytes(path);
        }
        finally
        {
            File.Delete(path);
        }
    }

    /// <summary>Each shared vocabulary GGUF cut to its first tokens, with the merges and special ids that still fit.</summary>
    private static IEnumerable<(string, byte[])> Vocabularies(string sharedDir)
    {
        foreach (string path in Directory.GetFiles(Path.Combine(sharedDir, "tokenizers", "vocab"), "*.gguf").Order())
        {
            TokenizerData data;
            using (var file = GgufFile.Open(path)) data = GgufTokenizerMetadata.Read(file.Metadata);
            int[] ids = [.. KeptIds.SelectMany(r => Enumerable.Range(r.Start.Value, r.End.Value - r.Start.Value)).Where(id => id < data.Tokens.Length)];
            var newId = ids.Select((id, index) => (id, index)).ToDictionary(p => p.id, p => p.index);
            int Keep(int id) => newId.GetValueOrDefault(id, -1);
            var tokens = ids.Select(id => data.Tokens[id]).ToArray();
            var kept = tokens.ToHashSet();
            var trimmed = data with
            {
                Tokens = tokens, Scores = data.Scores is { } scores ? [.. ids.Select(id => scores[id])] : null,
                TokenTypes = data.TokenTypes is { } types ? [.. ids.Select(id => types[id])] : null,
                Merges = data.Merges?.Where(m => kept.Contains(m.Left) && kept.Contains(m.Right) && kept.Contains(m.Left + m.Right)).ToList(),
                BosId = Keep(data.BosId), EosId = Keep(data.EosId), EotId = Keep(data.EotId), EomId = Keep(data.EomId),
                UnknownId = Keep(data.UnknownId), SepId = Keep(data.SepId), PadId = Keep(data.PadId), ClsId = Keep(data.ClsId),
                MaskId = Keep(data.MaskId), LeftStripTokens = data.LeftStripTokens?.Where(newId.ContainsKey).Select(Keep).ToHashSet(),
            };
            var writer = new GgufWriter();
            GgufTokenizerMetadata.Write(trimmed, writer);
            var bytes = new MemoryStream();
            writer.WriteTo(bytes);
            yield return (Path.GetFileNameWithoutExtension(path) + $"-{ids.Length}.gguf", bytes.ToArray());
        }
    }

    /// <summary>The chat templates of the shared Hugging Face configs, ChatML, and small ones using the rest of the syntax.</summary>
    private static IEnumerable<(string, byte[])> Templates(string sharedDir)
    {
        foreach (string dir in Directory.GetDirectories(Path.Combine(sharedDir, "tokenizers", "hf")).Order())
        {
            string config = Path.Combine(dir, "tokenizer_config.json");
            if (!File.Exists(config)) continue;
            using var json = JsonDocument.Parse(File.ReadAllBytes(config));
            if (json.RootElement.TryGetProperty("chat_template", out var template) && template.ValueKind == JsonValueKind.String)
                yield return ($"{Path.GetFileName(dir)}.jinja", Encoding.UTF8.GetBytes(template.GetString()!));
        }
        string[] handWritten =
        [
            "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}" +
            "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}",
            "{%- set ns = namespace(sys='') -%}{%- for m in messages -%}{%- if m.role == 'system' -%}{%- set ns.sys = m.content | trim -%}" +
            "{%- elif m.role == 'tool' -%}{{ raise_exception('no tools here') }}{%- else -%}" +
            "[{{ m.role | upper }}] {{ m.content | replace('<', '&lt;') }}{{ eos_token if not loop.last }}{%- endif -%}{%- endfor -%}{{ ns.sys | length }}",
            "{% macro fmt(m, sep=': ') %}{{ m['role'] ~ sep ~ m['content'][:20] }}{% endmacro %}{{ bos_token }}" +
            "{% for m in messages | selectattr('role', 'ne', 'system') %}{{ fmt(m) }}{% if loop.first %}{{ range(3) | list | tojson }}{% endif %}" +
            "{% else %}none{% endfor %}{% set d = {'a': [1, 2.5, none, true], 'b': 'x' * 3} %}{{ d | items | list }}{{ d.b.split('x') }}",
            "{# comment #}{% if messages[0].content is string and messages | length > 2 %}{{ messages[-1].content.strip().lower() }}" +
            "{% endif %}{% for k, v in {'x': 1}.items() %}{{ k }}={{ v + 1 }}{% break %}{% endfor %}{{ strftime_now('%Y') | length }}",
        ];
        for (int i = 0; i < handWritten.Length; i++) yield return ($"hand-{i}.jinja", Encoding.UTF8.GetBytes(handWritten[i]));
    }

    /// <summary>Valid and near-valid bodies touching every field the two completion routes read.</summary>
    private static IEnumerable<(string, byte[])> RequestBodies()
    {
        string[] bodies =
        [
            """{"model":"stories260K","messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"Once upon a time"}],"max_tokens":8}""",
            """{"messages":[{"role":"user","content":[{"type":"text","text":"Hi"},{"type":"text","text":" there"}]}],"temperature":0.7,"top_p":0.9,"top_k":40,"min_p":0.05,"seed":-3,"stream":true,"stream_options":{"include_usage":true}}""",
            """{"messages":[{"role":"assistant","content":null},{"role":"user","content":"x"}],"logprobs":true,"top_logprobs":3,"logit_bias":{"1":-100,"403":5.5},"stop":["\n","The"],"n":1}""",
            """{"prompt":"Once upon a time","max_tokens":16,"echo":false,"logprobs":2,"stop":"end","repeat_penalty":1.1,"presence_penalty":0.5,"frequency_penalty":-0.5,"ignore_eos":true}""",
            """{"prompt":"","max_completion_tokens":1,"stream":false}""",
            """{"model":"other","prompt":"Hi"}""",
        ];
        for (int i = 0; i < bodies.Length; i++) yield return ($"body-{i}.json", Encoding.UTF8.GetBytes(bodies[i]));
    }
}
