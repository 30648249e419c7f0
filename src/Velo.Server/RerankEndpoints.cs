using System.Text.Json;
using Microsoft.AspNetCore.Http;
using Velo.Inference;

namespace Velo.Server;

/// <summary>
/// A classifier's routes, served when the encoder has a classification head (rank pooling):
/// <c>POST /v1/rerank</c> (also <c>/rerank</c> and <c>/v1/reranking</c>, as llama-server names them) in the
/// Jina/Cohere shape, each document scored as the pair <c>[CLS] query [SEP] document [SEP]</c>, results best first with
/// the model's raw score as <c>relevance_score</c> as llama-server gives it; and <c>POST /v1/classify</c>, each input's
/// labels with softmax scores.
/// </summary>
internal static class RerankEndpoints
{
    /// <summary>Documents or inputs per request, as the embeddings route allows.</summary>
    private const int MaxInputs = 2048;

    private const long MaxBodyBytes = 16L << 20;

    private static readonly HashSet<string> RerankFields = ["model", "query", "documents", "top_n", "return_documents"];
    private static readonly HashSet<string> ClassifyFields = ["model", "input"];

    public static async Task RerankAsync(HttpContext http, VeloEngine engine)
    {
        using var body = await RequestBody.ReadAsync(http.Request, MaxBodyBytes, http.RequestAborted);
        using var lease = await engine.AcquireAsync(body.String("model"), ModelKind.Encoder, null, http.RequestAborted);
        var model = Classifier(lease, "/v1/rerank");
        body.RefuseUnknownFields(RerankFields, "/v1/rerank");
        string query = body.String("query") ?? throw ApiException.BadRequest("'query' is required", "query");
        var documents = Strings(body, "documents");
        int topN = (int)(body.Integer("top_n", 1, int.MaxValue) ?? documents.Length);
        bool returnDocuments = body.Bool("return_documents") ?? false;

        float[] scores;
        long tokens;
        try
        {
            scores = model.Rerank(query, documents, out tokens);
        }
        catch (ArgumentException e)
        {
            throw ApiException.BadRequest(e.Message, "documents");
        }
        var order = Enumerable.Range(0, scores.Length).OrderByDescending(i => scores[i]).Take(topN);

        await using var json = Start(http);
        json.WriteStartObject();
        json.WriteString("model", lease.Model.Id);
        json.WriteStartArray("results");
        foreach (int i in order)
        {
            json.WriteStartObject();
            json.WriteNumber("index", i);
            json.WriteNumber("relevance_score", scores[i]);
            if (returnDocuments)
            {
                json.WriteStartObject("document");
                json.WriteString("text", documents[i]);
                json.WriteEndObject();
            }
            json.WriteEndObject();
        }
        json.WriteEndArray();
        WriteUsage(json, tokens);
        json.WriteEndObject();
    }

    public static async Task ClassifyAsync(HttpContext http, VeloEngine engine)
    {
        using var body = await RequestBody.ReadAsync(http.Request, MaxBodyBytes, http.RequestAborted);
        using var lease = await engine.AcquireAsync(body.String("model"), ModelKind.Encoder, null, http.RequestAborted);
        var model = Classifier(lease, "/v1/classify");
        body.RefuseUnknownFields(ClassifyFields, "/v1/classify");
        string[] texts = body.Field("input") is { ValueKind: JsonValueKind.String } single ? [single.GetString()!] : Strings(body, "input");

        float[][] logits;
        int[][] inputs;
        try
        {
            inputs = texts.Select(model.Tokenize).ToArray();
            logits = model.EmbedTokens(inputs);
        }
        catch (ArgumentException e)
        {
            throw ApiException.BadRequest(e.Message, "input");
        }

        await using var json = Start(http);
        json.WriteStartObject();
        json.WriteString("object", "list");
        json.WriteString("model", lease.Model.Id);
        json.WriteStartArray("data");
        for (int i = 0; i < logits.Length; i++)
        {
            var scores = new float[logits[i].Length];
            System.Numerics.Tensors.TensorPrimitives.SoftMax(logits[i], scores);
            json.WriteStartObject();
            json.WriteNumber("index", i);
            json.WriteStartArray("labels");
            foreach (int l in Enumerable.Range(0, scores.Length).OrderByDescending(l => scores[l]))
            {
                json.WriteStartObject();
                json.WriteString("label", model.Labels[l]);
                json.WriteNumber("score", scores[l]);
                json.WriteEndObject();
            }
            json.WriteEndArray();
            json.WriteEndObject();
        }
        json.WriteEndArray();
        WriteUsage(json, inputs.Sum(t => (long)t.Length));
        json.WriteEndObject();
    }

    /// <summary>The leased encoder when it has a classification head; a 400 saying what the model is otherwise.</summary>
    private static VeloEmbeddingGenerator Classifier(ModelLease lease, string route)
    {
        var model = lease.Embeddings;
        return model.Labels.Count > 0 ? model : throw ApiException.BadRequest(
            $"the model '{lease.Model.Id}' is an embedding model without a classification head (cls tensors, rank pooling): {route} needs a reranker or classifier",
            "model", "model_not_supported");
    }

    private static string[] Strings(RequestBody body, string name)
    {
        var array = body.Field(name) ?? throw ApiException.BadRequest($"'{name}' is required", name);
        if (array.ValueKind != JsonValueKind.Array || array.EnumerateArray().Any(e => e.ValueKind != JsonValueKind.String))
            throw RequestBody.WrongType(name, "an array of strings");
        int count = array.GetArrayLength();
        if (count == 0) throw ApiException.BadRequest($"'{name}' must not be empty", name);
        if (count > MaxInputs) throw ApiException.BadRequest($"'{name}' may hold at most {MaxInputs} items, got {count}", name);
        return array.EnumerateArray().Select(e => e.GetString()!).ToArray();
    }

    private static Utf8JsonWriter Start(HttpContext http)
    {
        http.Response.StatusCode = 200;
        http.Response.ContentType = "application/json";
        return new Utf8JsonWriter(http.Response.Body, JsonOutput.Options);
    }

    private static void WriteUsage(Utf8JsonWriter json, long tokens)
    {
        json.WriteStartObject("usage");
        json.WriteNumber("prompt_tokens", tokens);
        json.WriteNumber("total_tokens", tokens);
        json.WriteEndObject();
    }
}
