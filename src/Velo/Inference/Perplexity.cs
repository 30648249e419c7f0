using Velo.Models;
using Velo.Runtime;
using Velo.Threading;

namespace Velo.Inference;

/// <summary>Settings of a perplexity run, named as llama.cpp's <c>llama-perplexity</c> names them.</summary>
public sealed record PerplexitySettings
{
    /// <summary>Tokens per chunk (<c>-c</c>); the second half of each chunk is scored.</summary>
    public required int ContextLength { get; init; }

    /// <summary>
    /// Tokens per forward pass (<c>-b</c>). Below the context length a chunk takes several passes; at two or more
    /// context lengths, whole chunks share a pass as separate sequences, as llama.cpp does.
    /// </summary>
    public int BatchSize { get; init; } = 512;

    /// <summary>Stop after this many chunks (0: all the text holds).</summary>
    public int MaxChunks { get; init; }

    /// <summary>How cached keys and values are stored, to measure what an F16 cache costs in accuracy.</summary>
    public KvCacheTypes CacheTypes { get; init; }

    /// <summary>Memory the run may take; null measures what the machine has free (<see cref="AvailableMemory.Measure"/>).
    /// A context that needs more is refused with <see cref="NotEnoughMemoryException"/>.</summary>
    public long? AvailableMemoryBytes { get; init; }
}

/// <summary>What a whole run measured.</summary>
public sealed record PerplexityResult(
    double Perplexity,
    double PerplexityError,
    int ScoredTokens,
    IReadOnlyList<double> RunningPerplexity,
    KlDivergenceSummary? KlDivergence);

/// <summary>How far a model's next-token distributions are from a base model's over the same scored positions.</summary>
/// <param name="Mean">Mean KL divergence D(base ‖ model) in nats.</param>
/// <param name="MeanError">Standard error of the mean.</param>
/// <param name="Percentile99">99th percentile of the per-token divergences.</param>
/// <param name="Maximum">Largest per-token divergence.</param>
/// <param name="TopTokenAgreement">Fraction of positions where both models' most likely token is the same.</param>
public sealed record KlDivergenceSummary(double Mean, double MeanError, double Median, double Percentile99, double Maximum, double TopTokenAgreement, int Positions);

/// <summary>
/// Perplexity over a text, by llama.cpp's convention so the figures compare with its <c>llama-perplexity</c>: the
/// whole text is tokenized once (with BOS if the vocabulary adds one), cut into chunks of <c>n_ctx</c> tokens, each
/// chunk evaluated from an empty cache with its first token replaced by BOS, and only the second half of each
/// chunk scored, so every scored token has at least n_ctx/2 tokens of context.
/// </summary>
public sealed class Perplexity : IDisposable
{
    private readonly IModel _model;
    private readonly PerplexitySettings _settings;
    private readonly IModelState _state;
    private readonly ForwardBatch _batch;
    private readonly float[] _logProbs;
    private readonly float[] _baseLogProbs;

    public Perplexity(IModel model, PerplexitySettings settings, WorkerPool? pool = null)
    {
        if (settings.ContextLength < 4)
            throw new ArgumentException($"the context length must be at least 4 tokens, got {settings.ContextLength}");
        ArgumentOutOfRangeException.ThrowIfLessThan(settings.BatchSize, 1, "batch size");
        _model = model;
        _settings = settings;
        int n = settings.ContextLength;
        MemoryPlan.EnsureFits((context, _) => PlanFor(model, settings, context), n, ChunksFor(settings, n), settings.AvailableMemoryBytes, "--ctx-size", null);
        ChunksPerPass = ChunksFor(settings, n);
        int batch = BatchFor(settings, n);
        _batch = new ForwardBatch(batch);
        _state = model.CreateState(n, batch, sequences: ChunksPerPass, maxLogitRows: batch, pool: pool, cacheTypes: settings.CacheTypes);
        _logProbs = new float[model.Info.VocabSize];
        _baseLogProbs = new float[model.Info.VocabSize];
    }

    private static int ChunksFor(PerplexitySettings settings, int contextLength) => Math.Max(1, settings.BatchSize / contextLength);

    private static int BatchFor(PerplexitySettings settings, int contextLength) =>
        ChunksFor(settings, contextLength) is > 1 and var chunks ? chunks * contextLength : Math.Min(settings.BatchSize, contextLength);

    /// <summary>Every logit row of a pass is kept, so the batch is also the logit rows.</summary>
    private static MemoryPlan PlanFor(IModel model, PerplexitySettings settings, int contextLength) =>
        MemoryPlan.For(model, contextLength, ChunksFor(settings, contextLength), BatchFor(settings, contextLength), BatchFor(settings, contextLength), settings.CacheTypes);

    public int FirstScored => _settings.ContextLength / 2;

    /// <summary>Chunks evaluated together in one forward pass, each as its own sequence.</summary>
    public int ChunksPerPass { get; }

    /// <summary>Tokens scored per chunk: positions n_ctx/2 … n_ctx-2 each predict the token after them.</summary>
    public int ScoredPerChunk => _settings.ContextLength - 1 - FirstScored;

    /// <summary>How many chunks a text of <paramref name="tokenCount"/> tokens gives.</summary>
    public int ChunkCount(int tokenCount)
    {
        int chunks = tokenCount / _settings.ContextLength;
        return _settings.MaxChunks > 0 ? Math.Min(chunks, _settings.MaxChunks) : chunks;
    }

