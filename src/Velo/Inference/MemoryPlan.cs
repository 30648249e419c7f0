using System.Globalization;
using Velo.Models;
using Velo.Runtime;

namespace Velo.Inference;

/// <summary>
/// The memory a model needs to run with a given context, number of sequences and batch: its weights, its KV cache
/// and its activations, worked out before any of it is allocated. A configuration the machine cannot hold is then
/// refused up front, with what would fit, instead of dying of an <see cref="OutOfMemoryException"/> or being killed
/// later as the lazily touched KV cache grows past the machine's memory.
/// </summary>
public sealed class MemoryPlan
{
    /// <summary>A tenth of the available memory stays free for what no plan counts: the runtime, the tokenizer, requests in flight.</summary>
    private const int ReserveDivisor = 10;

    private MemoryPlan(IModel model, int contextLength, int sequences, int maxBatch, int maxLogitRows, KvCacheTypes cacheTypes)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(contextLength, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(sequences, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(maxBatch, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(maxLogitRows, 1);
        ContextLength = contextLength;
        Sequences = sequences;
        CacheTypes = cacheTypes;
        WeightBytes = model.WeightBytes;
        KvCacheBytes = Saturating(() => KvCacheBytesFor(model.Info, sequences, contextLength, cacheTypes));
        ScratchBytes = Saturating(() => model.ScratchBytes(maxBatch, maxLogitRows));
        TotalBytes = Saturating(() => checked(WeightBytes + KvCacheBytes + ScratchBytes));
    }

    /// <summary>The plan for a state as <see cref="IModel.CreateState"/> would allocate it with these arguments.</summary>
    public static MemoryPlan For(IModel model, int contextLength, int sequences, int maxBatch, int maxLogitRows, KvCacheTypes cacheTypes) =>
        new(model, contextLength, sequences, maxBatch, maxLogitRows, cacheTypes);

    /// <summary>Each layer's keys and values, by its own shape: layers need not all cache the same width.</summary>
    private static long KvCacheBytesFor(ModelInfo info, int sequences, int contextLength, KvCacheTypes cacheTypes)
    {
        long total = 0;
        foreach (var layer in info.Layers)
            total = checked(total + KvCache.BytesFor(1, sequences, contextLength, layer.KvDim, cacheTypes));
        return total;
    }

    public int ContextLength { get; }
    public int Sequences { get; }
    public KvCacheTypes CacheTypes { get; }

    /// <summary>The tensor data of the model file, all of which a forward pass reads.</summary>
    public long WeightBytes { get; }

    /// <summary>Keys and values of every layer for every sequence's whole context (<see cref="KvCache.BytesFor"/>);
    /// <see cref="long.MaxValue"/> when the size does not even fit in 63 bits.</summary>
    public long KvCacheBytes { get; }

    /// <summary>Activations and logits (<see cref="IModel.ScratchBytes"/>); <see cref="long.MaxValue"/> when too large to count.</summary>
    public long ScratchBytes { get; }

    /// <summary>Everything the plan counts; <see cref="long.MaxValue"/> when too large to count.</summary>
    public long TotalBytes { get; }

    /// <summary>What of <paramref name="availableBytes"/> a plan may use: all but a reserve for what no plan counts.</summary>
    public static long UsableBytes(long availableBytes) => availableBytes - availableBytes / ReserveDivisor;

    /// <summary>
    /// Returns the plan for <paramref name="contextLength"/> and <paramref name="sequences"/> if it fits in the
    /// available memory (less a reserve); otherwise throws <see cref="NotEnoughMemoryException"/> naming a context
    /// (for these sequences) and a number of sequences (for this context) that would fit.
    /// </summary>
    /// <param name="planFor">The plan for a context length and number of sequences, with the batch the caller would
    /// derive from them, so that what the refusal suggests is what the caller would really allocate.</param>
    /// <param name="availableBytes">Memory this process may still take; null measures it (<see cref="AvailableMemory.Measure"/>).</param>
    /// <param name="contextOption">How the user sets the context, named in the refusal (for example <c>--ctx</c>).</param>
    /// <param name="sequencesOption">How the user sets the number of sequences, or null when they cannot.</param>
    public static MemoryPlan EnsureFits(Func<int, int, MemoryPlan> planFor, int contextLength, int sequences, long? availableBytes,
        string contextOption, string? sequencesOption)
    {
        var plan = planFor(contextLength, sequences);
        long available = availableBytes ?? AvailableMemory.Measure();
        long usable = UsableBytes(available);
        if (plan.TotalBytes <= usable) return plan;

        int fittingContext = LargestFitting(contextLength - 1, n => planFor(n, sequences).TotalBytes <= usable);
        int fittingSequences = sequencesOption == null ? 0 : LargestFitting(sequences - 1, n => planFor(contextLength, n).TotalBytes <= usable);
        var fits = new List<string>();
        if (fittingContext > 0)
            fits.Add(sequencesOption == null ? $"{contextOption} {fittingContext}" : $"{contextOption} {fittingContext} with {sequencesOption} {sequences}");
        if (fittingSequences > 0)
            fits.Add($"{sequencesOption} {fittingSequences} with {contextOption} {contextLength}");
        string advice = fits.Count > 0 ? $"what fits: {string.Join(", or ", fits)}"
            : sequencesOption != null && sequences > 1 && planFor(1, 1).TotalBytes <= usable ? $"lower both {contextOption} and {sequencesOption}"
            : $"not even {contextOption} 1 fits; free some memory or use a smaller model";
        string message = $"this configuration needs {Describe(plan.TotalBytes)} (weights {Describe(plan.WeightBytes)}, KV cache {Describe(plan.KvCacheBytes)} " +
                         $"for {plan.Sequences} × {plan.ContextLength} tokens in {Name(plan.CacheTypes.Keys)}/{Name(plan.CacheTypes.Values)}, " +
                         $"activations {Describe(plan.ScratchBytes)}) but {Describe(available)} of memory is available " +
                         $"(a tenth kept in reserve); {advice}";
        throw new NotEnoughMemoryException(message, plan.TotalBytes, available, fittingContext, fittingSequences);
    }

    /// <summary>The largest n in 1..<paramref name="upper"/> that <paramref name="fits"/>, found by bisection, or 0.
    /// A need that is not monotonic may hide a larger n, but the one returned was always tried and fits.</summary>
    private static int LargestFitting(int upper, Func<int, bool> fits)
    {
        int low = 0, high = upper;
        while (low < high)
        {
            int middle = low + (high - low + 1) / 2;
            if (fits(middle)) low = middle;
            else high = middle - 1;
        }
        return low;
    }

    private static long Saturating(Func<long> bytes)
    {
        try
        {
            return bytes();
        }
        catch (Exception e) when (e is OverflowException or ArgumentOutOfRangeException)
        {
            // SizeMath refuses products past 63 bits with ArgumentOutOfRangeException, checked arithmetic with OverflowException.
            return long.MaxValue;
        }
    }

    private static string Name(Tensors.GgmlType type) => type.ToString().ToLowerInvariant();

    private static string Describe(long bytes) => bytes switch
    {
        long.MaxValue => "more than 8 EiB",
        >= 1L << 40 => string.Create(CultureInfo.InvariantCulture, $"{bytes / (double)(1L << 40):F1} TiB"),
        >= 1L << 30 => string.Create(CultureInfo.InvariantCulture, $"{bytes / (double)(1L << 30):F1} GiB"),
        _ => string.Create(CultureInfo.InvariantCulture, $"{bytes / (double)(1L << 20):F1} MiB"),
    };
}

/// <summary>A configuration that needs more memory than is available; the message says what would fit.</summary>
public sealed class NotEnoughMemoryException(string message, long neededBytes, long availableBytes, int fittingContextLength, int fittingSequences)
    : InvalidOperationException(message)
{
    public long NeededBytes { get; } = neededBytes;
    public long AvailableBytes { get; } = availableBytes;

    /// <summary>A context that fits with the requested sequences, or 0 if none does.</summary>
    public int FittingContextLength { get; } = fittingContextLength;

    /// <summary>A number of sequences that fits with the requested context, or 0 if none does (or the caller cannot choose it).</summary>
    public int FittingSequences { get; } = fittingSequences;
}

/// <summary>How much memory this process can still take without the machine swapping or running out.</summary>
public static class AvailableMemory
{
    private const string MemInfoPath = "/proc/meminfo";

    /// <summary>
    /// Linux's MemAvailable (free memory plus what the kernel can reclaim, the page cache included), lowered to the
    /// room left under the GC's limit when that is smaller (a container's memory limit); elsewhere only the latter.
    /// </summary>
    public static long Measure()
    {
        // The GC's figure is the machine's memory or the container's limit, of which this process already holds some.
        long underLimit = Math.Max(0, GC.GetGCMemoryInfo().TotalAvailableMemoryBytes - Environment.WorkingSet);
        return ReadMemAvailable() is { } free ? Math.Min(free, underLimit) : underLimit;
    }

    private static long? ReadMemAvailable()
    {
        try
        {
            return File.Exists(MemInfoPath) ? ParseMemAvailable(File.ReadAllText(MemInfoPath)) : null;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return null;
        }
    }

    /// <summary>The bytes of the <c>MemAvailable: N kB</c> line of a /proc/meminfo text, or null without one.</summary>
    internal static long? ParseMemAvailable(string memInfo)
    {
        const string key = "MemAvailable:";
        foreach (string line in memInfo.Split('\n'))
        {
            if (!line.StartsWith(key, StringComparison.Ordinal)) continue;
            string[] fields = line[key.Length..].Split(' ', StringSplitOptions.RemoveEmptyEntries);
            if (fields is [var number, "kB"] && long.TryParse(number, NumberStyles.None, CultureInfo.InvariantCulture, out long kib) && kib <= long.MaxValue / 1024)
                return kib * 1024;
        }
        return null;
    }
}
