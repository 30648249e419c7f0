using System.CommandLine;
using System.Diagnostics;
using Velo.Models;
using Velo.Models.Bert;
using Velo.Models.HuggingFace;
using Velo.Tensors;

namespace Velo.Cli.Commands;

/// <summary>
/// <c>velo convert model.onnx --vocab vocab.txt -o out.gguf</c>: a BERT encoder exported to ONNX, as a llama.cpp
/// <c>bert</c> GGUF file; <c>velo convert DIR -o out.gguf</c>: a Hugging Face model folder, as llama.cpp's converter writes it.
/// </summary>
internal static class ConvertCommand
{
    public static Command Create()
    {
        var input = new Argument<string>("input")
        {
            Description = "A Hugging Face model folder (config.json, *.safetensors, tokenizer.json), or the ONNX model of a BERT encoder (PyTorch export, weights inside the file)",
        };
        var vocab = new Option<string?>("--vocab") { Description = "ONNX: the model's WordPiece vocab.txt (required)" };
        var output = new Option<string>("--output", "-o") { Description = "GGUF file to write", Required = true };
        var type = new Option<string?>("--type")
        {
            Description = $"Folder: auto (each matrix keeps its float type; the default) or {string.Join(", ", QuantizationRecipe.TypeNames.Select(n => n.ToLowerInvariant()))}; ONNX: f32 (default), f16 or q8_0",
        };
        var threads = CommonOptions.Threads();
        var pooling = new Option<string?>("--pooling") { Description = "mean or cls (default: the --config folder's, else mean)" };
        var config = new Option<string?>("--config") { Description = "sentence-transformers folder: heads, epsilon, pooling, max_seq_length, normalization" };
        var command = new Command("convert", "Convert a BERT encoder from ONNX to GGUF (llama.cpp's bert layout)")
        {
            input, vocab, output, type, pooling, config, threads,
        };
        command.SetAction(parse => CommonOptions.Guard(() =>
        {
            string inputPath = parse.GetValue(input)!;
            if (Directory.Exists(inputPath))
            {
                foreach (var onnxOnly in (Option[])[vocab, pooling, config])
                    if (parse.GetResult(onnxOnly) is { Implicit: false })
                        throw new ArgumentException($"{onnxOnly.Name} applies to ONNX models, not to a Hugging Face folder");
                return ConvertFolder(inputPath, parse.GetValue(output)!, parse.GetValue(type), parse.GetValue(threads));
            }
            string vocabPath = parse.GetValue(vocab) ?? throw new ArgumentException("--vocab is required to convert an ONNX model");
            var options = new BertImportOptions
            {
                Type = (parse.GetValue(type) ?? "f32").ToLowerInvariant() switch
                {
                    "f32" => GgmlType.F32,
                    "f16" => GgmlType.F16,
                    "q8_0" => GgmlType.Q8_0,
                    var other => throw new ArgumentException($"--type must be f32, f16 or q8_0, not '{other}'"),
                },
                Pooling = parse.GetValue(pooling)?.ToLowerInvariant() switch
                {
                    null => null,
                    "mean" => EmbeddingPooling.Mean,
                    "cls" => EmbeddingPooling.Cls,
                    var other => throw new ArgumentException($"--pooling must be mean or cls, not '{other}'"),
                },
                ConfigDir = parse.GetValue(config),
            };
            string outputPath = parse.GetValue(output)!;
            BertOnnxImporter.Convert(inputPath, vocabPath, outputPath, options);
            Console.Error.WriteLine($"written {outputPath}");
            return 0;
        }));
        return command;
    }

    private static int ConvertFolder(string folder, string outputPath, string? typeName, int threads)
    {
        ModelFileType? fileType = typeName is null || typeName.Equals("auto", StringComparison.OrdinalIgnoreCase) ? null : QuantizationRecipe.Parse(typeName);
        var clock = Stopwatch.StartNew();
        ProgressBar.Run($"converting {Path.GetFileName(Path.TrimEndingDirectorySeparator(Path.GetFullPath(folder)))}", HuggingFaceConverter.OutputBytes(folder, fileType),
            (describe, advance) => HuggingFaceConverter.Convert(folder, outputPath, fileType, threads, describe, advance));
        Console.Error.WriteLine($"written {outputPath} ({new FileInfo(outputPath).Length / (1024.0 * 1024):F2} MiB) in {clock.Elapsed.TotalSeconds:F1} s");
        return 0;
    }
}
