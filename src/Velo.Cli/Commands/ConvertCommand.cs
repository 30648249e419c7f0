using System.CommandLine;
using Velo.Models;
using Velo.Models.Bert;
using Velo.Tensors;

namespace Velo.Cli.Commands;

/// <summary><c>velo convert model.onnx --vocab vocab.txt -o out.gguf</c>: a BERT encoder exported to ONNX, as a llama.cpp <c>bert</c> GGUF file.</summary>
internal static class ConvertCommand
{
    public static Command Create()
    {
        var input = new Argument<string>("input") { Description = "ONNX model of a BERT encoder (PyTorch export, weights inside the file)" };
        var vocab = new Option<string>("--vocab") { Description = "The model's WordPiece vocab.txt", Required = true };
        var output = new Option<string>("--output", "-o") { Description = "GGUF file to write", Required = true };
        var type = new Option<string>("--type") { Description = "Type of the weight matrices: f32, f16 or q8_0", DefaultValueFactory = _ => "f32" };
        var pooling = new Option<string?>("--pooling") { Description = "mean or cls (default: the --config folder's, else mean)" };
        var config = new Option<string?>("--config") { Description = "sentence-transformers folder: heads, epsilon, pooling, max_seq_length, normalization" };
        var command = new Command("convert", "Convert a BERT encoder from ONNX to GGUF (llama.cpp's bert layout)")
        {
            input, vocab, output, type, pooling, config,
        };
        command.SetAction(parse => CommonOptions.Guard(() =>
        {
            var options = new BertImportOptions
            {
                Type = parse.GetValue(type)!.ToLowerInvariant() switch
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
            BertOnnxImporter.Convert(parse.GetValue(input)!, parse.GetValue(vocab)!, outputPath, options);
            Console.Error.WriteLine($"written {outputPath}");
            return 0;
        }));
        return command;
    }
}
