using Velo.Formats;

namespace Velo.Models.Gemma;

/// <summary>The tensors and Gemma-specific metadata of a random-weight Gemma model for <see cref="ModelSynthesizer"/>.</summary>
internal static class GemmaSynthesis
{
    /// <summary>Tensor names and shapes (ggml order: ne[0] first) as llama.cpp's converter writes them.</summary>
    public static IEnumerable<(string Name, long[] Shape)> Tensors(SynthSpec s)
    {
        long qDim = (long)s.Heads * s.EffectiveHeadDim, kvDim = (long)s.EffectiveKvHeads * s.EffectiveHeadDim;
        bool postNorms = s.Architecture is "gemma2" or "gemma3", qkNorm = s.Architecture is "gemma3";
        yield return ("token_embd.weight", [s.Dim, s.VocabSize]);
        yield return ("output_norm.weight", [s.Dim]);
        if (!s.TiedEmbeddings) yield return ("output.weight", [s.Dim, s.VocabSize]);
        for (int l = 0; l < s.Layers; l++)
        {
            string p = $"blk.{l}.";
            yield return (p + "attn_norm.weight", [s.Dim]);
            yield return (p + "attn_q.weight", [s.Dim, qDim]);
            yield return (p + "attn_k.weight", [s.Dim, kvDim]);
            yield return (p + "attn_v.weight", [s.Dim, kvDim]);
            if (qkNorm)
            {
                yield return (p + "attn_q_norm.weight", [s.EffectiveHeadDim]);
                yield return (p + "attn_k_norm.weight", [s.EffectiveHeadDim]);
            }
            yield return (p + "attn_output.weight", [qDim, s.Dim]);
            if (postNorms) yield return (p + "post_attention_norm.weight", [s.Dim]);
            yield return (p + "ffn_norm.weight", [s.Dim]);
            yield return (p + "ffn_gate.weight", [s.Dim, s.FfnDim]);
            yield return (p + "ffn_up.weight", [s.Dim, s.FfnDim]);
            yield return (p + "ffn_down.weight", [s.FfnDim, s.Dim]);
            if (postNorms) yield return (p + "post_ffw_norm.weight", [s.Dim]);
        }
    }

    /// <summary>The sliding window and Gemma 2's soft caps, under llama.cpp's keys.</summary>
    public static void Metadata(SynthSpec s, GgufWriter writer)
    {
        string a = s.Architecture;
        if (a is "gemma2" or "gemma3") writer.Set($"{a}.attention.sliding_window", (uint)s.SlidingWindow);
        if (a is "gemma2")
            writer.Set($"{a}.attn_logit_softcapping", s.AttentionSoftCap)
                .Set($"{a}.final_logit_softcapping", s.FinalSoftCap);
    }
}
