using System.CommandLine;
using Spectre.Console;
using Velo.Cli.Commands;

// Tables piped to a file or another program keep their full width instead of wrapping at 80 columns.
if (Console.IsOutputRedirected) AnsiConsole.Profile.Width = 200;

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
    ChatCommand.Create(),
};
return root.Parse(args).Invoke();
