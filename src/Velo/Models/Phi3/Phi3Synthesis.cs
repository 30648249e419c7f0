using Velo.Formats;

namespace Velo.Models.Phi3;

/// <summary>The tensors and metadata of a random-weight Phi-3 model for <see cref="ModelSynthesizer"/>, as llama.cpp's converter writes them.</summary>
internal static class Phi3Synthesis
{
    /// <summary>Tensor names and shapes (ggml order: ne[0] first) in llama.cpp's order.</summary>
    public static IEnumerable<(string Name, long[] Shape)> Tensors(SynthSpec s)
    {
        long qDim = (long)s.Heads * s.EffectiveHeadDim, kvDim = (long)s.EffectiveKvHeads * s.EffectiveHeadDim;
        yield return ("token_embd.weight", [s.Dim, s.VocabSize]);
        yield return ("output_norm.weight", [s.Dim]);
        if (!s.TiedEmbeddings) yield return ("output.weight", [s.Dim, s.VocabSize]);
        if (s.OriginalContextLength > 0)
        {
            yield return ("rope_factors_long.weight", [s.EffectiveRopeDims / 2]);
            yield return ("rope_factors_short.weight", [s.EffectiveRopeDims / 2]);
        }
        for (int l = 0; l < s.Layers; l++)
        {
            string p = $"blk.{l}.";
            yield return (p + "attn_norm.weight", [s.Dim]);
            yield return (p + "attn_qkv.weight", [s.Dim, qDim + 2 * kvDim]);
            yield return (p + "attn_output.weight", [qDim, s.Dim]);
            yield return (p + "ffn_norm.weight", [s.Dim]);
            // The gate's rows, then the up projection's.
            yield return (p + "ffn_up.weight", [s.Dim, 2L * s.FfnDim]);
            yield return (p + "ffn_down.weight", [s.FfnDim, s.Dim]);
        }
    }

    /// <summary>LongRoPE's keys, with the attention factor computed as the converter (<c>Phi3MiniModel</c>) does.</summary>
    public static void Metadata(SynthSpec s, GgufWriter writer)
    {
        if (s.OriginalContextLength <= 0) return;
        double scale = (double)s.ContextLength / s.OriginalContextLength;
        double attentionFactor = scale > 1 ? Math.Sqrt(1 + Math.Log(scale) / Math.Log(s.OriginalContextLength)) : 1;
        writer.Set("phi3.rope.scaling.original_context_length", (uint)s.OriginalContextLength)
            .Set("phi3.rope.scaling.attn_factor", (float)attentionFactor);
    }
}
