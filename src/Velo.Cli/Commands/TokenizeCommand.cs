using System.CommandLine;
using Velo.Text;

namespace Velo.Cli.Commands;

/// <summary><c>velo tokenize</c>: the token ids and pieces a model's tokenizer gives a text.</summary>
internal static class TokenizeCommand
{
    public static Command Create()
    {
        var model = CommonOptions.Model();
        model.Description = "A .gguf file, or a tokenizer.json file or the folder holding it (default: the bundled stories260K demo model)";
        var text = new Option<string?>("--text") { Description = "Text to tokenize" };
        var file = new Option<FileInfo?>("--file") { Description = "Tokenize a file's contents" };
        var idsOnly = new Option<bool>("--ids") { Description = "Print only the ids, space-separated" };
        var noSpecial = new Option<bool>("--no-special") { Description = "Do not add BOS/EOS (CLS/SEP)" };
        var parseSpecial = new Option<bool>("--parse-special") { Description = "Recognise control tokens written in the text" };
        var bench = new Option<bool>("--bench") { Description = "Measure encode throughput (MB/s, one thread) on 1 MB of English and of code/CJK/emoji" };
        var command = new Command("tokenize", "Show how a model's tokenizer splits a text") { model, text, file, idsOnly, noSpecial, parseSpecial, bench };
        command.SetAction(parse => CommonOptions.Guard(() =>
        {
            if (parse.GetValue(bench))
            {
                foreach (var result in TokenizerBenchmark.Run(Tokenizer.Load(parse.GetValue(model)!))) Console.WriteLine(result);
                return 0;
            }
            string input = parse.GetValue(file) is { } f ? File.ReadAllText(f.FullName)
                : parse.GetValue(text) ?? throw new ArgumentException("give the text with --text or --file");
            var tokenizer = Tokenizer.Load(parse.GetValue(model)!);
            int[] ids = tokenizer.Encode(input, addSpecial: !parse.GetValue(noSpecial), parseSpecial: parse.GetValue(parseSpecial));
            if (parse.GetValue(idsOnly))
            {
                Console.WriteLine(string.Join(' ', ids));
                return 0;
            }
            foreach (int id in ids) Console.WriteLine($"{id,8} -> '{tokenizer.TokenText(id)}'");
            Console.Error.WriteLine($"{ids.Length} tokens");
            return 0;
        }));
        return command;
    }
}
