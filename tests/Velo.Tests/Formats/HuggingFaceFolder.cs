using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Velo.Models;
using Velo.Tensors;

namespace Velo.Tests.Formats;

/// <summary>A tensor to write into a safetensors file: dtype name, row-major shape, and its bytes.</summary>
public sealed record SafetensorsEntry(string Name, string DType, long[] Shape, byte[] Data);

/// <summary>
/// Writes safetensors files and whole Hugging Face model folders for tests. A folder is made from a
/// <see cref="SynthSpec"/>: the random weights <see cref="ModelSynthesizer"/> would write, laid out the way Hugging
/// Face's modelling code holds them (written here from Hugging Face's conventions, not from Velo's converter):
/// PyTorch's [out, in] matrices, Llama's Q/K heads in rotate-half order, Gemma's norms as w − 1, config.json keys.
/// </summary>
public static class HuggingFaceFolder
{
    public static void WriteSafetensors(string path, IEnumerable<SafetensorsEntry> entries, Func<string, JsonObject, JsonObject>? editHeader = null)
    {
        var list = entries.ToList();
        var header = new JsonObject { ["__metadata__"] = new JsonObject { ["format"] = "pt" } };
        long offset = 0;
        foreach (var e in list)
        {
            var item = new JsonObject
            {
                ["dtype"] = e.DType,
                ["shape"] = new JsonArray(e.Shape.Select(d => (JsonNode)d).ToArray()),
                ["data_offsets"] = new JsonArray(offset, offset + e.Data.Length),
            };
            header[e.Name] = editHeader?.Invoke(e.Name, item) ?? item;
            offset += e.Data.Length;
        }
        byte[] json = Encoding.UTF8.GetBytes(header.ToJsonString());
        using var stream = File.Create(path);
        stream.Write(BitConverter.GetBytes((ulong)json.Length));
        stream.Write(json);
        foreach (var e in list) stream.Write(e.Data);
    }

    public static byte[] Floats(ReadOnlySpan<float> values, string dtype)
    {
        var bytes = new byte[values.Length * (dtype == "F32" ? 4 : 2)];
        for (int i = 0; i < values.Length; i++)
            switch (dtype)
            {
                case "F32": BitConverter.TryWriteBytes(bytes.AsSpan(4 * i), values[i]); break;
                case "F16": BitConverter.TryWriteBytes(bytes.AsSpan(2 * i), (Half)values[i]); break;
                case "BF16": BitConverter.TryWriteBytes(bytes.AsSpan(2 * i), BFloat16.FromSingle(values[i])); break;
                default: throw new ArgumentException(dtype);
            }
        return bytes;
    }

    /// <summary>The Hugging Face model class of a GGUF architecture (Llama-family Mistral is written by llama.cpp as llama).</summary>
    public static string ModelClass(string architecture) => architecture switch
    {
        "llama" => "LlamaForCausalLM",
        "qwen2" => "Qwen2ForCausalLM",
        "qwen3" => "Qwen3ForCausalLM",
        "gemma" => "GemmaForCausalLM",
        "gemma2" => "Gemma2ForCausalLM",
        "gemma3" => "Gemma3ForCausalLM",
        "phi3" => "Phi3ForCausalLM",
        _ => throw new ArgumentException(architecture),
    };

    /// <summary>
    /// Writes config.json, the weights (in <paramref name="shards"/> files with an index when more than one; matrices
    /// as <paramref name="matrixDType"/>, vectors F32) and a small SentencePiece-style tokenizer.json.
    /// </summary>
    public static void Write(string folder, SynthSpec spec, string matrixDType = "F32", int shards = 1, string? modelClass = null)
    {
        Directory.CreateDirectory(folder);
        File.WriteAllText(Path.Combine(folder, "config.json"), Config(spec, modelClass ?? ModelClass(spec.Architecture)).ToJsonString());
        var entries = Tensors(spec, matrixDType).ToList();
        if (shards == 1)
        {
            WriteSafetensors(Path.Combine(folder, "model.safetensors"), entries);
        }
        else
        {
            var map = new JsonObject();
            for (int s = 0; s < shards; s++)
            {
                string file = $"model-{s + 1:D5}-of-{shards:D5}.safetensors";
                var part = entries.Where((_, i) => i % shards == s).ToList();
                WriteSafetensors(Path.Combine(folder, file), part);
                foreach (var e in part) map[e.Name] = file;
            }
            File.WriteAllText(Path.Combine(folder, "model.safetensors.index.json"),
                new JsonObject { ["metadata"] = new JsonObject { ["total_size"] = 0 }, ["weight_map"] = map }.ToJsonString());
        }
        WriteTokenizer(folder);
    }

