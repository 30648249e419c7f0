using System.CommandLine;
using Velo.Cli.Commands;

var root = new RootCommand("Velo: run, serve, benchmark and quantize LLMs from GGUF files, in pure .NET.")
{
    RunCommand.Create(),
    InfoCommand.Create(),
    ServeCommand.Create(),
    ChatCommand.Create(),
    BenchServeCommand.Create(),
};
return root.Parse(args).Invoke();
