using Velo.Models;
using Velo.Runtime;
using Velo.Text;
using Velo.Threading;

namespace Velo.Inference;

/// <summary>
/// Texts to embeddings with an encoder: each text is tokenized (with [CLS] and [SEP]), cut to the model's input
/// limit as sentence-transformers cuts it (the first tokens, then [SEP]), and several inputs run packed in one forward
/// pass, each as its own sequence, so no padding is computed.
/// </summary>
public sealed class TextEmbedder : IDisposable
{
    private readonly IModel _model;
    private readonly IModelState _state;
    private readonly ForwardBatch _batch;
    private readonly int _maxSequences;

    /// <param name="maxBatchTokens">Tokens per forward pass; at least one whole input (the model's input limit).</param>
    public TextEmbedder(IModel model, ITokenizer tokenizer, WorkerPool? pool = null, int maxBatchTokens = 4096, int maxSequences = 16)
    {
        if (model.Info.Output != ModelOutput.Embeddings)
            throw new NotSupportedException($"{model.File.Path}: a {model.Info.Architecture} model outputs logits, not embeddings; embedding needs an encoder such as bert");
        _model = model;
        Tokenizer = tokenizer;
        MaxInputTokens = InputLimit(model);
        maxBatchTokens = Math.Max(maxBatchTokens, MaxInputTokens);
        _maxSequences = Math.Max(1, maxSequences);
        _state = model.CreateState(MaxInputTokens, maxBatchTokens, _maxSequences, _maxSequences, pool);
        _batch = new ForwardBatch(maxBatchTokens);
    }

    public ITokenizer Tokenizer { get; }
    public int MaxInputTokens { get; }

    private static int InputLimit(IModel model) => model.Info.MaxInputTokens > 0 ? model.Info.MaxInputTokens : model.Info.ContextLength;

    /// <summary>The memory an embedder built with these arguments plans to use (a server counts it against its memory cap).</summary>
    public static MemoryPlan MemoryPlanFor(IModel model, int maxBatchTokens = 4096, int maxSequences = 16)
    {
        int sequences = Math.Max(1, maxSequences);
        return MemoryPlan.For(model, InputLimit(model), sequences, Math.Max(maxBatchTokens, InputLimit(model)), sequences, default);
    }
    public int Dimensions => _model.Info.EmbeddingLength;

    /// <summary>A classifier's or reranker's label names (one score each per output row); empty for an embedding model.</summary>
    public IReadOnlyList<string> Labels => _model.Info.Labels;

    /// <summary>The token ids the model sees for <paramref name="text"/>: special tokens added, cut to <see cref="MaxInputTokens"/>.</summary>
    public int[] Tokenize(string text)
    {
        int[] ids = Tokenizer.Encode(text, addSpecial: true);
        if (ids.Length <= MaxInputTokens) return ids;
        // Keep the closing [SEP] as Hugging Face's truncation does: the model was trained on inputs that end with it.
        bool endsWithSep = Tokenizer.SepId >= 0 && ids[^1] == Tokenizer.SepId;
        var cut = ids[..MaxInputTokens];
        if (endsWithSep) cut[^1] = Tokenizer.SepId;
        return cut;
    }

    /// <summary>
    /// A text pair as a cross-encoder sees it: <c>[CLS] first [SEP] second [SEP]</c>, token types 0 through the first
    /// [SEP] and 1 after it. Too long a pair is cut as Hugging Face's <c>longest_first</c> cuts it: a token at a time
    /// from the end of the longer text (the second on a tie).
    /// </summary>
    public (int[] Tokens, int[] Types) TokenizePair(string first, string second)
    {
        if (Tokenizer.ClsId < 0 || Tokenizer.SepId < 0)
            throw new NotSupportedException("the model's tokenizer has no [CLS] and [SEP] tokens to join a text pair");
        if (MaxInputTokens < 3) throw new NotSupportedException($"the model's input limit of {MaxInputTokens} tokens leaves no room for a text pair");
        int[] a = Tokenizer.Encode(first, addSpecial: false), b = Tokenizer.Encode(second, addSpecial: false);
        int keepA = a.Length, keepB = b.Length;
        for (int excess = 3 + keepA + keepB - MaxInputTokens; excess > 0; excess--)
        {
            if (keepA > keepB) keepA--;
            else keepB--;
        }
        int length = 3 + keepA + keepB;
        var tokens = new int[length];
        var types = new int[length];
        tokens[0] = Tokenizer.ClsId;
        a.AsSpan(0, keepA).CopyTo(tokens.AsSpan(1));
        tokens[1 + keepA] = Tokenizer.SepId;
        b.AsSpan(0, keepB).CopyTo(tokens.AsSpan(2 + keepA));
        tokens[^1] = Tokenizer.SepId;
        types.AsSpan(2 + keepA).Fill(1);
        return (tokens, types);
    }

    public float[][] Embed(IReadOnlyList<string> texts) => EmbedTokens(texts.Select(Tokenize).ToArray());

    public float[] Embed(string text) => Embed([text])[0];

    /// <summary>Embeds (or, for a classifier, scores) already tokenized inputs, each at most <see cref="MaxInputTokens"/>
    /// tokens and none empty, with their token types when given (else all 0).</summary>
    public float[][] EmbedTokens(IReadOnlyList<int[]> inputs, IReadOnlyList<int[]>? tokenTypes = null)
    {
        if (tokenTypes != null && tokenTypes.Count != inputs.Count)
            throw new ArgumentException($"{tokenTypes.Count} token type arrays for {inputs.Count} inputs", nameof(tokenTypes));
        var result = new float[inputs.Count][];
        int next = 0;
        while (next < inputs.Count)
        {
            _batch.Clear();
            int first = next;
            while (next < inputs.Count && next - first < _maxSequences)
            {
                var ids = inputs[next];
                if (ids.Length == 0) throw new ArgumentException($"input {next} has no tokens");
                if (ids.Length > MaxInputTokens) throw new ArgumentException($"input {next} has {ids.Length} tokens, more than the model's {MaxInputTokens}");
                var types = tokenTypes?[next];
                if (types != null && types.Length != ids.Length) throw new ArgumentException($"input {next} has {ids.Length} tokens but {types.Length} token types");
                if (_batch.Count + ids.Length > _batch.Capacity) break;
                for (int t = 0; t < ids.Length; t++) _batch.Add(ids[t], t, next - first, wantLogits: t == ids.Length - 1, tokenType: types?[t] ?? 0);
                next++;
            }
            _model.Forward(_state, _batch);
            for (int i = first; i < next; i++) result[i] = _state.Output(i - first).ToArray();
        }
        return result;
    }

    public void Dispose() => _state.Dispose();
}
