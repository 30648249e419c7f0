using System.Text.Json;
using Velo.Gateway;
using Velo.Models;
using Velo.Server;
using Velo.Tests.Server;
using Xunit.Abstractions;

namespace Velo.Tests.Gateway;

/// <summary>The gateway in front of three nodes on loopback ports (<see cref="GatewayCluster"/>).</summary>
public sealed class GatewayTests(GatewayCluster cluster, ITestOutputHelper output) : IClassFixture<GatewayCluster>
{
    private TestGateway Gateway => cluster.Gateway;

    [Fact]
    public async Task Requests_reach_only_the_nodes_serving_their_model_and_models_are_merged()
    {
        long stories = cluster.StoriesA.ChatRequests + cluster.StoriesB.ChatRequests, synth = cluster.Synth.ChatRequests;
        for (int i = 0; i < 6; i++)
        {
            var (status, body) = await Gateway.PostAsync("/v1/chat/completions", TestGateway.Chat(TestServer.ModelId, [("user", $"Story number {i}.")], 4));
            Assert.Equal(200, status);
            Assert.Equal(TestServer.ModelId, body.GetProperty("model").GetString());
        }
        for (int i = 0; i < 3; i++)
        {
            var (status, body) = await Gateway.PostAsync("/v1/chat/completions", TestGateway.Chat(GatewayCluster.SynthId, [("user", $"Question {i}")], 4));
            Assert.Equal(200, status);
            Assert.Equal(GatewayCluster.SynthId, body.GetProperty("model").GetString());
        }
        Assert.Equal(stories + 6, cluster.StoriesA.ChatRequests + cluster.StoriesB.ChatRequests);
        Assert.Equal(synth + 3, cluster.Synth.ChatRequests);

        using var models = JsonDocument.Parse(await Gateway.Http.GetStringAsync("/v1/models"));
        var data = models.RootElement.GetProperty("data").EnumerateArray().ToDictionary(m => m.GetProperty("id").GetString()!);
        Assert.Equal([TestServer.ModelId, GatewayCluster.SynthId], data.Keys.Order(StringComparer.Ordinal));
        Assert.Equal(2, data[TestServer.ModelId].GetProperty("meta").GetProperty("nodes").GetInt32());
        Assert.Equal("llama", data[GatewayCluster.SynthId].GetProperty("meta").GetProperty("architecture").GetString());
        Assert.NotEqual(data[TestServer.ModelId].GetProperty("meta").GetProperty("sha256").GetString(),
            data[GatewayCluster.SynthId].GetProperty("meta").GetProperty("sha256").GetString());
    }

    [Fact]
    public async Task A_node_s_client_errors_pass_through_and_the_gateway_s_own_are_clear()
    {
        // The node's 400 (a field it refuses) and 404 (context too long is 400; an unknown model the gateway answers).
        var (status, body) = await Gateway.PostAsync("/v1/chat/completions",
            """{"model": "stories260K", "messages": [{"role": "user", "content": "Hi"}], "functions": [{"name": "f"}]}""");
        Assert.Equal(400, status);
        Assert.Equal("functions", body.GetProperty("error").GetProperty("param").GetString());
        (status, body) = await Gateway.PostAsync("/v1/chat/completions", TestGateway.Chat("gpt-4", [("user", "Hi")], 4));
        Assert.Equal(404, status);
        Assert.Contains("'stories260K'", body.GetProperty("error").GetProperty("message").GetString());
        (status, body) = await Gateway.PostAsync("/v1/chat/completions", "{\"model\": \"stories260K\", \"messages\": [");
        Assert.Equal(400, status);
        Assert.Contains("not valid JSON", body.GetProperty("error").GetProperty("message").GetString());
        (status, body) = await Gateway.PostAsync("/v1/chat/completions", TestGateway.Chat("", [("user", "Hi")], 4).Replace("\"model\":\"\"", "\"model\":null"));
        Assert.Equal(400, status);
        Assert.Contains("'model' is required", body.GetProperty("error").GetProperty("message").GetString());
    }

    [Fact]
    public async Task Prefix_affinity_reuses_more_prompt_tokens_than_round_robin()
    {
        // Each policy gets its own conversations (different text), so neither profits from the other's KV memory.
        using var roundRobin = new TestGateway(TestGateway.Fast(cluster.StoriesA.Address, cluster.StoriesB.Address) with { Policy = RoutingPolicy.RoundRobin });
        using var affinity = new TestGateway(TestGateway.Fast(cluster.StoriesA.Address, cluster.StoriesB.Address));
        await roundRobin.UntilServingAsync(TestServer.ModelId, 2);
        await affinity.UntilServingAsync(TestServer.ModelId, 2);
        var (rrCached, rrPrompt) = await ConversationsAsync(roundRobin, "river");
        var (paCached, paPrompt) = await ConversationsAsync(affinity, "mountain");
        double rrShare = (double)rrCached / rrPrompt, paShare = (double)paCached / paPrompt;
        output.WriteLine($"cached_tokens share: prefix affinity {paShare:P1} ({paCached}/{paPrompt}), round-robin {rrShare:P1} ({rrCached}/{rrPrompt})");
        Assert.True(paShare > rrShare, $"prefix affinity {paShare:P1} should reuse more than round-robin {rrShare:P1}");
    }

