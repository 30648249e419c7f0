using System.Diagnostics;
using Velo.Models;
using Velo.Text;
using Velo.Threading;

namespace Velo.Inference;

/// <summary>One piece of generated output: the token, and the text it completes (empty while a UTF-8 character is still partial).</summary>
public readonly record struct GeneratedToken(int Id, string Text);

/// <summary>
/// Generates text for one sequence at a time: prefills the prompt in batches, then samples and decodes token by
/// token. The KV cache persists between calls, so a prompt that extends the previous conversation only computes
/// its new tokens.
/// </summary>
public sealed class TextGenerator : IDisposable
{
    private readonly LanguageModel _model;
    private readonly LlamaState _state;
    private readonly ForwardBatch _batch;
    private readonly int[] _history;
    private readonly WorkerPool _pool;
    private readonly bool _ownsPool;
    private int _cachedTokens;

    public TextGenerator(LanguageModel model, int contextLength = 0, int batchSize = 512, WorkerPool? pool = null)
    {
        _model = model;
        ContextLength = contextLength > 0 ? contextLength : model.Config.ContextLength;
        _ownsPool = pool == null;
        _pool = pool ?? new WorkerPool(Environment.ProcessorCount);
        _batch = new ForwardBatch(Math.Min(batchSize, ContextLength));
        _state = model.Model.CreateState(ContextLength, _batch.Capacity, sequences: 1, maxLogitRows: 1, pool: _pool);
        _history = new int[ContextLength];
    }

    public int ContextLength { get; }
    public GenerationStats LastStats { get; private set; } = new();

    /// <summary>Generates after <paramref name="prompt"/> (token ids, BOS included if the model wants one).</summary>
    public IEnumerable<GeneratedToken> Generate(IReadOnlyList<int> prompt, GenerationOptions options, CancellationToken cancellation = default)
    {
        if (prompt.Count == 0) throw new ArgumentException("the prompt is empty: it needs at least one token (usually BOS)");
        if (prompt.Count >= ContextLength)
            throw new PromptTooLongException(prompt.Count, ContextLength);
        var sampler = new Sampler(options.Sampling, _model.Config.VocabSize);
        return Run(prompt, options, sampler, cancellation);
    }

    private IEnumerable<GeneratedToken> Run(IReadOnlyList<int> prompt, GenerationOptions options, Sampler sampler, CancellationToken cancellation)
    {
        var stats = new GenerationStats { PromptTokens = prompt.Count };
        LastStats = stats;
        var clock = Stopwatch.StartNew();
        Prefill(prompt, cancellation);
        stats.PromptTime = clock.Elapsed;
        clock.Restart();

        var tokenizer = _model.Tokenizer;
        var decoder = new StreamingDecoder(tokenizer, skipSpecial: true);
        var stop = new StopStringMatcher(options.Stop);
        int length = prompt.Count;
        int limit = options.MaxTokens < 0 ? int.MaxValue : options.MaxTokens;
        stats.FinishReason = FinishReason.Length;
        while (stats.GeneratedTokens < limit && !cancellation.IsCancellationRequested)
        {
            int token = sampler.Sample(_state.Logits(0), _history.AsSpan(0, length));
            stats.GeneratedTokens++;
            if (tokenizer.IsEndOfGeneration(token) && !options.IgnoreEos)
            {
                stats.FinishReason = FinishReason.Stop;
                break;
            }
            var (text, stopped) = stop.Push(decoder.Append(token));
            if (text.Length > 0 || !stopped) yield return new GeneratedToken(token, text);
            if (stopped)
            {
                stats.FinishReason = FinishReason.Stop;
                break;
            }
            if (length == ContextLength) break;
            _history[length] = token;
            _batch.Clear();
            _batch.Add(token, length, wantLogits: true);
            _model.Model.Forward(_state, _batch);
            length++;
            _cachedTokens = length;
            stats.GenerationTime = clock.Elapsed;
        }
        string rest = stop.Flush();
        if (rest.Length > 0) yield return new GeneratedToken(-1, rest);
        stats.GenerationTime = clock.Elapsed;
    }

    /// <summary>Runs the prompt through the model, reusing the cached prefix it shares with the previous sequence.</summary>
    private void Prefill(IReadOnlyList<int> prompt, CancellationToken cancellation)
    {
        int reuse = 0;
        while (reuse < _cachedTokens && reuse < prompt.Count - 1 && _history[reuse] == prompt[reuse]) reuse++;
        for (int i = 0; i < prompt.Count; i++) _history[i] = prompt[i];
        for (int start = reuse; start < prompt.Count; start += _batch.Capacity)
        {
            cancellation.ThrowIfCancellationRequested();
            _batch.Clear();
            int end = Math.Min(prompt.Count, start + _batch.Capacity);
            for (int i = start; i < end; i++) _batch.Add(prompt[i], i, wantLogits: i == prompt.Count - 1);
            _model.Model.Forward(_state, _batch);
        }
        _cachedTokens = prompt.Count;
    }

    public void Dispose()
    {
        _state.Dispose();
        if (_ownsPool) _pool.Dispose();
    }
}

/// <summary>A prompt that does not fit in the context window.</summary>
public sealed class PromptTooLongException(int promptTokens, int contextLength)
    : ArgumentException($"the prompt has {promptTokens} tokens but the context holds {contextLength}; shorten the prompt or raise --ctx")
{
    public int PromptTokens { get; } = promptTokens;
    public int ContextLength { get; } = contextLength;
}
