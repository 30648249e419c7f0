namespace Velo.Models.Llama;

/// <summary>The tensors of a random-weight Llama-family model for <see cref="ModelSynthesizer"/>.</summary>
internal static class LlamaSynthesis
{
    /// <summary>Tensor names and shapes (ggml order: ne[0] first) in llama.cpp's order.</summary>
    public static IEnumerable<(string Name, long[] Shape)> Tensors(SynthSpec s)
    {
        long qDim = (long)s.Heads * s.EffectiveHeadDim, kvDim = (long)s.EffectiveKvHeads * s.EffectiveHeadDim;
        yield return ("token_embd.weight", [s.Dim, s.VocabSize]);
        yield return ("output_norm.weight", [s.Dim]);
        if (!s.TiedEmbeddings) yield return ("output.weight", [s.Dim, s.VocabSize]);
        if (s.RopeFrequencyFactors) yield return ("rope_freqs.weight", [s.EffectiveHeadDim / 2]);
        for (int l = 0; l < s.Layers; l++)
        {
            string p = $"blk.{l}.";
            yield return (p + "attn_norm.weight", [s.Dim]);
            yield return (p + "attn_q.weight", [s.Dim, qDim]);
            yield return (p + "attn_k.weight", [s.Dim, kvDim]);
            yield return (p + "attn_v.weight", [s.Dim, kvDim]);
            if (s.QkvBias)
            {
                yield return (p + "attn_q.bias", [qDim]);
                yield return (p + "attn_k.bias", [kvDim]);
                yield return (p + "attn_v.bias", [kvDim]);
            }
            if (s.QkNorm)
            {
                yield return (p + "attn_q_norm.weight", [s.EffectiveHeadDim]);
                yield return (p + "attn_k_norm.weight", [s.EffectiveHeadDim]);
            }
            yield return (p + "attn_output.weight", [qDim, s.Dim]);
            yield return (p + "ffn_norm.weight", [s.Dim]);
            yield return (p + "ffn_gate.weight", [s.Dim, s.FfnDim]);
            yield return (p + "ffn_up.weight", [s.Dim, s.FfnDim]);
            yield return (p + "ffn_down.weight", [s.FfnDim, s.Dim]);
        }
    }
}
