using System.CommandLine;
using System.Globalization;
using System.Text.Json;
using Spectre.Console;
using Velo.Inference;
using Velo.Tools;

namespace Velo.Cli.Commands;

/// <summary>
/// <c>velo eval -m ORIGINAL -m2 OTHER -f TEXT</c>: a compressed model's accuracy report beside its original's —
/// size, perplexity, mean KL divergence, top-token agreement and decode speed — as a table or JSON.
/// </summary>
internal static class EvalCommand
{
    public static Command Create()
    {
        var model = CommonOptions.Model();
        var others = new Option<string[]>("--model2", "-m2") { Description = "Model to compare with the first (repeat for several)", Arity = ArgumentArity.OneOrMore, Required = true };
        var textFile = new Option<FileInfo>("--file", "-f") { Description = "Held-out text to score", Required = true };
        var context = new Option<int>("--ctx-size", "-c") { Description = "Tokens per perplexity chunk; the second half of each is scored", DefaultValueFactory = _ => 512 }.AtLeast(4);
        var batch = new Option<int>("--batch-size", "-b") { Description = "Tokens per forward pass", DefaultValueFactory = _ => 512 }.AtLeast(1);
        var chunks = new Option<int>("--chunks") { Description = "Score at most this many chunks (0: all)" }.AtLeast(0, "0 means all");
        var decode = new Option<int>("--n-gen", "-n") { Description = "Tokens decoded greedily for the speed column (0: skip)", DefaultValueFactory = _ => 128 }.AtLeast(0);
        var json = new Option<bool>("--json") { Description = "Print JSON instead of a table" };
        var threads = CommonOptions.Threads();
        var command = new Command("eval", "Compare models side by side: size, perplexity, KL divergence and top-token agreement against the first, decode tokens/s")
        {
            model, others, textFile, context, batch, chunks, decode, json, threads,
        };
        command.SetAction(parse => CommonOptions.Guard(() =>
        {
            var settings = new PerplexitySettings { ContextLength = parse.GetValue(context), BatchSize = parse.GetValue(batch), MaxChunks = parse.GetValue(chunks) };
            var reports = ModelComparison.Compare([parse.GetValue(model)!, .. parse.GetValue(others)!], File.ReadAllText(parse.GetValue(textFile)!.FullName),
                settings, parse.GetValue(threads), parse.GetValue(decode), path => Console.Error.WriteLine($"eval: {path} .."));
            if (parse.GetValue(json)) PrintJson(reports);
            else PrintTable(reports, speed: parse.GetValue(decode) > 0);
            return 0;
        }));
        return command;
    }

    public static void PrintTable(IReadOnlyList<ModelReport> reports, bool speed)
    {
        var table = new Table().AddColumns("model", "size", "params", "PPL", "Δ PPL", "mean KLD", "same top");
        if (speed) table.AddColumn("decode t/s");
        double basePerplexity = reports[0].Perplexity;
        foreach (var r in reports)
        {
            var d = r.Divergence;
            var row = new List<string>
            {
                Markup.Escape(Path.GetFileName(r.Path)),
                Invariant($"{r.FileBytes / (1024.0 * 1024):F2} MiB"),
                Invariant($"{r.Parameters / 1e6:F3} M"),
                Invariant($"{r.Perplexity:F4} ± {r.PerplexityError:F4}"),
                d == null ? "" : Invariant($"{r.Perplexity - basePerplexity:+0.0000;-0.0000}"),
                d == null ? "" : Invariant($"{d.Mean:F6} ± {d.MeanError:F6}"),
                d == null ? "" : Invariant($"{100 * d.TopTokenAgreement:F2} %"),
            };
            if (speed) row.Add(Invariant($"{r.DecodeTokensPerSecond:F1}"));
            table.AddRow(row.ToArray());
        }
        AnsiConsole.Write(table);
    }

    private static void PrintJson(IReadOnlyList<ModelReport> reports) =>
        Console.WriteLine(JsonSerializer.Serialize(reports.Select(r => new
        {
            model = r.Path,
            file_bytes = r.FileBytes,
            weight_bytes = r.WeightBytes,
            parameters = r.Parameters,
            perplexity = r.Perplexity,
            perplexity_error = r.PerplexityError,
            mean_kld = r.Divergence?.Mean,
            mean_kld_error = r.Divergence?.MeanError,
            max_kld = r.Divergence?.Maximum,
            same_top_token = r.Divergence?.TopTokenAgreement,
            decode_tokens_per_second = double.IsNaN(r.DecodeTokensPerSecond) ? (double?)null : r.DecodeTokensPerSecond,
        }), new JsonSerializerOptions { WriteIndented = true }));

    private static string Invariant(FormattableString s) => s.ToString(CultureInfo.InvariantCulture);
}
