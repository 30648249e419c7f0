using System.CommandLine;
using System.Globalization;
using System.Text.Json;
using Velo.Inference;
using Velo.Models;
using Velo.Text;
using Velo.Threading;

namespace Velo.Cli.Commands;

/// <summary><c>velo embed -m encoder.gguf (--text T | --file F) [--json]</c>: one embedding per input.</summary>
internal static class EmbedCommand
{
    public static Command Create()
    {
        var model = CommonOptions.Model();
        var text = new Option<string?>("--text") { Description = "The text to embed" };
        var file = new Option<string?>("--file", "-f") { Description = "A file of texts to embed, one input a line" };
        var json = new Option<bool>("--json") { Description = "Print a JSON array of {index, tokens, embedding}" };
        var threads = CommonOptions.Threads();
        var command = new Command("embed", "Embed texts with an encoder model (bert), printing one vector per input")
        {
            model, text, file, json, threads,
        };
        command.SetAction(parse => CommonOptions.Guard(() =>
        {
            string? t = parse.GetValue(text), f = parse.GetValue(file);
            if ((t == null) == (f == null)) throw new ArgumentException("give exactly one of --text and --file");
            string[] inputs = t != null ? [t] : File.ReadAllLines(f!);
            using var m = ModelRegistry.Load(parse.GetValue(model)!);
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
}
