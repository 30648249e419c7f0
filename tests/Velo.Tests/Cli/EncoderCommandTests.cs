using System.Text.Json;
using Velo.Models;
using Velo.Tests.Models;
using Velo.Tests.Server;
using Velo.Text;

namespace Velo.Tests.Cli;

/// <summary><c>velo embed --pooling/--normalize</c> and <c>velo rerank</c> on a random-weight cross-encoder, against the
/// double-precision reference.</summary>
public sealed class EncoderCommandTests
{
    [Fact]
    public void EmbedPoolingChoicesAndRerankMatchTheReference()
    {
        var spec = RerankServerTests.Spec(["relevant", "irrelevant"]);
        string path = RerankServerTests.Write(spec);
        string documents = Path.Combine(Path.GetTempPath(), $"velo-rerank-docs-{Guid.NewGuid():N}.txt");
        try
        {
            var reference = new ReferenceBertClassifier(spec, name => ReferenceForwardTests.OriginalWeights(spec, name));
            using var file = Velo.Formats.GgufFile.Open(path);
            var tokenizer = Tokenizer.FromGguf(file.Metadata);
            int[] ids = tokenizer.Encode("hello world", addSpecial: true);
            var hidden = reference.Hidden(ids, new int[ids.Length]);

            double[] Vector(string[] args)
            {
                var r = CliRunner.Run(["embed", "-m", path, "--text", "hello world", .. args]);
                Assert.True(r.ExitCode == 0, r.Stderr);
                return r.Stdout.Trim().Split(' ').Select(double.Parse).ToArray();
            }
            static void Close(double[] expected, double[] actual)
            {
                Assert.Equal(expected.Length, actual.Length);
                for (int i = 0; i < expected.Length; i++) Assert.Equal(expected[i], actual[i], 1e-4);
            }

            Close(hidden[0], Vector(["--pooling", "cls", "--no-normalize"]));
            Close(hidden[^1], Vector(["--pooling", "last", "--no-normalize"]));
            double[] mean = Enumerable.Range(0, spec.Dim).Select(d => hidden.Average(row => row[d])).ToArray();
            double norm = Math.Sqrt(mean.Sum(v => v * v));
            Close(mean.Select(v => v / norm).ToArray(), Vector(["--pooling", "mean", "--normalize"]));
            Close(reference.Scores(ids, new int[ids.Length]), Vector([]));

            File.WriteAllLines(documents, ["Paris is the capital of France.", "Bananas are yellow.", "Berlin is in Germany."]);
            var rerank = CliRunner.Run("rerank", "-m", path, "--query", "capital of France", "--file", documents, "--top-n", "2", "--json");
            Assert.True(rerank.ExitCode == 0, rerank.Stderr);
            using var json = JsonDocument.Parse(rerank.Stdout);
            var results = json.RootElement.EnumerateArray().ToArray();
            Assert.Equal(2, results.Length);
            string[] lines = File.ReadAllLines(documents);
            double[] expected = lines.Select(d =>
            {
                int[] q = tokenizer.Encode("capital of France", addSpecial: false), doc = tokenizer.Encode(d, addSpecial: false);
                int[] tokens = [tokenizer.ClsId, .. q, tokenizer.SepId, .. doc, tokenizer.SepId];
                int[] types = [.. new int[q.Length + 2], .. Enumerable.Repeat(1, doc.Length + 1)];
                return reference.Scores(tokens, types)[0];
            }).ToArray();
            int[] best = Enumerable.Range(0, lines.Length).OrderByDescending(i => expected[i]).Take(2).ToArray();
            for (int r = 0; r < 2; r++)
            {
                Assert.Equal(best[r], results[r].GetProperty("index").GetInt32());
                Assert.Equal(expected[best[r]], results[r].GetProperty("relevance_score").GetDouble(), 1e-4);
            }
        }
        finally
        {
            File.Delete(path);
            File.Delete(documents);
        }
    }

    [Fact]
    public void RankPoolingOnAnEmbeddingModelIsRefused()
    {
        string path = RerankServerTests.Write(RerankServerTests.Spec(labels: null));
        try
        {
            var r = CliRunner.Run("embed", "-m", path, "--text", "hi", "--pooling", "rank");
            Assert.NotEqual(0, r.ExitCode);
            Assert.Contains("classification head", r.Stderr);
            r = CliRunner.Run("embed", "-m", path, "--text", "hi", "--normalize", "--no-normalize");
            Assert.NotEqual(0, r.ExitCode);
        }
        finally
        {
            File.Delete(path);
        }
    }
}
