using System.Net;
using System.Text.Json;
using Velo.Generation;
using Velo.Inference;
using Velo.Models;
using Velo.Server;
using Velo.Tests.Models;
using Velo.Text;
using Velo.Threading;

namespace Velo.Tests.Server;

/// <summary>
/// <c>/v1/rerank</c> (and llama-server's aliases) and <c>/v1/classify</c> on a random-weight cross-encoder with
/// MiniLM's WordPiece vocabulary: scores equal the double-precision reference of <c>[CLS] query [SEP] document [SEP]</c>
/// with token types 0/1, best first; an embedding model and a decoder answer 400.
/// </summary>
public sealed class RerankServerTests
{
    internal static SynthSpec Spec(IReadOnlyList<string>? labels) => BertClassifierTests.Spec(twoLayers: true, labels ?? []) with
    {
        VocabSize = 30522,
        ClassifierLabels = labels,
    };

    internal static string Write(SynthSpec spec)
    {
        string path = Path.Combine(Path.GetTempPath(), $"velo-rerank-{Guid.NewGuid():N}.gguf");
        var vocabulary = HuggingFaceTokenizerReader.Read(TestPaths.SharedFile("tokenizers", "hf", "minilm-l6-v2"));
        ModelSynthesizer.Write(path, spec, SynthTokenizer.FromData(vocabulary));
        return path;
    }

    private static async Task<JsonDocument> PostAsync(HttpClient http, string route, string body, HttpStatusCode expected = HttpStatusCode.OK)
    {
        var response = await http.PostAsync(route, TestServer.JsonContent(body));
        string text = await response.Content.ReadAsStringAsync();
        Assert.True(expected == response.StatusCode, $"{route}: {(int)response.StatusCode} {text}");
        return JsonDocument.Parse(text);
    }