    public static JsonObject Config(SynthSpec s, string modelClass)
    {
        var config = new JsonObject
        {
            ["architectures"] = new JsonArray(modelClass),
            ["hidden_size"] = s.Dim,
            ["num_hidden_layers"] = s.Layers,
            ["num_attention_heads"] = s.Heads,
            ["num_key_value_heads"] = s.EffectiveKvHeads,
            ["intermediate_size"] = s.FfnDim,
            ["max_position_embeddings"] = s.ContextLength,
            ["rms_norm_eps"] = (double)s.NormEpsilon,
            ["rope_theta"] = (double)s.RopeBase,
            ["vocab_size"] = s.VocabSize,
            ["tie_word_embeddings"] = s.TiedEmbeddings,
            ["torch_dtype"] = "float32",
        };
        if (s.EffectiveHeadDim != s.Dim / s.Heads || s.Architecture.StartsWith("gemma")) config["head_dim"] = s.EffectiveHeadDim;
        if (s.Architecture is "gemma2" or "gemma3") config["sliding_window"] = s.SlidingWindow;
        if (s.Architecture == "gemma2")
        {
            config["attn_logit_softcapping"] = (double)s.AttentionSoftCap;
            config["final_logit_softcapping"] = (double)s.FinalSoftCap;
        }
        if (s.Architecture == "phi3" && s.OriginalContextLength > 0)
        {
            config["original_max_position_embeddings"] = s.OriginalContextLength;
            config["rope_scaling"] = new JsonObject
            {
                ["type"] = "longrope",
                ["long_factor"] = Factors(s, "rope_factors_long.weight"),
                ["short_factor"] = Factors(s, "rope_factors_short.weight"),
            };
        }
        return config;
    }

    private static JsonArray Factors(SynthSpec s, string name)
    {
        var values = new float[s.EffectiveRopeDims / 2];
        ModelSynthesizer.FillRow(s, name, 0, values);
        // Written as doubles exactly equal to the floats, so the converter's float of each is the synthesized value.
        return new JsonArray(values.Select(v => (JsonNode)(double)v).ToArray());
    }

    /// <summary>The synthesized tensors under their Hugging Face names and layouts.</summary>
    public static IEnumerable<SafetensorsEntry> Tensors(SynthSpec s, string matrixDType)
    {
        bool gemma = s.Architecture.StartsWith("gemma"), postNorms = s.Architecture is "gemma2" or "gemma3";
        foreach (var (name, shape) in ModelSynthesizer.Tensors(s))
        {
            if (name.StartsWith("rope_factors_")) continue; // in config.json's rope_scaling
            long columns = shape[0], rows = shape.Length > 1 ? shape[1] : 1;
            var values = new float[columns * rows];
            for (long r = 0; r < rows; r++) ModelSynthesizer.FillRow(s, name, r, values.AsSpan((int)(r * columns), (int)columns));
            if (gemma && name.EndsWith("norm.weight"))
                for (int i = 0; i < values.Length; i++) values[i] -= 1; // Gemma's RMSNorm scales by (1 + w)
            if (s.Architecture == "llama" && (name.EndsWith("attn_q.weight") || name.EndsWith("attn_k.weight")))
                values = ToRotateHalf(values, columns, name.EndsWith("attn_q.weight") ? s.Heads : s.EffectiveKvHeads);
            long[] hfShape = shape.Length == 1 ? [columns] : [rows, columns];
            yield return new SafetensorsEntry(HfName(name, gemma, postNorms, s.Architecture), shape.Length == 1 ? "F32" : matrixDType, hfShape,
                Floats(values, shape.Length == 1 ? "F32" : matrixDType));
        }
    }

    /// <summary>
    /// Hugging Face's Llama rotates each head's first half against its second half (rotate_half); GGUF rotates adjacent
    /// pairs. The pair (2i, 2i + 1) of a GGUF head is HF's (i, i + half): rows are gathered into that order.
    /// </summary>
    private static float[] ToRotateHalf(float[] ggml, long columns, int heads)
    {
        long rows = ggml.Length / columns, perHead = rows / heads, half = perHead / 2;
        var hf = new float[ggml.Length];
        for (long h = 0; h < heads; h++)
            for (long i = 0; i < half; i++)
                for (long j = 0; j < 2; j++)
                    Array.Copy(ggml, (h * perHead + 2 * i + j) * columns, hf, (h * perHead + j * half + i) * columns, columns);
        return hf;
    }

