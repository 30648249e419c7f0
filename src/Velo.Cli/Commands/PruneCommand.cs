using System.CommandLine;
using System.Globalization;
using Velo.Formats;
using Velo.Inference;
using Velo.Threading;
using Velo.Tools;
using Velo.Tools.Pruning;
using Velo.Tools.Training;

namespace Velo.Cli.Commands;

/// <summary><c>velo prune IN.gguf OUT.gguf</c>: structured pruning ranked on calibration text, with an accuracy report.</summary>
internal static class PruneCommand
{
    public static Command Create()
    {
        var input = new Argument<string>("input") { Description = "GGUF Llama model" };
        var output = new Argument<string>("output") { Description = "GGUF file to write" };
        var calibration = new Option<FileInfo?>("--file", "-f") { Description = "Calibration text (default: text the model generates itself)" };
        var dropLayers = new Option<string?>("--drop-layers") { Description = "Remove K layers of least block influence, or the listed layer indices (0,3)" };
        var ffnKeep = new Option<double>("--ffn-keep") { Description = "Fraction of feed-forward channels each layer keeps, in (0, 1]", DefaultValueFactory = _ => 1 };
        var headsKeep = new Option<double>("--heads-keep") { Description = "Fraction of attention heads (whole KV groups) each layer keeps, in (0, 1]", DefaultValueFactory = _ => 1 };
        var context = new Option<int>("--ctx-size", "-c") { Description = "Tokens per calibration sequence, and per perplexity chunk of the report", DefaultValueFactory = _ => 128 }.AtLeast(4);
        var chunks = new Option<int>("--chunks") { Description = "Calibration sequences at most", DefaultValueFactory = _ => 64 }.AtLeast(1);
        var evalFile = new Option<FileInfo?>("--eval-file") { Description = "Held-out text for the report: perplexity and KL divergence against the input" };
        var seed = new Option<ulong>("--seed") { Description = "Seed of the self-generated calibration text", DefaultValueFactory = _ => 42 };
        var threads = CommonOptions.Threads();
        var command = new Command("prune", "Remove the layers, feed-forward channels or attention heads that matter least, writing a smaller GGUF")
        {
            input, output, calibration, dropLayers, ffnKeep, headsKeep, context, chunks, evalFile, seed, threads,
        };
        command.SetAction(parse => CommonOptions.Guard(() =>
        {
            var request = PruningRequest.WithLayers(parse.GetValue(dropLayers),
                new PruningRequest { FfnKeep = parse.GetValue(ffnKeep), HeadsKeep = parse.GetValue(headsKeep) });
            return Run(parse.GetValue(input)!, parse.GetValue(output)!, request, parse.GetValue(calibration), parse.GetValue(context),
                parse.GetValue(chunks), parse.GetValue(evalFile), parse.GetValue(seed), parse.GetValue(threads));
        }));
        return command;
    }

    private static int Run(string inputPath, string outputPath, PruningRequest request, FileInfo? calibrationFile, int context, int chunks,
        FileInfo? evalFile, ulong seed, int threads)
    {
        if (request == new PruningRequest()) throw new ArgumentException("nothing to prune: give --drop-layers, --ffn-keep or --heads-keep");
        PruningPlan plan;
        using (var file = GgufFile.Open(inputPath))
        {
            var shape = DecoderGguf.ReadShape(file);
            request.Validate(shape);
            ImportanceScores? scores = null;
            float[]? parameters = null;
            var layout = new ParameterLayout(shape);
            if (request.NeedsScores)
            {
                using var model = LanguageModel.Load(inputPath);
                using var pool = new WorkerPool(threads);
                int bos = model.Tokenizer.AddBos ? model.Tokenizer.BosId : -1;
                List<int[]> sequences;
                if (calibrationFile != null)
                {
                    sequences = TrainingText.Chunks(model.Tokenizer.Encode(File.ReadAllText(calibrationFile.FullName), addSpecial: true), context, bos, chunks);
                    if (sequences.Count == 0) throw new ArgumentException($"{calibrationFile.Name} holds fewer than {context} tokens, one calibration sequence");
                }
                else
                {
                    int count = Math.Min(chunks, 16);
                    Console.Error.WriteLine($"prune: generating {count} calibration sequences of {context} tokens ..");
                    sequences = TrainingText.Generate(model, count, context, new SamplerOptions(), seed, pool);
                }
                parameters = DecoderGguf.ReadParameters(file, layout);
                scores = ImportanceScores.Measure(layout, parameters, sequences);
                Console.Error.WriteLine($"prune: scored on {scores.Tokens} calibration tokens");
            }
            plan = Pruner.Plan(shape, request, scores, parameters, layout);
            if (plan.LayerInfluence is { } influence)
                Console.Out.WriteLine("block influence (1 - cos): " + string.Join(" ", influence.Select((v, i) => Invariant($"{i}:{v:F4}"))));
            foreach (string note in Pruner.Write(file, plan, outputPath)) Console.Error.WriteLine($"prune: {note}");
        }
        var (o, p) = (plan.Original, plan.Pruned);
        Console.Out.WriteLine(Invariant($"layers {o.Layers} → {p.Layers} (kept {string.Join(",", plan.KeptLayers)}), feed_forward_length {o.FfnDim} → {p.FfnDim}, heads {o.Heads}/{o.KvHeads} → {p.Heads}/{p.KvHeads}"));
        Console.Out.WriteLine($"written {outputPath}");

        if (evalFile != null)
        {
            var reports = ModelComparison.Compare([inputPath, outputPath], File.ReadAllText(evalFile.FullName),
                new PerplexitySettings { ContextLength = context, BatchSize = context }, threads, decodeTokens: 0);
            EvalCommand.PrintTable(reports, speed: false);
        }
        return 0;
    }

    private static string Invariant(FormattableString s) => s.ToString(CultureInfo.InvariantCulture);
}
