using Velo.Sampling;
using System.Buffers;
using System.Text;
using System.Text.Json;
using Microsoft.AspNetCore.Http;
using Velo.Generation;
using Velo.Inference;
using Velo.Text;
using Velo.Tools;

namespace Velo.Server;

/// <summary>How one endpoint spells its responses: the whole answer, stream chunks and the usage chunk.</summary>
internal abstract class ResponseShape(string model, string idPrefix)
{
    protected string Model { get; } = model;
    protected string Id { get; } = idPrefix + Guid.NewGuid().ToString("N")[..24];
    protected long Created { get; } = DateTimeOffset.UtcNow.ToUnixTimeSeconds();

    /// <summary>The request field the prompt came from, for errors about it.</summary>
    public abstract string PromptParam { get; }

    /// <summary>Whether every chunk carries <c>"usage": null</c> before the final usage chunk, as OpenAI's do.</summary>
    public bool IncludeUsage { get; set; }

    /// <param name="calls">The tool calls read out of the output (chat only); null when tools were not in play.</param>
    public abstract void WriteWhole(Utf8JsonWriter json, string text, IReadOnlyList<ToolCall>? calls, IReadOnlyList<GeneratedPiece>? logprobs,
        GenerationSummary summary, TokenizerBase tokenizer);

    public abstract void WriteChunk(Utf8JsonWriter json, string text, IReadOnlyList<GeneratedPiece>? logprobs, FinishReason? finish, bool first, TokenizerBase tokenizer);

    public abstract void WriteUsageChunk(Utf8JsonWriter json, GenerationSummary summary);

    protected void WriteHeader(Utf8JsonWriter json, string objectType)
    {
        json.WriteString("id", Id);
        json.WriteString("object", objectType);
        json.WriteNumber("created", Created);
        json.WriteString("model", Model);
    }

    protected static void WriteUsage(Utf8JsonWriter json, GenerationSummary summary)
    {
        json.WriteStartObject("usage");
        json.WriteNumber("prompt_tokens", summary.PromptTokens);
        json.WriteNumber("completion_tokens", summary.GeneratedTokens);
        json.WriteNumber("total_tokens", summary.PromptTokens + summary.GeneratedTokens);
        json.WriteStartObject("prompt_tokens_details");
        json.WriteNumber("cached_tokens", summary.CachedPromptTokens);
        json.WriteEndObject();
        json.WriteEndObject();
    }

    protected virtual string FinishReasonName(FinishReason reason) => reason == FinishReason.Length ? "length" : "stop";

    protected static string TokenText(TokenizerBase tokenizer, int id) => Encoding.UTF8.GetString(tokenizer.TokenBytes(id));
}

internal sealed class ChatShape(string model) : ResponseShape(model, "chatcmpl-")
{
    /// <summary>Set once a tool call is written: the finish reason is then <c>tool_calls</c>.</summary>
    private bool _calledTools;

    public override string PromptParam => "messages";

    protected override string FinishReasonName(FinishReason reason) => _calledTools ? "tool_calls" : base.FinishReasonName(reason);

    public override void WriteWhole(Utf8JsonWriter json, string text, IReadOnlyList<ToolCall>? calls, IReadOnlyList<GeneratedPiece>? logprobs,
        GenerationSummary summary, TokenizerBase tokenizer)
    {
        _calledTools = calls is { Count: > 0 };
        json.WriteStartObject();
        WriteHeader(json, "chat.completion");
        json.WriteStartArray("choices");
        json.WriteStartObject();
        json.WriteNumber("index", 0);
        json.WriteStartObject("message");
        json.WriteString("role", "assistant");
        // OpenAI's content is null in a message that only calls tools.
        if (_calledTools && text.Length == 0) json.WriteNull("content");
        else json.WriteString("content", text);
        json.WriteNull("refusal");
        if (_calledTools)
        {
            json.WriteStartArray("tool_calls");
            foreach (var call in calls!)
            {
                json.WriteStartObject();
                json.WriteString("id", call.Id);
                json.WriteString("type", "function");
                json.WriteStartObject("function");
                json.WriteString("name", call.Name);
                json.WriteString("arguments", call.Arguments);
                json.WriteEndObject();
                json.WriteEndObject();
            }
            json.WriteEndArray();
        }
        json.WriteEndObject();
        WriteLogprobs(json, logprobs, tokenizer);
        json.WriteString("finish_reason", FinishReasonName(summary.FinishReason));
        json.WriteEndObject();
        json.WriteEndArray();
        WriteUsage(json, summary);
        json.WriteEndObject();
    }

