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
        MaxInputTokens = model.Info.MaxInputTokens > 0 ? model.Info.MaxInputTokens : model.Info.ContextLength;
        maxBatchTokens = Math.Max(maxBatchTokens, MaxInputTokens);
        _maxSequences = Math.Max(1, maxSequences);
        _state = model.CreateState(MaxInputTokens, maxBatchTokens, _maxSequences, _maxSequences, pool);
        _batch = new ForwardBatch(maxBatchTokens);
    }

    public ITokenizer Tokenizer { get; }
    public int MaxInputTokens { get; }
    public int Dimensions => _model.Info.EmbeddingLength;

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

    public float[][] Embed(IReadOnlyList<string> texts) => EmbedTokens(texts.Select(Tokenize).ToArray());

    public float[] Embed(string text) => Embed([text])[0];

    /// <summary>Embeds already tokenized inputs (each at most <see cref="MaxInputTokens"/> tokens, none empty).</summary>
    public float[][] EmbedTokens(IReadOnlyList<int[]> inputs)
    {
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
                if (_batch.Count + ids.Length > _batch.Capacity) break;
                for (int t = 0; t < ids.Length; t++) _batch.Add(ids[t], t, next - first, wantLogits: t == ids.Length - 1);
                next++;
            }
            _model.Forward(_state, _batch);
            for (int i = first; i < next; i++) result[i] = _state.Output(i - first).ToArray();
        }
        return result;
    }

    public void Dispose() => _state.Dispose();
}