    /// <summary>Three conversations of three turns each, interleaved turn by turn; the prompt and cached tokens they used.</summary>
    private static async Task<(long Cached, long Prompt)> ConversationsAsync(TestGateway gateway, string topic)
    {
        var conversations = Enumerable.Range(0, 3).Select(c => new List<(string Role, string Content)>
        {
            ("system", "You tell short stories to children."),
            ("user", $"Tell me a story about a {topic} and friend number {c}."),
        }).ToList();
        long cached = 0, prompt = 0;
        for (int turn = 0; turn < 3; turn++)
            foreach (var messages in conversations)
            {
                var (status, body) = await gateway.PostAsync("/v1/chat/completions", TestGateway.Chat(TestServer.ModelId, messages, 6));
                Assert.Equal(200, status);
                var usage = body.GetProperty("usage");
                prompt += usage.GetProperty("prompt_tokens").GetInt32();
                cached += usage.GetProperty("prompt_tokens_details").GetProperty("cached_tokens").GetInt32();
                messages.Add(("assistant", body.GetProperty("choices")[0].GetProperty("message").GetProperty("content").GetString()!));
                messages.Add(("user", $"What happened next, in turn {turn + 2}?"));
            }
        return (cached, prompt);
    }

    private enum StreamOutcome { Completed, EndedWithErrorEvent, FailedBeforeStreaming, BrokenWithoutErrorEvent }

