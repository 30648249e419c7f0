using System.CommandLine;
using Velo.Diagnostics;
using Velo.Generation;
using Velo.Inference;
using Velo.Threading;

namespace Velo.Cli.Commands;

/// <summary><c>velo bench-grammar</c>: what grammar-constrained decoding costs per token, against the decode step.</summary>
internal static class BenchGrammarCommand
{
    public static Command Create()
    {
        var model = CommonOptions.Model();
        var generate = new Option<int>("--n-gen", "-n") { Description = "Tokens to generate per run", DefaultValueFactory = _ => 128 }.AtLeast(1);
        var threads = CommonOptions.Threads();
        var repetitions = new Option<int>("--repetitions", "-r") { Description = "Rounds (each: plain, then every schema)", DefaultValueFactory = _ => 3 }.AtLeast(1);
        var schemaFiles = new Option<FileInfo[]>("--json-schema-file", "-jf") { Description = "Schemas to measure (default: three typical ones)", AllowMultipleArgumentsPerToken = true };
        var command = new Command("bench-grammar", "Measure the per-token cost of JSON-Schema-constrained decoding") { model, generate, threads, repetitions, schemaFiles };
        command.SetAction(parse => CommonOptions.Guard(() =>
        {
            var schemas = parse.GetValue(schemaFiles) is { Length: > 0 } files
                ? files.Select(f => (Path.GetFileNameWithoutExtension(f.Name), File.ReadAllText(f.FullName))).ToList()
                : GrammarBenchmark.TypicalSchemas;
            using var loaded = LanguageModel.Load(parse.GetValue(model)!);
            using var pool = new WorkerPool(parse.GetValue(threads));
            int tokens = parse.GetValue(generate);
            using var generator = new TextGenerator(loaded, CommonOptions.ContextFor(loaded, Math.Min(tokens + 64, 4096)), pool: pool);
            var (plain, results) = GrammarBenchmark.Run(loaded, generator, tokens, parse.GetValue(repetitions), schemas, Console.Error.WriteLine);
            double stepMicroseconds = 1e6 / plain;
            Console.WriteLine($"model: {loaded.Path}, vocabulary {loaded.Info.VocabSize}, {pool.ThreadCount} threads");
            Console.WriteLine($"plain decode: {plain:F2} tokens/s ({stepMicroseconds / 1000:F2} ms per step)");
            Console.WriteLine("| schema | tokens | mask µs/token (share of a step) | first-visit states: count, µs each | tokens/s with schema (vs plain) |");
            Console.WriteLine("|---|---|---|---|---|");
            foreach (var r in results)
                Console.WriteLine($"| {r.Schema} | {r.Tokens} | {r.MaskMicroseconds:F0} ({100 * r.MaskMicroseconds / stepMicroseconds:F2} %) | " +
                    $"{r.ColdSteps}, {r.ColdMaskMicroseconds:F0} | {r.ConstrainedTokensPerSecond:F2} ({r.ConstrainedTokensPerSecond / plain:P1}) |");
            foreach (var r in results) Console.Error.WriteLine($"{r.Schema} output: {r.Output}");
            return 0;
        }));
        return command;
    }
}
