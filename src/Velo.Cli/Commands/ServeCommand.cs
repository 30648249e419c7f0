using System.CommandLine;
using Microsoft.AspNetCore.Builder;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Velo.Generation;
using Velo.Models;
using Velo.Pipeline;
using Velo.Server;

namespace Velo.Cli.Commands;

/// <summary><c>velo serve</c>: an OpenAI-compatible HTTP server with continuous batching, like llama.cpp's llama-server.</summary>
internal static class ServeCommand
{
    public static Command Create()
    {
        var model = new Option<string?>("-m")
        {
            Description = "The default model: a GGUF file or Hugging Face model folder, for requests that name none " +
                          "(default: the first --model, else the bundled stories260K demo model)",
        };
        var models = new Option<string[]>("--model")
        {
            Description = "Another model to serve, as NAME=FILE (or FILE, named by its file name); requests pick one by 'model'; repeat for more",
            AllowMultipleArgumentsPerToken = false,
        };
        var keepAlive = new Option<string>("--keep-alive")
        {
            Description = "How long a model stays loaded once idle, as Ollama's keep-alive: 5m, 1h30m, 300 (seconds), 0 (unload at once) or -1 (for ever)",
            DefaultValueFactory = _ => "5m",
        };
        keepAlive.Validators.Add(result =>
        {
            if (KeepAliveDuration.Parse(result.GetValueOrDefault<string>()) == null)
                result.AddError($"--keep-alive takes a duration such as 5m, 1h30m, 300 (seconds) or -1 (for ever), got '{result.GetValueOrDefault<string>()}'");
        });
        var routes = new Option<string[]>("--route")
        {
            Description = "A model name that answers with a small model and escalates to a large one when the small one is unsure, as " +
                          "NAME=SMALL,LARGE (names of served models, such as auto=small,large); repeat for more",
            AllowMultipleArgumentsPerToken = false,
        };
        var routeMeasure = new Option<string>("--route-measure")
        {
            Description = "How a route judges the small model's first tokens: logprob (their mean log-probability) or entropy (its mean entropy)",
            DefaultValueFactory = _ => "logprob",
        };
        routeMeasure.AcceptOnlyFromAmong("logprob", "entropy");
        var routeThreshold = new Option<double?>("--route-threshold")
        {
            Description = $"Escalate below this mean log-probability (default {CascadeOptions.DefaultLogprobThreshold}) or above this mean entropy in nats (default {CascadeOptions.DefaultEntropyThreshold})",
        };
        var routeProbe = new Option<int>("--route-probe")
        {
            Description = "Tokens of the small model's answer a route judges (and holds back) before it keeps or escalates it",
            DefaultValueFactory = _ => CascadeOptions.DefaultProbeTokens,
        }.AtLeast(1);
        var routeLargeWithin = new Option<double?>("--route-large-within")
        {
            Description = "Send a request whose latency_budget (seconds) is at least this straight to the large model (default: never)",
        };
        var memoryCap = new Option<string?>("--memory-cap")
        {
            Description = "The most memory all loaded models may plan to use together, such as 8GiB; idle models unload to make room (default: no cap)",
        };
        memoryCap.Validators.Add(result =>
        {
            if (result.GetValueOrDefault<string?>() is { } text && ByteSize(text) is not > 0)
                result.AddError($"--memory-cap takes a size such as 8GiB, 512MiB or 1073741824 (bytes), got '{text}'");
        });
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
        var parallel = CommonOptions.Parallel("Sequences generated together by each decoder, each with its own KV cache");
        var queue = new Option<int>("--queue") { Description = "Requests that may wait for a free sequence before the server answers 503", DefaultValueFactory = _ => 64 }
            .AtLeast(0);
        var batchSize = new Option<int>("--batch-size", "-b")
        {
            Description = "Tokens per forward pass: one per decoding sequence, the rest for prompt chunks (fewer: shorter pauses for " +
                          "the sequences decoding while a prompt is read)",
            DefaultValueFactory = _ => new BatchSchedulerOptions().MaxBatchTokens,
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
        var pipeline = new Option<string?>("--pipeline")
        {
            Description = "Split the model across machines: run its first blocks here and the rest on these velo stage servers, in order (host:port[,host:port...])",
        };
        var pipelineTimeout = new Option<int>("--pipeline-timeout")
        {
            Description = "Seconds one batch may take at a pipeline stage before its requests fail",
            DefaultValueFactory = _ => 60,
        }.AtLeast(1);
        var alias = new Option<string?>("--alias") { Description = "Model id clients use for the default model (default: the file name)" };
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
        command.Options.Add(pipeline);
        command.Options.Add(pipelineTimeout);
        command.Options.Add(logFormat);
        command.Options.Add(cors);
        foreach (var option in speculation.All) command.Options.Add(option);
        command.Options.Add(models);
        command.Options.Add(keepAlive);
        command.Options.Add(memoryCap);
        foreach (var option in (Option[])[routes, routeMeasure, routeThreshold, routeProbe, routeLargeWithin]) command.Options.Add(option);
        command.SetAction(parse => CommonOptions.Guard(() =>
        {
            var named = (parse.GetValue(models) ?? []).Select(NamedModel).ToList();
            // Without -m the first --model is the default; without either, the bundled demo model.
            var defaultModel = parse.GetValue(model) is { } path ? new NamedModelFile(VeloEngine.DefaultName(path), path)
                : named.Count > 0 ? named[0] : new NamedModelFile(VeloEngine.DefaultName(CommonOptions.BundledModel), CommonOptions.BundledModel);
            if (parse.GetValue(model) == null && named.Count > 0) named.RemoveAt(0);
            var options = new VeloServerOptions
            {
                ModelPath = defaultModel.Path,
                ModelId = parse.GetValue(alias) ?? defaultModel.Name,
                Models = named,
                Routes = Routes(parse.GetValue(routes) ?? [], [defaultModel.Name, .. named.Select(m => m.Name)], new CascadeOptions
                {
                    Measure = parse.GetValue(routeMeasure) == "entropy" ? CascadeMeasure.MeanEntropy : CascadeMeasure.MeanLogprob,
                    Threshold = parse.GetValue(routeThreshold),
                    ProbeTokens = parse.GetValue(routeProbe),
                    LargeWithinBudget = parse.GetValue(routeLargeWithin) is double within ? TimeSpan.FromSeconds(within) : null,
                }),
                KeepAlive = KeepAliveDuration.Parse(parse.GetValue(keepAlive)!)!.Value,
                MemoryCapBytes = parse.GetValue(memoryCap) is { } cap ? ByteSize(cap) : null,
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
            foreach (string file in (string[])[options.ModelPath, .. options.Models.Select(m => m.Path)])
                if (!File.Exists(file) && !Directory.Exists(file)) throw new FileNotFoundException($"model file not found: {file}");
            if (options.DraftModelPath is { } draftPath && !File.Exists(draftPath) && !Directory.Exists(draftPath))
                throw new FileNotFoundException($"draft model file not found: {draftPath}");
            var gateway = parse.GetValue(join) is { } joinUrl ? GatewayAddress(joinUrl) : null;
            var advertised = parse.GetValue(advertise) is { } advertiseUrl ? AdvertisedAddress(advertiseUrl) : null;
            if (gateway != null && advertised == null && options.Host is "0.0.0.0" or "::")
                throw new ArgumentException("with --host 0.0.0.0, --join needs --advertise URL: the address the gateway reaches this server at");
            if (parse.GetValue(pipeline) != null
                && (options.Models.Count > 0 || options.MemoryCapBytes != null || parse.GetResult(keepAlive) is { Implicit: false }))
                throw new ArgumentException("--pipeline serves one model split across stages, loaded for the server's lifetime: it does not take --model NAME=FILE, --memory-cap or --keep-alive");
            using var split = parse.GetValue(pipeline) is { } stages
                ? PipelineServer.Load(options, stages.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries),
                    new PipelineOptions { CallTimeout = TimeSpan.FromSeconds(parse.GetValue(pipelineTimeout)) })
                : null;
            if (split != null) Console.Error.WriteLine($"velo: pipeline: {split.Describe()}");
            using var engine = split?.Engine ?? new VeloEngine(options);
            var app = VeloServer.Build(engine, options.Host, options.Port, LogLevel.Warning, hostOptions);
            app.Start();
            using var membership = gateway == null ? null
                : new GatewayMembership(gateway, advertised ?? VeloServer.Address(app), options.ApiKey,
                    line => Console.Error.WriteLine($"velo: {line}"));
            membership?.StartAsync(CancellationToken.None).GetAwaiter().GetResult();
            string others = options.Models.Count > 0 ? $" (and {string.Join(", ", options.Models.Select(m => m.Name))}, loaded on first use)" : "";
            Console.Error.WriteLine($"velo: serving {engine.ModelId}{others} on {VeloServer.Address(app)} ({options.Parallel} parallel sequences per decoder); loading the model...");
            while (!engine.IsReady && engine.LoadFailure == null) Thread.Sleep(20);
            if (engine.LoadFailure is { } failure)
            {
                app.StopAsync().GetAwaiter().GetResult();
                // The memory cap's refusal is written for a client; here it is the operator's error.
                if (failure is ApiException refusal) throw new InvalidOperationException(refusal.Message);
                throw failure;
            }
            var loaded = engine.Models.Models[0].Loaded;
            if (loaded?.Generator is { } generator)
            {
                CommonOptions.WarnIfBeyondTraining(generator.ModelId, generator.ModelInfo.ContextLength, generator.ContextLength);
                Console.Error.WriteLine($"velo: model loaded (context {generator.ContextLength} tokens per sequence); Ctrl+C stops");
            }
            else if (loaded?.Embeddings is { } embeddings)
            {
                Console.Error.WriteLine($"velo: encoder loaded: POST /v1/embeddings ({embeddings.Dimensions} dimensions); Ctrl+C stops");
            }
            else
            {
                Console.Error.WriteLine("velo: model loaded, and unloaded again as --keep-alive asks; Ctrl+C stops");
            }
            app.WaitForShutdown();
            membership?.StopAsync(CancellationToken.None).GetAwaiter().GetResult();
            return 0;
        }));
        return command;
    }

    /// <summary>A --model value: NAME=FILE, or FILE named by its file name.</summary>
    private static NamedModelFile NamedModel(string value)
    {
        int equals = value.IndexOf('=');
        if (equals > 0 && !File.Exists(value) && !Directory.Exists(value))
        {
            string name = value[..equals];
            if (!System.Text.RegularExpressions.Regex.IsMatch(name, "^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"))
                throw new ArgumentException($"--model NAME=FILE: the name '{name}' must be letters, digits and . _ : - (as Ollama's names are)");
            return new NamedModelFile(name, value[(equals + 1)..]);
        }
        return new NamedModelFile(VeloEngine.DefaultName(value), value);
    }

    /// <summary>The --route values, NAME=SMALL,LARGE, over the models served under <paramref name="served"/>.</summary>
    private static List<ModelSource> Routes(string[] values, IReadOnlyList<string> served, CascadeOptions options)
    {
        options.Validate();
        var routes = new List<ModelSource>();
        foreach (string value in values)
        {
            int equals = value.IndexOf('=');
            string[] sizes = equals > 0 ? value[(equals + 1)..].Split(',', StringSplitOptions.TrimEntries) : [];
            if (sizes.Length != 2 || sizes.Any(string.IsNullOrEmpty))
                throw new ArgumentException($"--route takes NAME=SMALL,LARGE (names of served models), got '{value}'");
            string name = value[..equals];
            if (served.Contains(name) || routes.Any(r => r.Name == name))
                throw new ArgumentException($"--route {name}: that name is already served");
            foreach (string size in sizes)
                if (!served.Contains(size))
                    throw new ArgumentException($"--route {name}: '{size}' is not a served model (served: {string.Join(", ", served)})");
            if (sizes[0] == sizes[1]) throw new ArgumentException($"--route {name}: the small and the large model are both '{sizes[0]}'");
            routes.Add(new CascadeModelSource(name, sizes[0], sizes[1], options with { Name = name }));
        }
        return routes;
    }

    /// <summary>A size such as 8GiB, 512MiB, 2GB or a number of bytes; null when it is none.</summary>
    internal static long? ByteSize(string text)
    {
        var match = System.Text.RegularExpressions.Regex.Match(text.Trim(), "^([0-9]+(?:\\.[0-9]+)?)\\s*([KMGT]?)(i?)(B?)$", System.Text.RegularExpressions.RegexOptions.IgnoreCase);
        if (!match.Success || !double.TryParse(match.Groups[1].Value, System.Globalization.NumberStyles.AllowDecimalPoint, System.Globalization.CultureInfo.InvariantCulture, out double number))
            return null;
        // KiB and K are 1024; KB is 1000, as the SI prefixes are.
        double unit = Math.Pow(match.Groups[3].Length == 0 && match.Groups[4].Length > 0 ? 1000 : 1024,
            "KMGT".IndexOf(char.ToUpperInvariant(match.Groups[2].Value.FirstOrDefault('_'))) + 1);
        double bytes = number * unit;
        return bytes is >= 1 and < long.MaxValue ? (long)bytes : null;
    }

    private static Uri GatewayAddress(string url) =>
        Uri.TryCreate(url, UriKind.Absolute, out var uri) && (uri.Scheme == Uri.UriSchemeHttp || uri.Scheme == Uri.UriSchemeHttps)
            ? new Uri(uri.GetLeftPart(UriPartial.Authority) + "/")
            : throw new ArgumentException($"--join must be the gateway's http:// or https:// URL, such as http://10.0.0.2:8000, not '{url}'");

    private static Uri AdvertisedAddress(string advertise) =>
        Uri.TryCreate(advertise, UriKind.Absolute, out var uri) && (uri.Scheme == Uri.UriSchemeHttp || uri.Scheme == Uri.UriSchemeHttps)
            ? uri : throw new ArgumentException($"--advertise must be an http:// or https:// URL, such as http://10.0.0.5:8080, not '{advertise}'");
}
