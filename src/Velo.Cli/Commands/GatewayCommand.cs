using System.CommandLine;
using Microsoft.AspNetCore.Builder;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Velo.Gateway;

namespace Velo.Cli.Commands;

/// <summary><c>velo gateway</c>: one OpenAI-compatible endpoint in front of several <c>velo serve</c> nodes.</summary>
internal static class GatewayCommand
{
    public static Command Create()
    {
        var host = new Option<string>("--host") { Description = "Address to listen on (default: loopback only)", DefaultValueFactory = _ => "127.0.0.1" };
        var port = new Option<int>("--port") { Description = "Port to listen on", DefaultValueFactory = _ => 8000 };
        var nodes = new Option<string[]>("--node")
        {
            Description = "A node's address, such as http://10.0.0.5:8080 (repeat for more; nodes may also join with velo serve --join)",
            AllowMultipleArgumentsPerToken = false,
        };
        var config = new Option<string?>("--config")
        {
            Description = "A JSON file (appsettings style) whose Velo:Gateway:Nodes array lists node addresses; edits to it add and remove nodes",
        };
        var apiKey = new Option<string?>("--api-key")
        {
            Description = "Require 'Authorization: Bearer KEY' on every route except /health; the nodes share this key (or have none) and joining nodes present it",
        };
        var policy = new Option<string>("--policy")
        {
            Description = "How a request picks among the nodes serving its model: prefix (affinity by the prompt's start), round-robin, least-requests",
            DefaultValueFactory = _ => "prefix",
        };
        policy.AcceptOnlyFromAmong("prefix", "round-robin", "least-requests");
        var prefixChars = new Option<int>("--prefix-chars") { Description = "Most leading characters prefix affinity hashes: a chat's messages up to the first user message, or a prompt", DefaultValueFactory = _ => 1024 }
            .AtLeast(1);
        var healthInterval = new Option<double>("--health-interval") { Description = "Seconds between health checks of each node", DefaultValueFactory = _ => 2 };
        var command = new Command("gateway", "Serve one OpenAI-compatible endpoint in front of several velo serve nodes")
        {
            host, port, nodes, config, apiKey, policy, prefixChars, healthInterval,
        };
        command.SetAction(parse => CommonOptions.Guard(() =>
        {
            double interval = parse.GetValue(healthInterval);
            if (interval is < 0.1 or > 3600) throw new ArgumentException($"--health-interval must be between 0.1 and 3600 seconds, got {interval}");
            var options = new GatewayOptions
            {
                Host = parse.GetValue(host)!,
                Port = parse.GetValue(port),
                Nodes = parse.GetValue(nodes) ?? [],
                ConfigFile = parse.GetValue(config),
                ApiKey = parse.GetValue(apiKey),
                Policy = parse.GetValue(policy) switch
                {
                    "round-robin" => RoutingPolicy.RoundRobin,
                    "least-requests" => RoutingPolicy.LeastOutstanding,
                    _ => RoutingPolicy.PrefixAffinity,
                },
                PrefixChars = parse.GetValue(prefixChars),
                HealthInterval = TimeSpan.FromSeconds(interval),
            };
            var app = VeloGateway.Build(options, LogLevel.Information);
            app.Start();
            int configured = app.Services.GetRequiredService<NodeRegistry>().Nodes.Count;
            Console.Error.WriteLine($"velo: gateway on {VeloGateway.Address(app)} in front of {configured} configured node(s); " +
                $"nodes join with 'velo serve --join {VeloGateway.Address(app)}'; Ctrl+C stops");
            app.WaitForShutdown();
            return 0;
        }));
        return command;
    }
}
