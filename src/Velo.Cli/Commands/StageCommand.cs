using System.CommandLine;
using Microsoft.AspNetCore.Builder;
using Microsoft.Extensions.Hosting;
using Velo.Models;
using Velo.Pipeline;

namespace Velo.Cli.Commands;

/// <summary><c>velo stage</c>: one stage of a model split across machines, serving a range of its blocks over gRPC to <c>velo serve --pipeline</c>.</summary>
internal static class StageCommand
{
    public static Command Create()
    {
        var model = CommonOptions.Model();
        var layers = new Option<string>("--layers")
        {
            Description = "The blocks this stage runs, first and last included (such as 4-7); the last stage also runs the output head",
            Required = true,
        };
        var host = new Option<string>("--host") { Description = "Address to listen on: an IP address or localhost", DefaultValueFactory = _ => "127.0.0.1" };
        host.Validators.Add(result =>
        {
            string value = result.GetValueOrDefault<string>();
            if (value != "localhost" && !System.Net.IPAddress.TryParse(value, out _))
                result.AddError($"--host must be an IP address (such as 127.0.0.1, or 0.0.0.0 for every interface) or localhost, got '{value}'");
        });
        var port = CommonOptions.Port("Port to listen on (0: any free port)", 9000);
        var threads = CommonOptions.Threads();

        var command = new Command("stage", "Run a range of a model's blocks for a server split across machines (velo serve --pipeline)")
        {
            model, layers, host, port, threads,
        };
        command.SetAction(parse => CommonOptions.Guard(() =>
        {
            string path = parse.GetValue(model)!;
            if (!File.Exists(path) && !Directory.Exists(path)) throw new FileNotFoundException($"model file not found: {path}");
            var loaded = ModelRegistry.LoadLayers(path, parse.GetValue(layers)!);
            if (loaded.Layers.IsFirst)
            {
                loaded.Dispose();
                throw new ArgumentException($"--layers {loaded.Layers}: block 0 and the token embeddings run in velo serve --pipeline; a stage starts at block 1 or later");
            }
            using var stage = new StageHost(loaded, parse.GetValue(threads));
            var app = StageServer.Build(stage, parse.GetValue(host)!, parse.GetValue(port));
            app.Start();
            Console.Error.WriteLine($"velo: stage serving blocks {stage.Layers} of {stage.Layers.Total}{(stage.Layers.IsLast ? " and the output head" : "")} " +
                $"of {Path.GetFileName(path)} ({loaded.WeightBytes / (1024.0 * 1024):0.#} MiB of weights) on {StageServer.Address(app)}; Ctrl+C stops");
            app.WaitForShutdown();
            return 0;
        }));
        return command;
    }
}
