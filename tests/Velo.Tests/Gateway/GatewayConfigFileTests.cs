using Microsoft.Extensions.DependencyInjection;
using Velo.Gateway;
using Velo.Tests.Server;

namespace Velo.Tests.Gateway;

/// <summary>Node membership from a JSON file (<c>velo gateway --config</c>): editing the file adds and removes nodes;
/// a broken edit keeps the nodes listed before; <c>--node</c> nodes stay whatever the file says.</summary>
public sealed class GatewayConfigFileTests : IDisposable
{
    private readonly string _folder = Directory.CreateTempSubdirectory("velo-gateway-config-").FullName;

    public void Dispose() => Directory.Delete(_folder, recursive: true);

    private static string NodesJson(params int[] ports) =>
        "{\"Logging\": {}, \"Velo\": {\"Gateway\": {\"Nodes\": [" + string.Join(", ", ports.Select(p => $"\"http://127.0.0.1:{p}\"")) + "]}}}";

    private static int[] Ports(TestGateway gateway) => gateway.Registry.Nodes.Select(n => n.Address.Port).Order().ToArray();

    [Fact]
    public async Task Editing_the_file_adds_and_removes_nodes_and_a_broken_edit_keeps_them()
    {
        // Nothing listens on these ports: membership does not wait for health.
        string path = Path.Combine(_folder, "gateway.json");
        File.WriteAllText(path, NodesJson(1, 2));
        using var gateway = new TestGateway(TestGateway.Fast(new Uri("http://127.0.0.1:9")) with { ConfigFile = path });
        var file = gateway.App.Services.GetRequiredService<NodeConfigurationFile>();
        Assert.Equal([1, 2, 9], Ports(gateway));
        Assert.True(gateway.Registry.Nodes.All(n => n.Configured));

        File.WriteAllText(path, NodesJson(2, 3, 9));
        await OpenAiClientTests.Eventually(() => Ports(gateway).SequenceEqual([2, 3, 9]));

        int reloads = file.Reloads;
        File.WriteAllText(path, """{"Velo": {"Gateway": {"Nodes": ["http://127.0.0.1:4", """);
        await OpenAiClientTests.Eventually(() => file.Reloads > reloads && file.LastError != null);
        Assert.Contains("cannot be read", file.LastError);
        Assert.Equal([2, 3, 9], Ports(gateway));

        // Leaving a node out of the file forgets it, but not one named with --node.
        File.WriteAllText(path, NodesJson());
        await OpenAiClientTests.Eventually(() => Ports(gateway).SequenceEqual([9]));
        Assert.Null(file.LastError);
    }

    [Fact]
    public void A_bad_file_at_the_start_is_a_clear_error()
    {
        string path = Path.Combine(_folder, "bad.json");
        Assert.Contains("does not exist", Assert.Throws<ArgumentException>(() => VeloGateway.Build(new GatewayOptions { ConfigFile = path, Port = 0 })).Message);
        File.WriteAllText(path, """{"Velo": {"Gateway": {"Nodes": ["10.0.0.5:8080"]}}}""");
        Assert.Contains("Velo:Gateway:Nodes:0", Assert.Throws<ArgumentException>(() => VeloGateway.Build(new GatewayOptions { ConfigFile = path, Port = 0 })).Message);
        File.WriteAllText(path, """{"Velo": {"Gateway": {"Nodes": [""");
        Assert.Contains(path, Assert.Throws<ArgumentException>(() => VeloGateway.Build(new GatewayOptions { ConfigFile = path, Port = 0 })).Message);
    }
}
