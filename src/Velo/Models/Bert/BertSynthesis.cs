using Velo.Formats;

namespace Velo.Models.Bert;

/// <summary>The tensors and metadata of a random-weight BERT encoder for <see cref="ModelSynthesizer"/>, in llama.cpp's <c>bert</c> layout.</summary>
internal static class BertSynthesis
{
    /// <summary>Tensor names and shapes (ggml order: ne[0] first) in llama.cpp's order.</summary>
    public static IEnumerable<(string Name, long[] Shape)> Tensors(SynthSpec s)
    {
        yield return ("token_embd.weight", [s.Dim, s.VocabSize]);
        yield return ("position_embd.weight", [s.Dim, s.ContextLength]);
        yield return ("token_types.weight", [s.Dim, 2]);
        yield return ("token_embd_norm.weight", [s.Dim]);
        yield return ("token_embd_norm.bias", [s.Dim]);
        for (int l = 0; l < s.Layers; l++)
        {
            string p = $"blk.{l}.";
            foreach (string name in (string[])["attn_q", "attn_k", "attn_v", "attn_output"])
            {
                yield return (p + name + ".weight", [s.Dim, s.Dim]);
                yield return (p + name + ".bias", [s.Dim]);
            }
            yield return (p + "attn_output_norm.weight", [s.Dim]);
            yield return (p + "attn_output_norm.bias", [s.Dim]);
            yield return (p + "ffn_up.weight", [s.Dim, s.FfnDim]);
            yield return (p + "ffn_up.bias", [s.FfnDim]);
            yield return (p + "ffn_down.weight", [s.FfnDim, s.Dim]);
            yield return (p + "ffn_down.bias", [s.Dim]);
            yield return (p + "layer_output_norm.weight", [s.Dim]);
            yield return (p + "layer_output_norm.bias", [s.Dim]);
        }
        if (s.ClassifierLabels is { } labels)
        {
            // Two layers: cls is dim → dim (then tanh) and cls.output dim → labels; one layer: cls is dim → labels.
            long clsRows = s.ClassifierOutput ? s.Dim : labels.Count;
            yield return ("cls.weight", [s.Dim, clsRows]);
            yield return ("cls.bias", [clsRows]);
            if (s.ClassifierOutput)
            {
                yield return ("cls.output.weight", [s.Dim, labels.Count]);
                yield return ("cls.output.bias", [labels.Count]);
            }
        }
    }

    /// <summary>LayerNorm's epsilon, bidirectional attention and mean pooling, as llama.cpp's converter writes them.</summary>
    public static void Metadata(SynthSpec s, GgufWriter writer)
    {
        writer.Set("bert.attention.layer_norm_epsilon", s.NormEpsilon)
            .Set("bert.attention.causal", false)
            .Set("bert.pooling_type", (uint)(s.ClassifierLabels != null ? EmbeddingPooling.Rank : EmbeddingPooling.Mean))
            .Set("tokenizer.ggml.token_type_count", 2u);
        if (s.ClassifierLabels is { } labels) writer.Set(BertConfig.LabelsKey, labels.ToArray());
    }
}
