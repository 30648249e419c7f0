using System.CommandLine;
using System.Globalization;
using System.Text.Json;
using Velo.Inference;
using Velo.Models;
using Velo.Text;
using Velo.Threading;

namespace Velo.Cli.Commands;

/// <summary><c>velo rerank -m reranker.gguf --query Q --file DOCS [--top-n N] [--json]</c>: each document's score against
/// the query from a cross-encoder (a bert GGUF with a classification head), best first.</summary>
internal static class RerankCommand
{
    public static Command Create()
    {
        var model = CommonOptions.Model();
        var query = new Option<string>("--query", "-q") { Description = "The query the documents are scored against", Required = true };
        var file = new Option<string>("--file", "-f") { Description = "A file of documents, one a line", Required = true };
        var topN = new Option<int?>("--top-n") { Description = "Print only the best N documents" };
        var json = new Option<bool>("--json") { Description = "Print a JSON array of {index, relevance_score, document}" };
        var threads = CommonOptions.Threads();
        var command = new Command("rerank", "Score documents against a query with a reranker (a bert cross-encoder), best first")
        {
            model, query, file, topN, json, threads,
        };
        command.SetAction(parse => CommonOptions.Guard(() =>
        {
            string[] documents = File.ReadAllLines(parse.GetValue(file)!);
            if (documents.Length == 0) throw new ArgumentException("the documents file is empty");
            if (parse.GetValue(topN) is < 1) throw new ArgumentException("--top-n must be at least 1");
            using var m = ModelRegistry.Load(parse.GetValue(model)!);
            if (m.Info.Labels.Count == 0)
                throw new ArgumentException($"{m.File.Path} has no classification head (rank pooling): it is not a reranker");
            using var pool = new WorkerPool(parse.GetValue(threads));
            using var embedder = new TextEmbedder(m, Tokenizer.FromGguf(m.File.Metadata), pool);
            using var reranker = new VeloEmbeddingGenerator(embedder, Path.GetFileName(m.File.Path));
            float[] scores = reranker.Rerank(parse.GetValue(query)!, documents, out _);
            var best = Enumerable.Range(0, scores.Length).OrderByDescending(i => scores[i]).Take(parse.GetValue(topN) ?? scores.Length).ToArray();
            if (parse.GetValue(json))
            {
                Console.WriteLine(JsonSerializer.Serialize(best.Select(i => new { index = i, relevance_score = scores[i], document = documents[i] })));
            }
            else
            {
                foreach (int i in best) Console.WriteLine($"{scores[i].ToString("R", CultureInfo.InvariantCulture)}\t{i}\t{documents[i]}");
            }
            return 0;
        }));
        return command;
    }
}
