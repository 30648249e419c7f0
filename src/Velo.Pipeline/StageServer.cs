using Grpc.Core;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Velo.Pipeline.Protocol;

namespace Velo.Pipeline;

/// <summary>A Kestrel host serving one <see cref="StageHost"/> over gRPC (HTTP/2 without TLS): what <c>velo stage</c> runs.</summary>
public static class StageServer
{
    /// <summary>Builds the app listening on <paramref name="host"/>:<paramref name="port"/> (port 0 picks a free one).</summary>
    public static WebApplication Build(StageHost stage, string host, int port, LogLevel logLevel = LogLevel.Warning)
    {
        var builder = WebApplication.CreateSlimBuilder();
        builder.Logging.SetMinimumLevel(logLevel);
        builder.Logging.AddFilter("Microsoft.Extensions.Hosting.Internal.Host", LogLevel.None);
        builder.WebHost.UseKestrel(kestrel =>
        {
            void Http2(ListenOptions listen) => listen.Protocols = HttpProtocols.Http2;
            if (host is "localhost") kestrel.ListenLocalhost(port, Http2);
            else kestrel.Listen(System.Net.IPAddress.Parse(host), port, Http2);
            kestrel.Limits.MaxRequestBodySize = stage.MaxMessageBytes;
        });
        builder.Services.AddGrpc(grpc =>
        {
            grpc.MaxReceiveMessageSize = stage.MaxMessageBytes;
            grpc.MaxSendMessageSize = stage.MaxMessageBytes;
        });
        builder.Services.AddSingleton(stage);
        var app = builder.Build();
        app.MapGrpcService<StageService>();
        return app;
    }

    /// <summary>The address the started app listens on.</summary>
    public static Uri Address(WebApplication app) =>
        new(app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First());
}

/// <summary>The gRPC service: each call goes to the stage, whose work is synchronous and serialized.</summary>
internal sealed class StageService(StageHost stage) : PipelineStage.PipelineStageBase
{
    public override Task<StageDescription> Describe(DescribeRequest request, ServerCallContext context) => Task.FromResult(stage.Description);

    public override Task<OpenReply> Open(OpenRequest request, ServerCallContext context) => Task.FromResult(stage.Open(request));

    public override Task<ForwardReply> Forward(ForwardRequest request, ServerCallContext context) => Task.FromResult(stage.Forward(request));
}
