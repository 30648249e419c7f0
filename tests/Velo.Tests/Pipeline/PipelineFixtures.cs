using Microsoft.AspNetCore.Builder;
using Velo.Models;
using Velo.Pipeline;

namespace Velo.Tests.Pipeline;

/// <summary>A <c>velo stage</c> on a free loopback port: blocks <c>a-b</c> of a model file, served over gRPC.</summary>
public sealed class TestStage : IAsyncDisposable
{
    public TestStage(string modelPath, string layers, int threads = 1, int port = 0)
    {
        Host = new StageHost(ModelRegistry.LoadLayers(modelPath, layers), threads);
        App = StageServer.Build(Host, "127.0.0.1", port);
        App.StartAsync().GetAwaiter().GetResult();
        Address = StageServer.Address(App).GetLeftPart(UriPartial.Authority).Replace("http://", "");
    }

    public StageHost Host { get; }
    public WebApplication App { get; }

    /// <summary>host:port, as <c>--pipeline</c> takes it.</summary>
    public string Address { get; }

    private bool _disposed;

    public async ValueTask DisposeAsync()
    {
        if (_disposed) return;
        _disposed = true;
        await App.StopAsync();
        await App.DisposeAsync();
        Host.Dispose();
    }
}

/// <summary>A tiny random-weight Llama (grouped-query attention, 4 blocks) written once for the pipeline tests.</summary>
public sealed class SynthModelFixture : IDisposable
{
    public SynthModelFixture()
    {
        Path = System.IO.Path.Combine(System.IO.Path.GetTempPath(), $"velo-pipeline-synth-{Environment.ProcessId}.gguf");
        ModelSynthesizer.Write(Path, new SynthSpec
        {
            Name = "pipeline-synth", Dim = 64, Layers = 4, Heads = 4, KvHeads = 2, FfnDim = 160, VocabSize = 300, ContextLength = 256, NormJitter = 0.1f,
        }, threads: 1);
    }

    public string Path { get; }

    public void Dispose() => File.Delete(Path);
}