    public override void WriteChunk(Utf8JsonWriter json, string text, IReadOnlyList<GeneratedPiece>? logprobs, FinishReason? finish, bool first, TokenizerBase tokenizer)
    {
        json.WriteStartObject();
        WriteHeader(json, "chat.completion.chunk");
        json.WriteStartArray("choices");
        json.WriteStartObject();
        json.WriteNumber("index", 0);
        json.WriteStartObject("delta");
        if (first) json.WriteString("role", "assistant");
        if (first || text.Length > 0) json.WriteString("content", text);
        json.WriteEndObject();
        WriteLogprobs(json, logprobs, tokenizer);
        if (finish is { } reason) json.WriteString("finish_reason", FinishReasonName(reason));
        else json.WriteNull("finish_reason");
        json.WriteEndObject();
        json.WriteEndArray();
        if (IncludeUsage) json.WriteNull("usage");
        json.WriteEndObject();
    }

    /// <summary>
    /// One chunk of a call as OpenAI streams it: the <paramref name="header"/> with its index, id, type and name (and
    /// empty arguments), then one with its arguments; a client appends each call's argument deltas by index.
    /// </summary>
    public void WriteToolCallDelta(Utf8JsonWriter json, int index, ToolCall call, bool header)
    {
        _calledTools = true;
        json.WriteStartObject();
        WriteHeader(json, "chat.completion.chunk");
        json.WriteStartArray("choices");
        json.WriteStartObject();
        json.WriteNumber("index", 0);
        json.WriteStartObject("delta");
        json.WriteStartArray("tool_calls");
        json.WriteStartObject();
        json.WriteNumber("index", index);
        if (header)
        {
            json.WriteString("id", call.Id);
            json.WriteString("type", "function");
        }
        json.WriteStartObject("function");
        if (header) json.WriteString("name", call.Name);
        json.WriteString("arguments", header ? "" : call.Arguments);
        json.WriteEndObject();
        json.WriteEndObject();
        json.WriteEndArray();
        json.WriteEndObject();
        json.WriteNull("logprobs");
        json.WriteNull("finish_reason");
        json.WriteEndObject();
        json.WriteEndArray();
        if (IncludeUsage) json.WriteNull("usage");
        json.WriteEndObject();
    }

    public override void WriteUsageChunk(Utf8JsonWriter json, GenerationSummary summary)
    {
        json.WriteStartObject();
        WriteHeader(json, "chat.completion.chunk");
        json.WriteStartArray("choices");
        json.WriteEndArray();
        WriteUsage(json, summary);
        json.WriteEndObject();
    }

    private static void WriteLogprobs(Utf8JsonWriter json, IReadOnlyList<GeneratedPiece>? pieces, TokenizerBase tokenizer)
    {
        if (pieces == null)
        {
            json.WriteNull("logprobs");
            return;
        }
        json.WriteStartObject("logprobs");
        json.WriteStartArray("content");
        foreach (var piece in pieces)
        {
            json.WriteStartObject();
            WriteToken(json, tokenizer, piece.Logprob!.Value);
            json.WriteStartArray("top_logprobs");
            foreach (var alternative in piece.TopLogprobs ?? [])
            {
                json.WriteStartObject();
                WriteToken(json, tokenizer, alternative);
                json.WriteEndObject();
            }
            json.WriteEndArray();
            json.WriteEndObject();
        }
        json.WriteEndArray();
        json.WriteNull("refusal");
        json.WriteEndObject();
    }

    private static void WriteToken(Utf8JsonWriter json, TokenizerBase tokenizer, TokenLogprob token)
    {
        json.WriteString("token", TokenText(tokenizer, token.Id));
        json.WriteNumber("logprob", token.Logprob);
        json.WriteStartArray("bytes");
        foreach (byte b in tokenizer.TokenBytes(token.Id)) json.WriteNumberValue(b);
        json.WriteEndArray();
    }
}

internal sealed class CompletionShape(string model) : ResponseShape(model, "cmpl-")
{
    private int _textOffset;

    public override string PromptParam => "prompt";

    public override void WriteWhole(Utf8JsonWriter json, string text, IReadOnlyList<ToolCall>? calls, IReadOnlyList<GeneratedPiece>? logprobs,
        GenerationSummary summary, TokenizerBase tokenizer)
    {
        json.WriteStartObject();
        WriteHeader(json, "text_completion");
        WriteChoices(json, text, logprobs, summary.FinishReason, tokenizer);
        WriteUsage(json, summary);
        json.WriteEndObject();
    }