    public static string HfName(string gguf, bool gemma, bool postNorms, string arch)
    {
        switch (gguf)
        {
            case "token_embd.weight": return "model.embed_tokens.weight";
            case "output_norm.weight": return "model.norm.weight";
            case "output.weight": return "lm_head.weight";
        }
        string[] parts = gguf.Split('.', 3);
        string layer = $"model.layers.{parts[1]}.";
        return layer + parts[2] switch
        {
            "attn_norm.weight" => "input_layernorm.weight",
            "attn_q.weight" => "self_attn.q_proj.weight",
            "attn_k.weight" => "self_attn.k_proj.weight",
            "attn_v.weight" => "self_attn.v_proj.weight",
            "attn_q.bias" => "self_attn.q_proj.bias",
            "attn_k.bias" => "self_attn.k_proj.bias",
            "attn_v.bias" => "self_attn.v_proj.bias",
            "attn_q_norm.weight" => "self_attn.q_norm.weight",
            "attn_k_norm.weight" => "self_attn.k_norm.weight",
            "attn_qkv.weight" => "self_attn.qkv_proj.weight",
            "attn_output.weight" => "self_attn.o_proj.weight",
            "post_attention_norm.weight" => "post_attention_layernorm.weight",
            "ffn_norm.weight" => postNorms ? "pre_feedforward_layernorm.weight" : "post_attention_layernorm.weight",
            "post_ffw_norm.weight" => "post_feedforward_layernorm.weight",
            "ffn_gate.weight" => "mlp.gate_proj.weight",
            "ffn_up.weight" => arch == "phi3" ? "mlp.gate_up_proj.weight" : "mlp.up_proj.weight",
            "ffn_down.weight" => "mlp.down_proj.weight",
            var other => throw new ArgumentException($"no Hugging Face name for {gguf} ({other})"),
        };
    }

    /// <summary>
    /// A SentencePiece-style BPE tokenizer.json (byte fallback, ▁ for spaces) of 3 specials, 256 byte pieces and a few
    /// merged pieces, with a tokenizer_config.json carrying a chat template.
    /// </summary>
    public static void WriteTokenizer(string folder, string chatTemplate = "{% for m in messages %}<s>{{ m['content'] }}</s>{% endfor %}")
    {
        var vocab = new JsonObject { ["<unk>"] = 0, ["<s>"] = 1, ["</s>"] = 2 };
        for (int b = 0; b < 256; b++) vocab[$"<0x{b:X2}>"] = 3 + b;
        string[] pieces = ["▁", "a", "b", "▁a", "ab", "▁ab"];
        for (int i = 0; i < pieces.Length; i++) vocab[pieces[i]] = 259 + i;
        var tokenizer = new JsonObject
        {
            ["version"] = "1.0",
            ["added_tokens"] = new JsonArray(
                new JsonObject { ["id"] = 0, ["content"] = "<unk>", ["special"] = true },
                new JsonObject { ["id"] = 1, ["content"] = "<s>", ["special"] = true },
                new JsonObject { ["id"] = 2, ["content"] = "</s>", ["special"] = true }),
            ["normalizer"] = new JsonObject
            {
                ["type"] = "Sequence",
                ["normalizers"] = new JsonArray(
                    new JsonObject { ["type"] = "Prepend", ["prepend"] = "▁" },
                    new JsonObject { ["type"] = "Replace", ["pattern"] = new JsonObject { ["String"] = " " }, ["content"] = "▁" }),
            },
            ["model"] = new JsonObject
            {
                ["type"] = "BPE",
                ["unk_token"] = "<unk>",
                ["byte_fallback"] = true,
                ["vocab"] = vocab,
                ["merges"] = new JsonArray("▁ a", "a b", "▁a b"),
            },
        };
        File.WriteAllText(Path.Combine(folder, "tokenizer.json"), tokenizer.ToJsonString());
        File.WriteAllText(Path.Combine(folder, "tokenizer_config.json"), new JsonObject
        {
            ["bos_token"] = "<s>", ["eos_token"] = "</s>", ["add_bos_token"] = true, ["chat_template"] = chatTemplate,
        }.ToJsonString());
    }

    public static JsonObject ReadJson(string path) => JsonNode.Parse(File.ReadAllText(path))!.AsObject();
}
