using System.Collections.Concurrent;
using System.Globalization;
using System.Text;

namespace Velo.Server;

/// <summary>Counters and histograms for <c>GET /metrics</c>, in the Prometheus text exposition format.</summary>
public sealed class ServerMetrics
{
    private static readonly double[] TimeToFirstTokenBuckets = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];
    private static readonly double[] InterTokenBuckets = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5];

    private readonly ConcurrentDictionary<(string Endpoint, int Status), long> _requests = new();
    private long _promptTokens;
    private long _generatedTokens;

    public Histogram TimeToFirstToken { get; } = new(TimeToFirstTokenBuckets);
    public Histogram TimePerOutputToken { get; } = new(InterTokenBuckets);

    public void CountRequest(string endpoint, int status) => _requests.AddOrUpdate((endpoint, status), 1, (_, n) => n + 1);

    public long Requests(string endpoint, int status) => _requests.TryGetValue((endpoint, status), out long n) ? n : 0;

    public void CountTokens(int prompt, int generated)
    {
        Interlocked.Add(ref _promptTokens, prompt);
        Interlocked.Add(ref _generatedTokens, generated);
    }

    public string Render(int queueLength, int activeSequences, int slots, long cancelledRequests, int loadedModels, long modelBytes,
        Velo.Generation.SpeculationCounters decoding = default)
    {
        var text = new StringBuilder();
        text.Append("# HELP velo_requests_total HTTP requests by endpoint and status code.\n# TYPE velo_requests_total counter\n");
        foreach (var ((endpoint, status), count) in _requests.OrderBy(e => e.Key.Endpoint, StringComparer.Ordinal).ThenBy(e => e.Key.Status))
            text.Append(CultureInfo.InvariantCulture, $"velo_requests_total{{endpoint=\"{endpoint}\",status=\"{status}\"}} {count}\n");
        Counter(text, "velo_prompt_tokens_total", "Prompt tokens received.", Interlocked.Read(ref _promptTokens));
        Counter(text, "velo_generated_tokens_total", "Tokens generated.", Interlocked.Read(ref _generatedTokens));
        Counter(text, "velo_requests_cancelled_total", "Generations ended early because the client cancelled or disconnected.", cancelledRequests);
        TimeToFirstToken.Render(text, "velo_time_to_first_token_seconds", "Time from request to its first generated token, queueing included.");
        TimePerOutputToken.Render(text, "velo_time_per_output_token_seconds", "Time between consecutive generated tokens of one request.");
        Gauge(text, "velo_queue_length", "Requests waiting for a sequence slot.", queueLength);
        Gauge(text, "velo_active_sequences", "Sequences being prefilled or generated.", activeSequences);
        Gauge(text, "velo_sequence_slots", "Sequence slots (--parallel, for each loaded decoder).", slots);
        Gauge(text, "velo_models_loaded", "Models loaded now.", loadedModels);
        Gauge(text, "velo_model_memory_bytes", "Memory the loaded models plan to use, counted against --memory-cap.", modelBytes);
        Counter(text, "velo_decode_steps_total", "Target passes of decoding sequences, counted once per sequence in a pass.", decoding.DecodeSteps);
        Counter(text, "velo_decode_tokens_total", "Tokens those steps generated: one each, and one more per accepted draft.", decoding.DecodedTokens);
        Counter(text, "velo_draft_tokens_total", "Speculated tokens the target verified.", decoding.DraftedTokens);
        Counter(text, "velo_draft_tokens_accepted_total", "Speculated tokens the target accepted.", decoding.AcceptedDrafts);
        Ratio(text, "velo_draft_acceptance_ratio", "Accepted over verified speculated tokens since the start.", decoding.AcceptanceRate);
        Ratio(text, "velo_decode_tokens_per_step", "Tokens per decoding sequence per target pass since the start (1 without speculation).", decoding.TokensPerStep);
        // Prometheus' standard process metrics, so an operator (and velo bench-serve --duration) can watch memory.
        using var process = System.Diagnostics.Process.GetCurrentProcess();
        Gauge(text, "process_resident_memory_bytes", "Resident memory size in bytes.", process.WorkingSet64);
        Gauge(text, "process_virtual_memory_bytes", "Virtual memory size in bytes.", process.VirtualMemorySize64);
        Gauge(text, "dotnet_gc_heap_bytes", "Bytes in the managed heap after the last collection.", GC.GetGCMemoryInfo().HeapSizeBytes);
        return text.ToString();
    }

    /// <summary>
    /// Per route between sizes (<c>--route</c>) and per path (<c>small</c>: the small model's answer kept,
    /// <c>escalated</c>, <c>large</c>: sent there by its latency budget): requests answered and their latency added up,
    /// since the route loaded; and the escalations a full large model refused.
    /// </summary>
    public static string RenderRoutes(IEnumerable<Velo.Generation.CascadeGenerationService> routes)
    {
        var text = new StringBuilder();
        var list = routes.ToList();
        if (list.Count == 0) return "";
        string[] names = ["small", "escalated", "large"];
        text.Append("# HELP velo_route_requests_total Requests a route between sizes answered, by path.\n# TYPE velo_route_requests_total counter\n");
        foreach (var route in list)
            for (int path = 0; path < names.Length; path++)
                text.Append(CultureInfo.InvariantCulture,
                    $"velo_route_requests_total{{route=\"{route.Options.Name}\",path=\"{names[path]}\"}} {route.Statistics[(Velo.Generation.CascadePath)path].Requests}\n");
        text.Append("# HELP velo_route_latency_seconds_sum Those requests' latencies added up, from submission to the end of the answer.\n# TYPE velo_route_latency_seconds_sum counter\n");
        foreach (var route in list)
            for (int path = 0; path < names.Length; path++)
                text.Append(CultureInfo.InvariantCulture,
                    $"velo_route_latency_seconds_sum{{route=\"{route.Options.Name}\",path=\"{names[path]}\"}} {route.Statistics[(Velo.Generation.CascadePath)path].TotalLatency.TotalSeconds:0.######}\n");
        text.Append("# HELP velo_route_escalations_refused_total Escalations the large model's full queue refused (the small model's answer was kept).\n# TYPE velo_route_escalations_refused_total counter\n");
        foreach (var route in list)
            text.Append(CultureInfo.InvariantCulture, $"velo_route_escalations_refused_total{{route=\"{route.Options.Name}\"}} {route.Statistics.BusyLarge}\n");
        return text.ToString();
    }

    private static void Counter(StringBuilder text, string name, string help, long value) =>
        text.Append(CultureInfo.InvariantCulture, $"# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}\n");

    private static void Ratio(StringBuilder text, string name, string help, double value) =>
        text.Append(CultureInfo.InvariantCulture, $"# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value:0.####}\n");

    private static void Gauge(StringBuilder text, string name, string help, long value) =>
        text.Append(CultureInfo.InvariantCulture, $"# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}\n");

    /// <summary>A Prometheus histogram: cumulative counts per upper bound, plus sum and count.</summary>
    public sealed class Histogram(double[] bounds)
    {
        private readonly long[] _counts = new long[bounds.Length + 1];
        private readonly object _gate = new();
        private double _sum;

        public void Observe(double seconds)
        {
            int bucket = 0;
            while (bucket < bounds.Length && seconds > bounds[bucket]) bucket++;
            lock (_gate)
            {
                _counts[bucket]++;
                _sum += seconds;
            }
        }

        internal void Render(StringBuilder text, string name, string help)
        {
            lock (_gate)
            {
                text.Append(CultureInfo.InvariantCulture, $"# HELP {name} {help}\n# TYPE {name} histogram\n");
                long cumulative = 0;
                for (int i = 0; i < bounds.Length; i++)
                {
                    cumulative += _counts[i];
                    text.Append(CultureInfo.InvariantCulture, $"{name}_bucket{{le=\"{bounds[i]}\"}} {cumulative}\n");
                }
                cumulative += _counts[^1];
                text.Append(CultureInfo.InvariantCulture, $"{name}_bucket{{le=\"+Inf\"}} {cumulative}\n{name}_sum {_sum}\n{name}_count {cumulative}\n");
            }
        }
    }
}
