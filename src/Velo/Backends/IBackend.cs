using Velo.Kernels;
using Velo.Runtime;
using Velo.Tensors;

namespace Velo.Backends;

/// <summary>How a gated feed-forward network activates its gate before multiplying it by the up projection.</summary>
internal enum GatedActivation
{
    /// <summary>SwiGLU: silu(gate) ⊙ up (Llama, Mistral, Qwen).</summary>
    SiLU,

    /// <summary>GeGLU: gelu(gate) ⊙ up with GELU's tanh approximation (Gemma).</summary>
    GeluTanh,
}

/// <summary>
/// How attention scores its keys: <c>Scale · q·k</c>, soft-capped to <c>SoftCap · tanh(score / SoftCap)</c> when
/// SoftCap is positive, over every earlier position or, when Window is positive, only the last Window of them
/// (the token's own included).
/// </summary>
/// <remarks>Bidirectional (encoders): every position its sequence holds, later ones included, so a whole input is
/// stored before any of it attends.</remarks>
internal readonly record struct AttentionScoring(float Scale, float SoftCap = 0, int Window = 0, bool Bidirectional = false);

/// <summary>
/// The closed set of operations a forward pass is made of, each over a whole batch of rows. Models call nothing else,
/// so another backend (a GPU) implements this set and runs every family. Buffers are rows of floats, row-major; a
/// batch's rows are its tokens in batch order.
/// </summary>
internal unsafe interface IBackend
{
    /// <summary>Row t of <paramref name="output"/> becomes row <c>tokens[t]</c> of <paramref name="table"/>, as floats.</summary>
    void EmbeddingLookup(in WeightMatrix table, ReadOnlySpan<int> tokens, float* output);

    /// <summary><c>y = W · x</c> for every row of <paramref name="x"/>.</summary>
    void MatMul(in WeightMatrix weights, float* x, int rows, float* y);

    /// <summary>The same rows times several matrices of one width (Q, K and V; gate and up), each into its own target,
    /// with its bias, GELU or residual add applied as the target's <see cref="MatMulEpilogue"/> says.</summary>
    void MatMul(ReadOnlySpan<MatMulTarget> targets, float* x, int rows);

    /// <summary>RMSNorm of each of <paramref name="rows"/> rows of <paramref name="width"/> times <paramref name="weight"/>;
    /// <paramref name="y"/> may be <paramref name="x"/>.</summary>
    void RmsNorm(float* x, float* weight, float* y, int rows, int width, float epsilon);

    /// <summary><c>x += y</c> over <paramref name="count"/> floats: a residual connection.</summary>
    void Add(float* x, float* y, long count);

    /// <summary><c>x *= factor</c> over <paramref name="count"/> floats.</summary>
    void Scale(float* x, long count, float factor);

    /// <summary><c>x = cap · tanh(x / cap)</c> over <paramref name="count"/> floats.</summary>
    void SoftCap(float* x, long count, float cap);

    /// <summary>Rope's cos and sin (<paramref name="pairs"/> per row) for each position, times
    /// <paramref name="positionScale"/>; <paramref name="frequencyFactors"/> is null or one divisor per pair; cos and sin
    /// are multiplied by <paramref name="magnitude"/> (ggml's <c>attn_factor</c>).</summary>
    void RopeAngles(ReadOnlySpan<int> positions, float positionScale, float theta, float* frequencyFactors, int pairs, float* cos, float* sin,
        float magnitude = 1);

    /// <summary>Rotates, in place, every head of each of <paramref name="rows"/> rows of <paramref name="width"/> by
    /// that row's angles (<paramref name="pairs"/> per row).</summary>
    void Rope(float* x, int rows, int width, int headDim, float* cos, float* sin, int pairs, RopeLayout layout);

    /// <summary>Stores each token's keys and values (a row of the cache's KV width each) at its sequence and position.</summary>
    void StoreKeysValues(KvCache cache, int layer, ForwardBatch batch, float* keys, float* values);

    /// <summary>Grouped-query attention of each token's queries over its sequence's cached keys and values up to its
    /// position (or all of them when bidirectional), scored as <paramref name="scoring"/> says.</summary>
    void Attention(KvCache cache, int layer, ForwardBatch batch, float* queries, float* output, int heads, in AttentionScoring scoring);

    /// <summary>Bidirectional attention of each token over every token of its sequence in this batch, from the batch's
    /// own rows of keys and values (rows of <paramref name="heads"/> × <paramref name="headDim"/>, as the queries and
    /// the output): an encoder's input comes whole in one batch, so nothing is cached. Scores are
    /// <paramref name="scale"/> · q·k.</summary>
    void BatchAttention(ForwardBatch batch, float* queries, float* keys, float* values, float* output, int heads, int headDim, float scale);

    /// <summary>Layer normalization (mean and variance) of each row, times <paramref name="weight"/> plus
    /// <paramref name="bias"/>; <paramref name="y"/> may be <paramref name="x"/>.</summary>
    void LayerNorm(float* x, float* weight, float* bias, float* y, int rows, int width, float epsilon);

    /// <summary><c>gate = activation(gate) ⊙ up</c> over <paramref name="count"/> floats.</summary>
    void GatedActivation(GatedActivation activation, float* gate, float* up, long count);

    /// <summary>
    /// One row of <paramref name="output"/> for each token of the batch that asks for one, in batch order, pooled over
    /// the batch's tokens of that token's sequence (an encoder's whole input is one batch): its own row, the mean, or
    /// the row at position 0; scaled to unit length when <paramref name="normalize"/> and pooled.
    /// </summary>
    void Pool(float* x, ForwardBatch batch, int width, Models.EmbeddingPooling pooling, bool normalize, float* output);

    /// <summary>Copies the rows whose <paramref name="selected"/> flag is set to consecutive rows of
    /// <paramref name="output"/>; returns how many.</summary>
    int SelectRows(float* x, ReadOnlySpan<bool> selected, int width, float* output);
}
