using Velo.Tools;

namespace Velo.Text.ChatTemplates;

/// <summary>One turn of a conversation as a chat template sees it: <c>message.role</c> and <c>message.content</c>,
/// and for tool use <c>message.tool_calls</c> (an assistant's calls) and <c>message.tool_call_id</c> (a tool's result).</summary>
public sealed record ChatMessage(string Role, string Content)
{
    /// <summary>The calls an assistant message made; null or empty for none.</summary>
    public IReadOnlyList<ToolCall>? ToolCalls { get; init; }

    /// <summary>For a <c>tool</c> message, the id of the call whose result it holds.</summary>
    public string? ToolCallId { get; init; }
}
