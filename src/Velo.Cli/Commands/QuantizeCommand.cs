using System.CommandLine;
using System.Diagnostics;
using Spectre.Console;
using Velo.Formats;
using Velo.Models;

namespace Velo.Cli.Commands;

/// <summary><c>velo quantize IN.gguf OUT.gguf TYPE</c>: llama-quantize's job, with llama.cpp's per-tensor mixes.</summary>
internal static class QuantizeCommand
{
    public static Command Create()
    {
        var input = new Argument<string>("input") { Description = "GGUF model in F32, F16 or BF16" };
        var output = new Argument<string>("output") { Description = "GGUF file to write" };
        var type = new Argument<string>("type") { Description = $"File type: {string.Join(", ", QuantizationRecipe.TypeNames)}" };
        var threads = CommonOptions.Threads();
        var command = new Command("quantize", "Convert a GGUF model to a quantized type, with llama.cpp's per-tensor mixes for the _M types")
        {
            input, output, type, threads,
        };
        command.SetAction(parse => CommonOptions.Guard(() =>
            Run(parse.GetValue(input)!, parse.GetValue(output)!, QuantizationRecipe.Parse(parse.GetValue(type)!), parse.GetValue(threads))));
        return command;
    }

    private static int Run(string inputPath, string outputPath, ModelFileType fileType, int threads)
    {
        using var input = GgufFile.Open(inputPath);
        var plan = ModelQuantizer.Plan(input, fileType);
        long total = plan.Sum(t => t.OutputBytes);
        var clock = Stopwatch.StartNew();
        ProgressBar.Run($"quantizing to {QuantizationRecipe.NameOf(fileType)}", total, (describe, advance) =>
            ModelQuantizer.Quantize(input, outputPath, fileType, threads,
                t => describe($"{t.Name} {t.From} → {t.To}"), advance));

        long inputBytes = input.Tensors.Sum(t => t.ByteSize);
        Console.Error.WriteLine($"{Path.GetFileName(inputPath)}: {inputBytes / (1024.0 * 1024):F2} MiB of tensors → {total / (1024.0 * 1024):F2} MiB in {clock.Elapsed.TotalSeconds:F1} s");
        foreach (var group in plan.GroupBy(t => t.To).OrderByDescending(g => g.Sum(t => t.OutputBytes)))
            Console.Error.WriteLine($"  {group.Key,-5} {group.Count(),4} tensors {group.Sum(t => t.OutputBytes) / (1024.0 * 1024),10:F2} MiB");
        Console.Error.WriteLine($"written {outputPath}");
        return 0;
    }
}
