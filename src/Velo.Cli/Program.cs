using System.CommandLine;
using Velo.Cli;
using Velo.Cli.Commands;

CliSetup.ConfigureConsole();

// -m DIR converts a Hugging Face folder once before it loads; a user waiting on that is told what is happening.
Velo.Models.HuggingFace.HuggingFaceModelCache.ConversionStarted += (folder, cached) =>
    Console.Error.WriteLine($"velo: converting {folder} once into {cached} (reused while the folder is unchanged)");

var root = new RootCommand("Velo: run, serve, benchmark and quantize LLMs from GGUF files, in pure .NET.")
{
    RunCommand.Create(),
    InfoCommand.Create(),
    BenchCommand.Create(),
    TokenizeCommand.Create(),
    PerplexityCommand.Create(),
    QuantizeCommand.Create(),
    SynthCommand.Create(),
    ServeCommand.Create(),
    GatewayCommand.Create(),
    StageCommand.Create(),
    ChatCommand.Create(),
    BenchServeCommand.Create(),
    BenchGrammarCommand.Create(),
    ConvertCommand.Create(),
    EmbedCommand.Create(),
    RerankCommand.Create(),
    PruneCommand.Create(),
    EvalCommand.Create(),
    DistillCommand.Create(),
};
// llama.cpp's --mmap names reading weights in the mapped file; Velo's default copies the multiplied ones (see WeightLoading).
var mmap = new Option<bool>("--mmap")
{
    Description = "Read F16/F32/BF16 and K-quant matrices in the memory-mapped model file instead of copying them at load " +
        "into huge pages (a faster load and pages shared between processes, slower decoding)",
    Recursive = true,
};
root.Options.Add(mmap);
var parse = root.Parse(args);
Velo.Models.WeightLoading.ReadMappedFile = parse.GetValue(mmap);
// A mistake in a command's options is one "error: ..." line each in plain words, as the commands report the errors
// they find themselves, rather than .NET's type names or a line lost above the whole help text; without a command,
// the help listing them helps more.
if (parse.Errors.Count > 0 && parse.CommandResult.Command != root)
{
    foreach (var error in parse.Errors) Console.Error.WriteLine($"error: {CliSetup.Plain(error)}");
    return 1;
}
if (parse.Action is System.CommandLine.Help.HelpAction)
{
    var help = new StringWriter();
    int code = parse.Invoke(new InvocationConfiguration { Output = help });
    Console.Out.Write(CliSetup.ShowDefaultsOnce(help.ToString()));
    return code;
}
return parse.Invoke();
