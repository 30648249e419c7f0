using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace Velo.Server;

/// <summary>A standalone Kestrel host serving one engine: what <c>velo serve</c> runs and what tests start on a loopback port.</summary>
public static class VeloServer
{
    /// <summary>Builds the app listening on <paramref name="host"/>:<paramref name="port"/> (port 0 picks a free one).</summary>
    public static WebApplication Build(VeloEngine engine, string host, int port, LogLevel logLevel = LogLevel.Warning)
    {
        var builder = WebApplication.CreateSlimBuilder();
        builder.Logging.SetMinimumLevel(logLevel);
        builder.WebHost.UseKestrel(kestrel =>
        {
            if (host is "localhost") kestrel.ListenLocalhost(port);
            else kestrel.Listen(System.Net.IPAddress.Parse(host), port);
        });
        builder.Services.AddVelo(engine);
        var app = builder.Build();
        app.MapVelo();
        app.MapVeloChatPage();
        return app;
    }

    /// <summary>The address the started app listens on, such as <c>http://127.0.0.1:50123</c>.</summary>
    public static Uri Address(WebApplication app) =>
        new(app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First());
}