    [Fact]
    public async Task RerankAndClassifyServeTheReferenceScores()
    {
        string[] labels = ["relevant", "irrelevant"];
        var spec = Spec(labels);
        string path = Write(spec);
        try
        {
            using var engine = new VeloEngine(new VeloServerOptions { ModelPath = path, ModelId = "reranker", Threads = 2 });
            await using var app = VeloServer.Build(engine, "127.0.0.1", 0);
            await app.StartAsync();
            using var http = new HttpClient { BaseAddress = VeloServer.Address(app) };
            for (int i = 0; i < 500 && !engine.IsReady && engine.LoadFailure == null; i++) await Task.Delay(20);
            Assert.Null(engine.LoadFailure);

            string query = "What is the capital of France?";
            string[] documents = ["Paris is the capital of France.", "Bananas are yellow.", "The Eiffel Tower stands in Paris, the French capital."];
            var embedder = (TextEmbedder)engine.Embeddings!.GetService(typeof(TextEmbedder))!;
            var reference = new ReferenceBertClassifier(spec, name => ReferenceForwardTests.OriginalWeights(spec, name));
            var pairs = documents.Select(d => embedder.TokenizePair(query, d)).ToArray();
            double[] expected = pairs.Select(p => reference.Scores(p.Tokens, p.Types)[0]).ToArray();
            Assert.Equal(2, pairs[0].Types.Distinct().Count());

            string body = JsonSerializer.Serialize(new { query, documents, top_n = 2, return_documents = true });
            using (var json = await PostAsync(http, "/v1/rerank", body))
            {
                var results = json.RootElement.GetProperty("results").EnumerateArray().ToArray();
                Assert.Equal(2, results.Length);
                int[] best = Enumerable.Range(0, 3).OrderByDescending(i => expected[i]).Take(2).ToArray();
                for (int r = 0; r < 2; r++)
                {
                    int index = results[r].GetProperty("index").GetInt32();
                    Assert.Equal(best[r], index);
                    Assert.Equal(expected[index], results[r].GetProperty("relevance_score").GetDouble(), 1e-4);
                    Assert.Equal(documents[index], results[r].GetProperty("document").GetProperty("text").GetString());
                }
                Assert.Equal(pairs.Sum(p => p.Tokens.Length), json.RootElement.GetProperty("usage").GetProperty("total_tokens").GetInt32());
            }
            foreach (string alias in (string[])["/rerank", "/v1/reranking"])
            {
                using var json = await PostAsync(http, alias, JsonSerializer.Serialize(new { query, documents }));
                var results = json.RootElement.GetProperty("results").EnumerateArray().ToArray();
                Assert.Equal(3, results.Length);
                Assert.False(results[0].TryGetProperty("document", out _));
            }
            (await PostAsync(http, "/v1/rerank", """{"query": "q", "documents": [1, 2]}""", HttpStatusCode.BadRequest)).Dispose();
            (await PostAsync(http, "/v1/rerank", """{"documents": ["a"]}""", HttpStatusCode.BadRequest)).Dispose();

            using (var json = await PostAsync(http, "/v1/classify", JsonSerializer.Serialize(new { input = documents })))
            {
                var data = json.RootElement.GetProperty("data").EnumerateArray().ToArray();
                Assert.Equal(3, data.Length);
                for (int i = 0; i < 3; i++)
                {
                    int[] ids = embedder.Tokenize(documents[i]);
                    double[] logits = reference.Scores(ids, new int[ids.Length]);
                    double sum = logits.Sum(Math.Exp);
                    var served = data[i].GetProperty("labels").EnumerateArray().ToArray();
                    Assert.Equal(labels.Length, served.Length);
                    foreach (var label in served)
                    {
                        int l = Array.IndexOf(labels, label.GetProperty("label").GetString());
                        Assert.Equal(Math.Exp(logits[l]) / sum, label.GetProperty("score").GetDouble(), 1e-4);
                    }
                }
            }
            await app.StopAsync();
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Fact]
    public async Task AnEmbeddingModelOrADecoderRefusesRerankAndClassify()
    {
        string path = Write(Spec(labels: null));
        try
        {
            using var encoder = new VeloEngine(new VeloServerOptions { ModelPath = path, ModelId = "embedder", Threads = 1 });
            await using var app = VeloServer.Build(encoder, "127.0.0.1", 0);
            await app.StartAsync();
            using var http = new HttpClient { BaseAddress = VeloServer.Address(app) };
            for (int i = 0; i < 500 && !encoder.IsReady && encoder.LoadFailure == null; i++) await Task.Delay(20);
            Assert.Null(encoder.LoadFailure);
            var response = await http.PostAsync("/v1/rerank", TestServer.JsonContent("""{"query": "q", "documents": ["a"]}"""));
            Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
            Assert.Contains("without a classification head", await response.Content.ReadAsStringAsync());
            await app.StopAsync();
        }
        finally
        {
            File.Delete(path);
        }

        using var pool = new WorkerPool(1);
        using var decoder = LanguageModel.Load(TestPaths.Stories260K);
        using var scheduler = new BatchScheduler(decoder, new BatchSchedulerOptions { Parallel = 1, ContextLength = 64 }, pool);
        using var engine = new VeloEngine(scheduler, "stories");
        await using var decoderApp = VeloServer.Build(engine, "127.0.0.1", 0);
        await decoderApp.StartAsync();
        using var decoderHttp = new HttpClient { BaseAddress = VeloServer.Address(decoderApp) };
        foreach (string route in (string[])["/v1/rerank", "/v1/classify"])
        {
            var refused = await decoderHttp.PostAsync(route, TestServer.JsonContent("""{"query": "q", "documents": ["a"], "input": "a"}"""));
            Assert.Equal(HttpStatusCode.BadRequest, refused.StatusCode);
            Assert.Contains("is a decoder", await refused.Content.ReadAsStringAsync());
        }
        await decoderApp.StopAsync();
    }
}
