using System.CommandLine;
using System.Diagnostics;
using Velo.Formats;
using Velo.Models;
using Velo.Text;

namespace Velo.Cli.Commands;

/// <summary><c>velo synth</c>: a random-weight model of a real shape, for measuring speed without downloading one.</summary>
internal static class SynthCommand
{
    public static Command Create()
    {
        var shape = new Option<string>("--shape") { Description = $"Model shape: {string.Join(", ", SynthSpec.ShapeNames)}", Required = true };
        var type = new Option<string>("--type", "-t") { Description = $"File type: {string.Join(", ", QuantizationRecipe.TypeNames)}", Required = true };
        var output = new Option<string>("--output", "-o") { Description = "GGUF file to write", Required = true };
        var vocab = new Option<string?>("--vocab") { Description = "Take the tokenizer from this GGUF file (default: a synthetic SentencePiece vocabulary)" };
        var tokenizer = new Option<string?>("--tokenizer") { Description = "Take the tokenizer from this Hugging Face tokenizer.json (or the folder holding it)" };
        var seed = new Option<ulong>("--seed") { Description = "Random seed: the same seed gives the same weights", DefaultValueFactory = _ => 1 };
        var threads = new Option<int>("--threads") { Description = "Threads generating and quantizing (default: all cores)", DefaultValueFactory = _ => Environment.ProcessorCount }
            .WithinProcessorCount();
        var command = new Command("synth", "Write a random-weight model of a real shape (weights N(0, 0.02²), norms 1, tied embeddings)")
        {
            shape, type, output, vocab, tokenizer, seed, threads,
        };
        command.Validators.Add(result =>
        {
            if (result.GetValue(vocab) != null && result.GetValue(tokenizer) != null)
                result.AddError("give either --vocab or --tokenizer, not both");
        });
        command.SetAction(parse => CommonOptions.Guard(() => Run(
            SynthSpec.ForShape(parse.GetValue(shape)!, QuantizationRecipe.Parse(parse.GetValue(type)!)) with { Seed = parse.GetValue(seed) },
            parse.GetValue(output)!, parse.GetValue(vocab), parse.GetValue(tokenizer), parse.GetValue(threads))));
        return command;
    }

    private static int Run(SynthSpec spec, string outputPath, string? vocabPath, string? tokenizerPath, int threads)
    {
        using var vocab = vocabPath != null ? GgufFile.Open(vocabPath) : null;
        var tokenizer = vocab != null ? SynthTokenizer.FromGguf(vocab.Metadata)
            : tokenizerPath != null ? SynthTokenizer.FromData(HuggingFaceTokenizerReader.Read(tokenizerPath))
            : null;
        long total = ModelSynthesizer.TensorBytes(spec);
        string title = $"{spec.Name} {QuantizationRecipe.NameOf(spec.FileType!.Value)}";
        var clock = Stopwatch.StartNew();
        ProgressBar.Run($"writing {title}", total, (describe, advance) =>
            ModelSynthesizer.Write(outputPath, spec, tokenizer, threads, describe, advance));
        Console.Error.WriteLine($"{title}: {total / (1024.0 * 1024):F1} MiB of tensors written to {outputPath} in {clock.Elapsed.TotalSeconds:F1} s");
        return 0;
    }
}
