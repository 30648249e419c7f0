using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Diagnostics;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace Velo.Server;

/// <summary>What the standalone host adds around the endpoints: the request log, CORS, shutdown.</summary>
public sealed record VeloHostOptions
{
    /// <summary>One line per request in this format; <see cref="RequestLogFormat.None"/> writes none.</summary>
    public RequestLogFormat LogFormat { get; init; } = RequestLogFormat.None;

    /// <summary>Where the request log goes (default: standard error).</summary>
    public TextWriter? LogWriter { get; init; }

    /// <summary>Origins whose web pages may call the server (CORS); none by default.</summary>
    public IReadOnlyList<string> CorsOrigins { get; init; } = [];

    /// <summary>
    /// On shutdown (SIGTERM, Ctrl+C), how long the generations still running may go on to finish; those still running
    /// then end, each response properly (a 503, or a last error event or line of a stream).
    /// </summary>
    public TimeSpan ShutdownGrace { get; init; } = TimeSpan.FromSeconds(10);
}

/// <summary>A standalone Kestrel host serving one engine: what <c>velo serve</c> runs and what tests start on a loopback port.</summary>
public static class VeloServer
{
    /// <summary>Builds the app listening on <paramref name="host"/>:<paramref name="port"/> (port 0 picks a free one).</summary>
    public static WebApplication Build(VeloEngine engine, string host, int port, LogLevel logLevel = LogLevel.Warning, VeloHostOptions? options = null)
    {
        options ??= new VeloHostOptions();
        var builder = WebApplication.CreateSlimBuilder();
        builder.Logging.SetMinimumLevel(logLevel);
        // A failure to start (such as a port in use) reaches the caller as an exception; the host's own log of it would
        // repeat it with a stack trace.
        builder.Logging.AddFilter("Microsoft.Extensions.Hosting.Internal.Host", LogLevel.None);
        builder.WebHost.UseKestrel(kestrel =>
        {
            if (host is "localhost") kestrel.ListenLocalhost(port);
            else kestrel.Listen(System.Net.IPAddress.Parse(host), port);
        });
        // The grace for generations, then a moment for their responses to end, before the host gives up on them.
        builder.Services.Configure<HostOptions>(host => host.ShutdownTimeout = options.ShutdownGrace + TimeSpan.FromSeconds(5));
        if (options.CorsOrigins.Count > 0)
            builder.Services.AddCors(cors => cors.AddDefaultPolicy(policy =>
                policy.WithOrigins([.. options.CorsOrigins]).AllowAnyHeader().AllowAnyMethod().WithExposedHeaders("Retry-After")));
        builder.Services.AddVelo(engine);
        var app = builder.Build();

        var lifetime = app.Services.GetRequiredService<IHostApplicationLifetime>();
        lifetime.ApplicationStopping.Register(() =>
        {
            if (options.ShutdownGrace <= TimeSpan.Zero) engine.Stop();
            else _ = Task.Delay(options.ShutdownGrace).ContinueWith(_ => engine.Stop(), TaskScheduler.Default);
        });

        app.UseRouting();
        app.UseRequestLog(options.LogWriter ?? Console.Error, options.LogFormat);
        if (options.CorsOrigins.Count > 0) app.UseCors();
        app.UseStatusCodePages(context => RouteErrors.WriteAsync(context.HttpContext));
        app.MapVelo();
        app.MapVeloChatPage();
        return app;
    }

    /// <summary>The address the started app listens on, such as <c>http://127.0.0.1:50123</c>.</summary>
    public static Uri Address(WebApplication app) =>
        new(app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First());
}