    public override void WriteChunk(Utf8JsonWriter json, string text, IReadOnlyList<GeneratedPiece>? logprobs, FinishReason? finish, bool first, TokenizerBase tokenizer)
    {
        // The legacy stream has no role chunk; the first call only opens the stream.
        if (first) return;
        json.WriteStartObject();
        WriteHeader(json, "text_completion");
        WriteChoices(json, text, logprobs, finish, tokenizer);
        if (IncludeUsage) json.WriteNull("usage");
        json.WriteEndObject();
    }

    public override void WriteUsageChunk(Utf8JsonWriter json, GenerationSummary summary)
    {
        json.WriteStartObject();
        WriteHeader(json, "text_completion");
        json.WriteStartArray("choices");
        json.WriteEndArray();
        WriteUsage(json, summary);
        json.WriteEndObject();
    }

    private void WriteChoices(Utf8JsonWriter json, string text, IReadOnlyList<GeneratedPiece>? logprobs, FinishReason? finish, TokenizerBase tokenizer)
    {
        json.WriteStartArray("choices");
        json.WriteStartObject();
        json.WriteString("text", text);
        json.WriteNumber("index", 0);
        if (logprobs == null) json.WriteNull("logprobs");
        else
        {
            // The legacy format: parallel lists of tokens, their logprobs, the alternatives and text offsets.
            json.WriteStartObject("logprobs");
            json.WriteStartArray("tokens");
            foreach (var piece in logprobs) json.WriteStringValue(TokenText(tokenizer, piece.TokenId));
            json.WriteEndArray();
            json.WriteStartArray("token_logprobs");
            foreach (var piece in logprobs) json.WriteNumberValue(piece.Logprob!.Value.Logprob);
            json.WriteEndArray();
            json.WriteStartArray("top_logprobs");
            foreach (var piece in logprobs)
            {
                json.WriteStartObject();
                foreach (var alternative in piece.TopLogprobs ?? []) json.WriteNumber(TokenText(tokenizer, alternative.Id), alternative.Logprob);
                json.WriteEndObject();
            }
            json.WriteEndArray();
            json.WriteStartArray("text_offset");
            foreach (var piece in logprobs)
            {
                json.WriteNumberValue(_textOffset);
                _textOffset += TokenText(tokenizer, piece.TokenId).Length;
            }
            json.WriteEndArray();
            json.WriteEndObject();
        }
        if (finish is { } reason) json.WriteString("finish_reason", FinishReasonName(reason));
        else json.WriteNull("finish_reason");
        json.WriteEndObject();
        json.WriteEndArray();
    }
}

/// <summary>
/// Writes <c>data: JSON</c> events into the response's pipe. Events are buffered until <see cref="FlushAsync"/>,
/// so a caller that has several ready sends them in one socket write (and one HTTP chunk) instead of one each.
/// </summary>
internal sealed class ServerSentEvents(HttpResponse response)
{
    private readonly System.Buffers.ArrayBufferWriter<byte> _buffer = new();
    private Utf8JsonWriter? _json;

    /// <summary>Buffers one event; writes nothing when <paramref name="write"/> writes nothing.</summary>
    public void Write(Action<Utf8JsonWriter> write)
    {
        _buffer.ResetWrittenCount();
        if (_json == null) _json = new Utf8JsonWriter(_buffer, JsonOutput.Options);
        else _json.Reset(_buffer);
        write(_json);
        _json.Flush();
        if (_buffer.WrittenCount == 0) return;
        var pipe = response.BodyWriter;
        pipe.Write("data: "u8);
        pipe.Write(_buffer.WrittenSpan);
        pipe.Write("\n\n"u8);
    }

    public void WriteDone() => response.BodyWriter.Write("data: [DONE]\n\n"u8);

    /// <summary>Sends what was written; a client that has gone away ends the response with an OperationCanceledException.</summary>
    public async Task FlushAsync(CancellationToken cancellation)
    {
        var result = await response.BodyWriter.FlushAsync(cancellation);
        // A pipe whose reader has completed takes no more output and says so only here, without an exception.
        if (result.IsCompleted || result.IsCanceled)
            throw new OperationCanceledException("the client stopped reading the stream");
    }
}
