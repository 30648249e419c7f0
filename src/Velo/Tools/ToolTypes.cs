using System.Security.Cryptography;
using System.Text.Json;

namespace Velo.Tools;

/// <summary>A function the model may call: OpenAI's <c>{"type": "function", "function": {name, description, parameters}}</c>.</summary>
/// <param name="Parameters">The JSON Schema of the arguments object; null for a function without parameters.</param>
public sealed record ToolDefinition(string Name, string? Description = null, JsonElement? Parameters = null);

public enum ToolChoiceMode
{
    /// <summary>The model decides whether to call a tool.</summary>
    Auto,

    /// <summary>The model never calls a tool: tools are not shown to it and its output is never parsed for calls.</summary>
    None,

    /// <summary>The model must call at least one tool.</summary>
    Required,

    /// <summary>The model must call the function named by <see cref="ToolChoice.FunctionName"/>.</summary>
    Function,
}

/// <summary>OpenAI's <c>tool_choice</c>: <c>auto</c>, <c>none</c>, <c>required</c> or one named function.</summary>
public sealed record ToolChoice(ToolChoiceMode Mode, string? FunctionName = null)
{
    public static ToolChoice Auto { get; } = new(ToolChoiceMode.Auto);
    public static ToolChoice None { get; } = new(ToolChoiceMode.None);
    public static ToolChoice Required { get; } = new(ToolChoiceMode.Required);

    public static ToolChoice Function(string name) => new(ToolChoiceMode.Function, name ?? throw new ArgumentNullException(nameof(name)));

    /// <summary>Whether the output must be a call (and, once grammar-constrained decoding is attached, is made one).</summary>
    public bool ForcesCall => Mode is ToolChoiceMode.Required or ToolChoiceMode.Function;
}

/// <summary>The tools of one request: what the model is offered and how it may use them.</summary>
/// <param name="ParallelCalls">OpenAI's <c>parallel_tool_calls</c>: when false, only the first call of an output is kept.</param>
public sealed record ToolRequest(IReadOnlyList<ToolDefinition> Tools, ToolChoice Choice, bool ParallelCalls = true)
{
    /// <summary>Whether tools take part at all: some are given and the choice is not <c>none</c>.</summary>
    public bool IsActive => Tools.Count > 0 && Choice.Mode != ToolChoiceMode.None;
}

/// <summary>One call the model made: OpenAI's <c>{"id", "type": "function", "function": {"name", "arguments"}}</c>.</summary>
/// <param name="Arguments">The arguments object as JSON text, as the model wrote it.</param>
public sealed record ToolCall(string Id, string Name, string Arguments)
{
    private const string Alphanumerics = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

    /// <summary>A fresh id in OpenAI's style: <c>call_</c> and 24 random letters and digits.</summary>
    public static string NewId() => "call_" + RandomNumberGenerator.GetString(Alphanumerics, 24);

    /// <summary>Nine random letters and digits: the only id Mistral's chat templates accept back.</summary>
    public static string NewMistralId() => RandomNumberGenerator.GetString(Alphanumerics, 9);
}

/// <summary>A model's output split into its text and the calls it made.</summary>
public sealed record ToolCallOutput(string Content, IReadOnlyList<ToolCall> Calls);

/// <summary>One step of parsed output: text to show, or a complete call (the <paramref name="Index"/>-th of the output).</summary>
public readonly record struct ToolOutputPiece(string? Content, ToolCall? Call, int Index)
{
    public static ToolOutputPiece Text(string content) => new(content, null, -1);
    public static ToolOutputPiece ForCall(ToolCall call, int index) => new(null, call, index);
}