    /// <summary>
    /// Scores <paramref name="tokens"/>. <paramref name="bos"/> (or -1 for none) replaces each chunk's first token.
    /// <paramref name="saveBase"/> records this model's log-probabilities for a later comparison;
    /// <paramref name="compareBase"/> compares against a recorded base instead. <paramref name="chunkDone"/> hears
    /// each chunk's index and the running perplexity after it.
    /// </summary>
    public PerplexityResult Run(
        ReadOnlySpan<int> tokens, int bos, LogProbWriter? saveBase = null, LogProbReader? compareBase = null,
        Action<int, double>? chunkDone = null, CancellationToken cancellation = default)
    {
        int n = _settings.ContextLength;
        if (tokens.Length < 2 * n)
            throw new ArgumentException($"the text has {tokens.Length} tokens; a context of {n} needs at least {2 * n} (two chunks)");
        if (saveBase != null && compareBase != null) throw new ArgumentException("a run either records a base or compares against one, not both");
        int chunks = ChunkCount(tokens.Length);
        var evaluated = tokens[..(chunks * n)];
        saveBase?.WriteHeader(evaluated, n, _model.Info.VocabSize);
        compareBase?.CheckMatches(evaluated, n, _model.Info.VocabSize);

        var running = new List<double>(chunks);
        var divergences = compareBase != null ? new List<double>(chunks * ScoredPerChunk) : null;
        int sameTop = 0;
        double nll = 0, nll2 = 0;
        int count = 0;

        for (int firstChunk = 0; firstChunk < chunks; firstChunk += ChunksPerPass)
        {
            int passChunks = Math.Min(ChunksPerPass, chunks - firstChunk);
            int passTokens = passChunks * n;
            for (int passStart = 0; passStart < passTokens; passStart += _batch.Capacity)
            {
                cancellation.ThrowIfCancellationRequested();
                int passEnd = Math.Min(passTokens, passStart + _batch.Capacity);
                _batch.Clear();
                for (int i = passStart; i < passEnd; i++)
                {
                    int sequence = i / n, j = i % n;
                    int token = j == 0 && bos >= 0 ? bos : tokens[(firstChunk + sequence) * n + j];
                    _batch.Add(token, j, sequence, wantLogits: j >= FirstScored && j < n - 1);
                }
                _model.Forward(_state, _batch);

                int row = 0;
                for (int i = passStart; i < passEnd; i++)
                {
                    int sequence = i / n, j = i % n;
                    if (_batch.WantLogits[i - passStart])
                    {
                        var logits = _state.Output(row++);
                        int next = tokens[(firstChunk + sequence) * n + j + 1];
                        int top = LogSoftmax(logits, _logProbs);
                        double loss = -_logProbs[next];
                        nll += loss;
                        nll2 += loss * loss;
                        count++;
                        saveBase?.Append(_logProbs, top);
                        if (compareBase != null)
                        {
                            int baseTop = compareBase.Next(_baseLogProbs);
                            divergences!.Add(KlDivergence(_baseLogProbs, _logProbs));
                            if (baseTop == top) sameTop++;
                        }
                    }
                    if (j == n - 1)
                    {
                        double ppl = Math.Exp(nll / count);
                        running.Add(ppl);
                        chunkDone?.Invoke(firstChunk + sequence, ppl);
                    }
                }
            }
        }

        double mean = nll / count;
        double variance = nll2 / count - mean * mean;
        double error = variance > 0 ? Math.Sqrt(variance / (count - 1)) : 0;
        double perplexity = Math.Exp(mean);
        return new PerplexityResult(perplexity, error * perplexity, count, running,
            divergences != null ? Summarize(divergences, sameTop) : null);
    }

    /// <summary>Writes log-softmax(<paramref name="logits"/>) to <paramref name="logProbs"/>; returns the most likely token.</summary>
    public static int LogSoftmax(ReadOnlySpan<float> logits, Span<float> logProbs)
    {
        int top = 0;
        float max = logits[0];
        for (int i = 1; i < logits.Length; i++)
            if (logits[i] > max) (max, top) = (logits[i], i);
        // The sum in double, as llama.cpp does, so long vocabularies lose nothing to rounding.
        double sum = 0;
        for (int i = 0; i < logits.Length; i++) sum += MathF.Exp(logits[i] - max);
        float logSum = (float)Math.Log(sum);
        for (int i = 0; i < logits.Length; i++) logProbs[i] = logits[i] - max - logSum;
        return top;
    }

    /// <summary>D(p ‖ q) = Σ p (log p − log q) from log-probabilities.</summary>
    public static double KlDivergence(ReadOnlySpan<float> baseLogProbs, ReadOnlySpan<float> logProbs)
    {
        double sum = 0;
        for (int i = 0; i < baseLogProbs.Length; i++)
            sum += Math.Exp(baseLogProbs[i]) * (baseLogProbs[i] - logProbs[i]);
        return sum;
    }

    private static KlDivergenceSummary Summarize(List<double> divergences, int sameTop)
    {
        int n = divergences.Count;
        double mean = divergences.Average();
        double variance = divergences.Sum(d => (d - mean) * (d - mean)) / Math.Max(1, n - 1);
        divergences.Sort();
        return new KlDivergenceSummary(
            mean, Math.Sqrt(variance / n), Quantile(divergences, 0.5), Quantile(divergences, 0.99), divergences[^1],
            (double)sameTop / n, n);
    }

    /// <summary>Linear interpolation between the closest ranks of a sorted list.</summary>
    private static double Quantile(List<double> sorted, double q)
    {
        double at = q * (sorted.Count - 1);
        int below = (int)at;
        if (below + 1 >= sorted.Count) return sorted[^1];
        return sorted[below] + (at - below) * (sorted[below + 1] - sorted[below]);
    }

    public void Dispose() => _state.Dispose();
}
