using System.CommandLine;
using System.Globalization;
using System.Text.Json;
using Velo.Inference;
using Velo.Models;
using Velo.Text;
using Velo.Threading;

namespace Velo.Cli.Commands;

/// <summary><c>velo embed -m encoder.gguf (--text T | --file F) [--pooling P] [--normalize | --no-normalize] [--json]</c>:
/// one embedding (or, with rank pooling, one row of label scores) per input.</summary>
internal static class EmbedCommand
{
    public static Command Create()
    {
        var model = CommonOptions.Model();
        var text = new Option<string?>("--text") { Description = "The text to embed" };
        var file = new Option<string?>("--file", "-f") { Description = "A file of texts to embed, one input a line" };
        var json = new Option<bool>("--json") { Description = "Print a JSON array of {index, tokens, embedding}" };
        var pooling = PoolingOption();
        var normalize = new Option<bool>("--normalize") { Description = "Scale pooled vectors to unit length, whatever the file says" };
        var noNormalize = new Option<bool>("--no-normalize") { Description = "Leave pooled vectors unscaled, whatever the file says" };
        var threads = CommonOptions.Threads();
        var command = new Command("embed", "Embed texts with an encoder model (bert), printing one vector per input")
        {
            model, text, file, pooling, normalize, noNormalize, json, threads,
        };
        command.SetAction(parse => CommonOptions.Guard(() =>
        {
            string? t = parse.GetValue(text), f = parse.GetValue(file);
            if ((t == null) == (f == null)) throw new ArgumentException("give exactly one of --text and --file");
            string[] inputs = t != null ? [t] : File.ReadAllLines(f!);
            if (parse.GetValue(normalize) && parse.GetValue(noNormalize)) throw new ArgumentException("give at most one of --normalize and --no-normalize");
            bool? normalizeChoice = parse.GetValue(normalize) ? true : parse.GetValue(noNormalize) ? false : null;
            using var m = ModelRegistry.Load(parse.GetValue(model)!);
            ChoosePooling(m, parse.GetValue(pooling), normalizeChoice);
            using var pool = new WorkerPool(parse.GetValue(threads));
            using var embedder = new TextEmbedder(m, Tokenizer.FromGguf(m.File.Metadata), pool);
            var tokens = inputs.Select(embedder.Tokenize).ToArray();
            var vectors = embedder.EmbedTokens(tokens);
            if (parse.GetValue(json))
            {
                var rows = vectors.Select((v, i) => new { index = i, tokens = tokens[i].Length, embedding = v });
                Console.WriteLine(JsonSerializer.Serialize(rows));
            }
            else
            {
                foreach (var v in vectors)
                    Console.WriteLine(string.Join(' ', v.Select(x => x.ToString("R", CultureInfo.InvariantCulture))));
            }
            return 0;
        }));
        return command;
    }

    /// <summary>llama.cpp's <c>--pooling</c>: the file's choice unless given.</summary>
    internal static Option<string?> PoolingOption()
    {
        var option = new Option<string?>("--pooling") { Description = "Pooling in place of the file's: none, mean, cls, last or rank (the classification head's scores)" };
        option.AcceptOnlyFromAmong("none", "mean", "cls", "last", "rank");
        return option;
    }

    /// <summary>Applies the command line's pooling and normalisation choices to an encoder; refuses them for a decoder.</summary>
    internal static void ChoosePooling(IModel model, string? pooling, bool? normalize)
    {
        if (pooling == null && normalize == null) return;
        var encoder = model as IPoolingChoice
            ?? throw new ArgumentException($"--pooling and --normalize need an encoder; {model.File.Path} is a {model.Info.Architecture} model");
        encoder.ChoosePooling(pooling == null ? null : Enum.Parse<EmbeddingPooling>(pooling, ignoreCase: true), normalize);
    }
}