    private async Task<StreamOutcome> StreamAsync(string prompt, int maxTokens)
    {
        string json = TestGateway.Chat(TestServer.ModelId, [("user", prompt)], maxTokens, stream: true).TrimEnd('}') + ",\"ignore_eos\":true}";
        int events = 0;
        try
        {
            using var request = new HttpRequestMessage(HttpMethod.Post, "/v1/chat/completions") { Content = TestGateway.Json(json) };
            using var response = await Gateway.Http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead);
            if (!response.IsSuccessStatusCode) return StreamOutcome.FailedBeforeStreaming;
            using var reader = new StreamReader(await response.Content.ReadAsStreamAsync());
            while (await reader.ReadLineAsync() is { } line)
            {
                if (!line.StartsWith("data: ", StringComparison.Ordinal)) continue;
                if (line == "data: [DONE]") return StreamOutcome.Completed;
                using var chunk = JsonDocument.Parse(line["data: ".Length..]);
                if (chunk.RootElement.TryGetProperty("error", out var error))
                {
                    Assert.Equal("node_failed", error.GetProperty("code").GetString());
                    return StreamOutcome.EndedWithErrorEvent;
                }
                events++;
            }
            return StreamOutcome.BrokenWithoutErrorEvent;
        }
        catch (HttpRequestException) when (events == 0)
        {
            return StreamOutcome.FailedBeforeStreaming;
        }
        catch (Exception e) when (e is HttpRequestException or IOException)
        {
            return StreamOutcome.BrokenWithoutErrorEvent;
        }
    }

    [Fact]
    public async Task Killing_a_node_under_load_loses_no_request_that_had_not_started_and_the_node_rejoins()
    {
        long servedA = cluster.StoriesA.ChatRequests, servedB = cluster.StoriesB.ChatRequests;
        // Long enough that on a quiet machine the streams are still running when the node dies.
        var streams = Enumerable.Range(0, 8).Select(i => StreamAsync($"Long story {i} about a dog.", 420)).ToList();
        await OpenAiClientTests.Eventually(() => cluster.StoriesA.Scheduler.ActiveSequences > 0 || cluster.StoriesB.Scheduler.ActiveSequences > 0);
        // The node that is generating dies (the router may have put all eight streams on one node).
        var victim = cluster.StoriesA.Scheduler.ActiveSequences > 0 ? cluster.StoriesA : cluster.StoriesB;
        long served = victim == cluster.StoriesA ? servedA : servedB;
        await victim.KillAsync();
        try
        {
            // Sent after the kill, before any check noticed it: those routed to the dead node must go to the other one.
            var after = Enumerable.Range(0, 6).Select(i => Gateway.PostAsync("/v1/chat/completions",
                TestGateway.Chat(TestServer.ModelId, [("user", $"After the crash, story {i}.")], 8))).ToList();
            var outcomes = await Task.WhenAll(streams);
            var late = await Task.WhenAll(after);
            var node = Gateway.Node(victim.Address);
            output.WriteLine($"streams: {outcomes.Count(o => o == StreamOutcome.Completed)} completed, " +
                $"{outcomes.Count(o => o == StreamOutcome.EndedWithErrorEvent)} ended with an error event; requests after the kill: " +
                $"{late.Count(r => r.Status == 200)}/{late.Length} answered; retries on other nodes: {Gateway.Registry.Nodes.Sum(n => n.Retries)}");
            Assert.DoesNotContain(StreamOutcome.FailedBeforeStreaming, outcomes);
            Assert.DoesNotContain(StreamOutcome.BrokenWithoutErrorEvent, outcomes);
            Assert.Contains(StreamOutcome.EndedWithErrorEvent, outcomes);
            Assert.All(late, r => Assert.Equal(200, r.Status));
            await OpenAiClientTests.Eventually(() => node.State == NodeState.Down);
        }
        finally
        {
            // The cluster is shared by the other tests: a failure here must not leave them one node short.
            await victim.RestartAsync();
        }
        await Gateway.UntilServingAsync(TestServer.ModelId, 2);
        for (int i = 0; i < 16 && victim.ChatRequests == served; i++)
            Assert.Equal(200, (await Gateway.PostAsync("/v1/chat/completions", TestGateway.Chat(TestServer.ModelId, [("user", $"Back again {i}.")], 2))).Status);
        Assert.True(victim.ChatRequests > served, "the node that came back should get requests again");
    }

    [Fact]
    public async Task A_node_that_fails_before_answering_is_passed_over_for_another()
    {
        // Checks that never come after the first: only the failed request tells this gateway the node is gone.
        using var gateway = new TestGateway(TestGateway.Fast(cluster.StoriesA.Address, cluster.StoriesB.Address) with
        {
            Policy = RoutingPolicy.RoundRobin,
            HealthInterval = TimeSpan.FromHours(1),
        });
        await gateway.UntilServingAsync(TestServer.ModelId, 2);
        var victim = cluster.StoriesB;
        long survivorServed = cluster.StoriesA.ChatRequests;
        await victim.KillAsync();
        try
        {
            for (int i = 0; i < 4; i++)
                Assert.Equal(200, (await gateway.PostAsync("/v1/chat/completions", TestGateway.Chat(TestServer.ModelId, [("user", $"Retry {i}.")], 2))).Status);
            Assert.Equal(survivorServed + 4, cluster.StoriesA.ChatRequests);
            Assert.Equal(1, gateway.Node(victim.Address).Failures);
            Assert.Equal(NodeState.Down, gateway.Node(victim.Address).State);
            Assert.Equal(1, gateway.Node(cluster.StoriesA.Address).Retries);
        }
        finally
        {
            await victim.RestartAsync();
            await Gateway.UntilServingAsync(TestServer.ModelId, 2);
        }
    }

    [Fact]
    public void A_conversation_keeps_its_routing_key_from_turn_to_turn()
    {
        static string Key(string json, int chars = 1024) => RoutedRequest.Parse(System.Text.Encoding.UTF8.GetBytes(json), chars).PrefixKey;
        string first = Key(TestGateway.Chat("m", [("system", "Be brief."), ("user", "About cats?")], 4));
        string later = Key(TestGateway.Chat("m", [("system", "Be brief."), ("user", "About cats?"), ("assistant", "Cats purr."), ("user", "More?")], 4));
        string other = Key(TestGateway.Chat("m", [("system", "Be brief."), ("user", "About dogs?")], 4));
        Assert.Equal(first, later);
        Assert.NotEqual(first, other);
        Assert.Equal("Once ", Key("{\"prompt\": \"Once upon a time\"}", 5));
        Assert.Null(RoutedRequest.Parse("{}"u8, 5).Model);
        Assert.Equal(400, Assert.Throws<GatewayError>(() => RoutedRequest.Parse("{\"model\": 3}"u8, 5)).Status);
        Assert.Equal(400, Assert.Throws<GatewayError>(() => RoutedRequest.Parse("[1]"u8, 5)).Status);
    }

    [Fact]
    public async Task A_node_that_does_not_answer_or_serves_another_model_under_a_taken_name_is_refused()
    {
        int deadPort;
        using (var listener = new System.Net.Sockets.TcpListener(System.Net.IPAddress.Loopback, 0))
        {
            listener.Start();
            deadPort = ((System.Net.IPEndPoint)listener.LocalEndpoint).Port;
        }
        var (status, body) = await Gateway.PostAsync(VeloGateway.JoinRoute, $"{{\"url\": \"http://127.0.0.1:{deadPort}\"}}");
        Assert.Equal(400, status);
        Assert.Contains($"cannot reach the node at http://127.0.0.1:{deadPort}", body.GetProperty("error").GetProperty("message").GetString());
        (status, body) = await Gateway.PostAsync(VeloGateway.JoinRoute, """{"url": "http://127.0.0.1:1/v1"}""");
        Assert.Equal(400, status);
        Assert.Contains("scheme, host and port only", body.GetProperty("error").GetProperty("message").GetString());
        Assert.Throws<ArgumentException>(() => new NodeRegistry(new GatewayOptions { Nodes = ["localhost:8080"] }));

        // The synth model under stories260K's name: a different file, so the gateway keeps its requests away.
        using var impostor = new GatewayTestNode(cluster.SynthPath, TestServer.ModelId, parallel: 1);
        (status, _) = await Gateway.PostAsync(VeloGateway.JoinRoute, $"{{\"url\": \"{impostor.Address}\"}}");
        Assert.Equal(200, status);
        var node = Gateway.Node(impostor.Address);
        await OpenAiClientTests.Eventually(() => node.State == NodeState.Healthy && node.Error != null);
        Assert.Contains("different model under that name", node.Error);
        Assert.Empty(node.Models);
        for (int i = 0; i < 6; i++)
            Assert.Equal(200, (await Gateway.PostAsync("/v1/chat/completions", TestGateway.Chat(TestServer.ModelId, [("user", $"Impostor test {i}.")], 2))).Status);
        Assert.Equal(0, impostor.ChatRequests);
    }

    [Fact]
    public async Task The_gateway_s_api_key_guards_every_route_but_health()
    {
        using var guarded = new TestGateway(TestGateway.Fast(cluster.StoriesB.Address) with { ApiKey = "secret" });
        await guarded.UntilServingAsync(TestServer.ModelId, 1);
        string chat = TestGateway.Chat(TestServer.ModelId, [("user", "Hi")], 2);
        Assert.Equal(401, (await guarded.PostAsync("/v1/chat/completions", chat)).Status);
        Assert.Equal(401, (await guarded.PostAsync("/v1/chat/completions", chat, apiKey: "wrong")).Status);
        Assert.Equal(200, (await guarded.PostAsync("/v1/chat/completions", chat, apiKey: "secret")).Status);
        Assert.Equal(401, (int)(await guarded.Http.GetAsync("/metrics")).StatusCode);
        Assert.Equal(200, (int)(await guarded.Http.GetAsync("/health")).StatusCode);
    }

    [Fact]
    public void A_saturated_or_overloaded_preferred_node_hands_the_request_on()
    {
        var nodes = Enumerable.Range(0, 3).Select(i => new GatewayNode(new Uri($"http://10.0.0.{i}:8080/"), configured: true)).ToList();
        var router = new NodeRouter(new GatewayOptions());
        const string key = "system\nBe brief.\nuser\nHello\n";
        var preferred = router.Pick(nodes, key)!;
        Assert.Same(preferred, NodeRouter.RingOrder(nodes, NodeRouter.Hash(key)).First());
        Assert.Same(preferred, router.Pick(nodes, key));

        // Over the load bound (1.25 x the average, this request counted): the next node on the ring takes it.
        for (int i = 0; i < 3; i++) preferred.Begin();
        var second = NodeRouter.RingOrder(nodes, NodeRouter.Hash(key)).ElementAt(1);
        Assert.Same(second, router.Pick(nodes, key));
        for (int i = 0; i < 3; i++) preferred.End();

        // Busy (a 503 lately) or queueing: passed over too; when all are, the least loaded one.
        preferred.BusyUntil = DateTime.UtcNow.AddMinutes(1);
        Assert.Same(second, router.Pick(nodes, key));
        foreach (var node in nodes) node.QueueLength = 1;
        second.Begin();
        Assert.NotSame(second, router.Pick(nodes, key));
        second.End();
    }

    [Fact]
    public void The_ring_moves_only_the_keys_of_a_node_that_leaves()
    {
        var nodes = Enumerable.Range(0, 4).Select(i => new GatewayNode(new Uri($"http://10.0.0.{i}:8080/"), configured: true)).ToList();
        var keys = Enumerable.Range(0, 400).Select(i => NodeRouter.Hash($"conversation {i}")).ToList();
        var before = keys.Select(k => NodeRouter.RingOrder(nodes, k).First()).ToList();
        var after = keys.Select(k => NodeRouter.RingOrder(nodes.Skip(1).ToList(), k).First()).ToList();
        for (int i = 0; i < keys.Count; i++)
            if (before[i] != nodes[0]) Assert.Same(before[i], after[i]);
        // Each node owns a fair part of the ring.
        Assert.All(nodes, n => Assert.InRange(before.Count(b => b == n), 50, 150));
    }
}

/// <summary>The official OpenAI client's tests, run through a gateway in front of the node.</summary>
public sealed class GatewayOpenAiClientTests(GatewayFrontedServer server) : OpenAiClientContract(server), IClassFixture<GatewayFrontedServer>;
