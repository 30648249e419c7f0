using System.CommandLine;
using Microsoft.AspNetCore.Builder;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Velo.Models;
using Velo.Server;

namespace Velo.Cli.Commands;

/// <summary><c>velo serve</c>: an OpenAI-compatible HTTP server with continuous batching, like llama.cpp's llama-server.</summary>
internal static class ServeCommand
{
    public static Command Create()
    {
        var model = CommonOptions.Model();
        var host = new Option<string>("--host") { Description = "Address to listen on: an IP address or localhost (127.0.0.1 listens on loopback only)", DefaultValueFactory = _ => "127.0.0.1" };
        host.Validators.Add(result =>
        {
            string value = result.GetValueOrDefault<string>();
            if (value != "localhost" && !System.Net.IPAddress.TryParse(value, out _))
                result.AddError($"--host must be an IP address (such as 127.0.0.1, or 0.0.0.0 for every interface) or localhost, got '{value}'");
        });
        var port = CommonOptions.Port("Port to listen on (0: any free port)", 8080);
        var logFormat = new Option<string>("--log-format")
        {
            Description = "One line per request on standard error: text, json, or none",
            DefaultValueFactory = _ => "text",
        };
        logFormat.AcceptOnlyFromAmong("text", "json", "none");
        var cors = new Option<string[]>("--cors")
        {
            Description = "Let web pages from this origin (such as http://localhost:3000) call the server; repeat for more",
            AllowMultipleArgumentsPerToken = false,
        };
        cors.Validators.Add(result =>
        {
            foreach (string origin in result.GetValueOrDefault<string[]>() ?? [])
                if (origin != "*" && !(Uri.TryCreate(origin, UriKind.Absolute, out var uri) && uri.Scheme is "http" or "https" && uri.AbsolutePath == "/"))
                    result.AddError($"--cors takes an origin such as https://example.com (scheme, host and port only) or *, got '{origin}'");
        });
        var parallel = CommonOptions.Parallel("Sequences generated together, each with its own KV cache");
        var queue = new Option<int>("--queue") { Description = "Requests that may wait for a free sequence before the server answers 503", DefaultValueFactory = _ => 64 }
            .AtLeast(0);
        var batchSize = new Option<int>("--batch-size", "-b")
        {
            Description = "Tokens per forward pass: one per decoding sequence, the rest for prompt chunks (fewer: shorter pauses for " +
                          "the sequences decoding while a prompt is read)",
            DefaultValueFactory = _ => new Velo.Generation.BatchSchedulerOptions().MaxBatchTokens,
        }.AtLeast(1);
        var apiKey = new Option<string?>("--api-key") { Description = "Require 'Authorization: Bearer KEY' on every route except /health (and /metrics with --metrics-public)" };
        var metricsPublic = new Option<bool>("--metrics-public")
        {
            Description = "Serve /metrics without the API key, for a scraper that cannot send one (it shows request counts and latencies, no content)",
        };
        var maxBodyBytes = new Option<long>("--max-body-bytes")
        {
            Description = "Largest request body of the completion routes in bytes (default: 64 per context token, between 1 MiB and 64 MiB)",
        };
        var join = new Option<string?>("--join") { Description = "Announce this server to a velo gateway at this URL, and keep announcing it (heartbeat)" };
        var advertise = new Option<string?>("--advertise")
        {
            Description = "The address the gateway reaches this server at, for --join (default: http://HOST:PORT; needed with --host 0.0.0.0)",
        };
        var alias = new Option<string?>("--alias") { Description = "Model id clients use (default: the file name)" };
        var threads = CommonOptions.Threads();
        var cacheTypeK = CommonOptions.CacheTypeK();
        var cacheTypeV = CommonOptions.CacheTypeV();
        var context = CommonOptions.Context();
        context.Description = $"Context length per sequence in tokens (default: the model's, capped at {ModelInfo.DefaultContextCap})";
        var speculation = new CommonOptions.SpeculationOptionSet();

        var command = new Command("serve", "Serve a model over an OpenAI-compatible HTTP API")
        {
            model, host, port, parallel, queue, batchSize, apiKey, metricsPublic, maxBodyBytes, join, advertise, alias, threads, context, cacheTypeK, cacheTypeV,
        };
        command.Options.Add(logFormat);
        command.Options.Add(cors);
        foreach (var option in speculation.All) command.Options.Add(option);
        command.SetAction(parse => CommonOptions.Guard(() =>
        {
            var options = new VeloServerOptions
            {
                ModelPath = parse.GetValue(model)!,
                ModelId = parse.GetValue(alias),
                Host = parse.GetValue(host)!,
                Port = parse.GetValue(port),
                Parallel = parse.GetValue(parallel),
                QueueCapacity = parse.GetValue(queue),
                BatchSize = parse.GetValue(batchSize),
                ContextLength = parse.GetValue(context),
                Threads = parse.GetValue(threads),
                ApiKey = parse.GetValue(apiKey),
                PublicMetrics = parse.GetValue(metricsPublic),
                MaxRequestBytes = parse.GetValue(maxBodyBytes),
                CacheTypes = CommonOptions.CacheTypes(parse, cacheTypeK, cacheTypeV),
                DraftModelPath = parse.GetValue(speculation.DraftModel),
                Speculation = speculation.Speculation(parse),
            };
            var hostOptions = new VeloHostOptions
            {
                LogFormat = Enum.Parse<RequestLogFormat>(parse.GetValue(logFormat)!, ignoreCase: true),
                CorsOrigins = [.. (parse.GetValue(cors) ?? []).Select(origin => origin.TrimEnd('/'))],
            };

            if (options.MaxRequestBytes is < 0 or > VeloEngine.MaxBodyBytes)
                throw new ArgumentException($"--max-body-bytes must be between 0 (derive from the context) and {VeloEngine.MaxBodyBytes}, got {options.MaxRequestBytes}");
            if (!File.Exists(options.ModelPath) && !Directory.Exists(options.ModelPath)) throw new FileNotFoundException($"model file not found: {options.ModelPath}");
            if (options.DraftModelPath is { } draftPath && !File.Exists(draftPath) && !Directory.Exists(draftPath))
                throw new FileNotFoundException($"draft model file not found: {draftPath}");
            var gateway = parse.GetValue(join) is { } joinUrl ? GatewayAddress(joinUrl) : null;
            var advertised = parse.GetValue(advertise) is { } advertiseUrl ? AdvertisedAddress(advertiseUrl) : null;
            if (gateway != null && advertised == null && options.Host is "0.0.0.0" or "::")
                throw new ArgumentException("with --host 0.0.0.0, --join needs --advertise URL: the address the gateway reaches this server at");
            using var engine = new VeloEngine(options);
            var app = VeloServer.Build(engine, options.Host, options.Port, LogLevel.Warning, hostOptions);
            app.Start();
            using var membership = gateway == null ? null
                : new GatewayMembership(gateway, advertised ?? VeloServer.Address(app), options.ApiKey,
                    line => Console.Error.WriteLine($"velo: {line}"));
            membership?.StartAsync(CancellationToken.None).GetAwaiter().GetResult();
            Console.Error.WriteLine($"velo: serving {engine.ModelId} on {VeloServer.Address(app)} ({options.Parallel} parallel sequences); loading the model...");
            while (!engine.IsReady && engine.LoadFailure == null) Thread.Sleep(20);
            if (engine.LoadFailure is { } failure)
            {
                app.StopAsync().GetAwaiter().GetResult();
                throw failure;
            }
            if (engine.LoadedGenerator is { } generator)
            {
                CommonOptions.WarnIfBeyondTraining(generator.ModelId, generator.ModelInfo.ContextLength, generator.ContextLength);
                Console.Error.WriteLine($"velo: model loaded (context {generator.ContextLength} tokens per sequence); Ctrl+C stops");
            }
            else
            {
                Console.Error.WriteLine($"velo: encoder loaded: POST /v1/embeddings ({engine.Embeddings!.Dimensions} dimensions); Ctrl+C stops");
            }
            app.WaitForShutdown();
            membership?.StopAsync(CancellationToken.None).GetAwaiter().GetResult();
            return 0;
        }));
        return command;
    }

    private static Uri GatewayAddress(string url) =>
        Uri.TryCreate(url, UriKind.Absolute, out var uri) && (uri.Scheme == Uri.UriSchemeHttp || uri.Scheme == Uri.UriSchemeHttps)
            ? new Uri(uri.GetLeftPart(UriPartial.Authority) + "/")
            : throw new ArgumentException($"--join must be the gateway's http:// or https:// URL, such as http://10.0.0.2:8000, not '{url}'");

    private static Uri AdvertisedAddress(string advertise) =>
        Uri.TryCreate(advertise, UriKind.Absolute, out var uri) && (uri.Scheme == Uri.UriSchemeHttp || uri.Scheme == Uri.UriSchemeHttps)
            ? uri : throw new ArgumentException($"--advertise must be an http:// or https:// URL, such as http://10.0.0.5:8080, not '{advertise}'");
}
