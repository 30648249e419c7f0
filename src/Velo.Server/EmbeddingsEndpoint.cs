using System.Runtime.InteropServices;
using System.Text.Json;
using Microsoft.AspNetCore.Http;
using Velo.Inference;

namespace Velo.Server;

/// <summary>
/// <c>POST /v1/embeddings</c> in OpenAI's schema: <c>input</c> as a string, an array of strings, an array of token
/// ids or an array of such arrays; <c>encoding_format</c> float or base64 (little-endian float32); <c>dimensions</c>
/// keeps the first dimensions, renormalized; <c>usage</c> counts the tokens embedded.
/// </summary>
internal static class EmbeddingsEndpoint
{
    /// <summary>OpenAI's fields; <c>user</c> (an end-user id for abuse monitoring) is accepted and changes nothing.</summary>
    private static readonly HashSet<string> Fields = ["model", "input", "encoding_format", "dimensions", "user"];

    /// <summary>OpenAI's limit on inputs per request.</summary>
    private const int MaxInputs = 2048;

    /// <summary>Room for 2048 inputs of a few thousand characters each; the parsed document is bounded by it.</summary>
    private const long MaxBodyBytes = 16L << 20;

    public static async Task HandleAsync(HttpContext http, VeloEngine engine)
    {
        using var body = await RequestBody.ReadAsync(http.Request, MaxBodyBytes, http.RequestAborted);
        using var lease = await engine.AcquireAsync(body.String("model"), ModelKind.Encoder, null, http.RequestAborted);
        body.RefuseUnknownFields(Fields, "/v1/embeddings");
        var embeddings = lease.Embeddings;
        var inputs = Inputs(body.Field("input") ?? throw ApiException.BadRequest("'input' is required", "input"), embeddings);
        string format = body.String("encoding_format") ?? "float";
        if (format is not ("float" or "base64")) throw ApiException.BadRequest($"'encoding_format' must be float or base64, not '{format}'", "encoding_format");
        int dimensions = (int)(body.Integer("dimensions", 1, embeddings.Dimensions) ?? embeddings.Dimensions);

        float[][] vectors;
        try
        {
            vectors = embeddings.EmbedTokens(inputs);
        }
        catch (ArgumentException e)
        {
            throw ApiException.BadRequest(e.Message, "input");
        }
        long tokens = inputs.Sum(i => (long)i.Length);
        http.Response.StatusCode = 200;
        http.Response.ContentType = "application/json";
        await using var json = new Utf8JsonWriter(http.Response.Body, JsonOutput.Options);
        json.WriteStartObject();
        json.WriteString("object", "list");
        json.WriteStartArray("data");
        for (int i = 0; i < vectors.Length; i++)
        {
            var vector = VeloEmbeddingGenerator.WithDimensions(vectors[i], dimensions);
            json.WriteStartObject();
            json.WriteString("object", "embedding");
            json.WriteNumber("index", i);
            if (format == "base64")
            {
                json.WriteBase64String("embedding", MemoryMarshal.AsBytes(vector.AsSpan()));
            }
            else
            {
                json.WriteStartArray("embedding");
                foreach (float v in vector) json.WriteNumberValue(v);
                json.WriteEndArray();
            }
            json.WriteEndObject();
        }
        json.WriteEndArray();
        json.WriteString("model", lease.Model.Id);
        json.WriteStartObject("usage");
        json.WriteNumber("prompt_tokens", tokens);
        json.WriteNumber("total_tokens", tokens);
        json.WriteEndObject();
        json.WriteEndObject();
    }

    /// <summary>The request's inputs as token ids: texts tokenized (and cut to the model's limit), token arrays checked.</summary>
    private static int[][] Inputs(JsonElement input, VeloEmbeddingGenerator embeddings)
    {
        switch (input.ValueKind)
        {
            case JsonValueKind.String:
                return [embeddings.Tokenize(input.GetString()!)];
            case JsonValueKind.Array:
                int count = input.GetArrayLength();
                if (count == 0) throw ApiException.BadRequest("'input' must not be empty", "input");
                if (count > MaxInputs) throw ApiException.BadRequest($"'input' may hold at most {MaxInputs} inputs, got {count}", "input");
                var first = input[0];
                if (first.ValueKind == JsonValueKind.Number) return [TokenArray(input, embeddings)];
                var result = new int[count][];
                int index = 0;
                foreach (var item in input.EnumerateArray())
                    result[index++] = item.ValueKind switch
                    {
                        JsonValueKind.String => embeddings.Tokenize(item.GetString()!),
                        JsonValueKind.Array => TokenArray(item, embeddings),
                        _ => throw ApiException.BadRequest("'input' must be a string, an array of strings, an array of token ids or an array of such arrays", "input"),
                    };
                return result;
            default:
                throw ApiException.BadRequest("'input' must be a string, an array of strings, an array of token ids or an array of such arrays", "input");
        }
    }

    private static int[] TokenArray(JsonElement array, VeloEmbeddingGenerator embeddings)
    {
        int length = array.GetArrayLength();
        if (length == 0) throw ApiException.BadRequest("a token array in 'input' is empty", "input");
        if (length > embeddings.MaxInputTokens)
            throw ApiException.BadRequest($"a token array in 'input' has {length} tokens, more than the model's {embeddings.MaxInputTokens}", "input");
        var ids = new int[length];
        int i = 0;
        foreach (var item in array.EnumerateArray())
        {
            if (item.ValueKind != JsonValueKind.Number || !item.TryGetInt32(out int id) || (uint)id >= (uint)embeddings.VocabSize)
                throw ApiException.BadRequest($"'input' holds {item.GetRawText()}, which is not a token id of the model's {embeddings.VocabSize}", "input");
            ids[i++] = id;
        }
        return ids;
    }
}
