using System.Text;
using Velo.Text.ChatTemplates;

namespace Velo.Tools;

/// <summary>
/// Tool use for a chat template that cannot render tools itself (Llama 3.0, Gemma, Phi, ChatML): the tools go into
/// the system message in the Hermes convention Qwen and NousResearch's models use (signatures inside
/// <c>&lt;tools&gt;</c>, calls answered inside <c>&lt;tool_call&gt;</c>), earlier calls are written back as those
/// tags in the assistant's text, and tool results become user turns inside <c>&lt;tool_response&gt;</c>, so the
/// conversation keeps to the roles every template accepts.
/// </summary>
public static class FallbackToolPrompt
{
    /// <summary>The system text that offers the tools.</summary>
    public static string SystemPrompt(IReadOnlyList<ToolDefinition> tools)
    {
        var prompt = new StringBuilder();
        prompt.Append("# Tools\n\nYou may call one or more functions to help with the user's request. ");
        prompt.Append("The functions are described inside <tools></tools> XML tags:\n<tools>");
        foreach (var tool in tools)
            prompt.Append('\n').Append(Json.Dumps(Py.FromClr(TemplateValues.Tool(tool, text => text)), null, int.MaxValue));
        prompt.Append("\n</tools>\n\nTo call a function, answer with a JSON object holding its name and arguments inside <tool_call></tool_call> XML tags:\n");
        prompt.Append("<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call>");
        return prompt.ToString();
    }

    /// <summary>A call as the model is asked to write it.</summary>
    public static string CallText(ToolCall call) =>
        $"<tool_call>\n{{\"name\": {Json.Dumps(call.Name, null, int.MaxValue)}, \"arguments\": {call.Arguments}}}\n</tool_call>";

    /// <summary>
    /// The conversation in plain roles: assistant calls as text, tool results (consecutive ones together) as one user
    /// turn, and the tools' prompt first in the system message (a new one when there is none).
    /// </summary>
    public static List<ChatMessage> Rewrite(IReadOnlyList<ChatMessage> messages, IReadOnlyList<ToolDefinition> tools)
    {
        var rewritten = new List<ChatMessage>();
        if (tools.Count > 0)
        {
            string prompt = SystemPrompt(tools);
            if (messages.Count > 0 && messages[0].Role == "system")
                rewritten.Add(new ChatMessage("system", messages[0].Content.Length > 0 ? messages[0].Content + "\n\n" + prompt : prompt));
            else rewritten.Add(new ChatMessage("system", prompt));
        }
        for (int i = rewritten.Count > 0 && messages.Count > 0 && messages[0].Role == "system" ? 1 : 0; i < messages.Count; i++)
        {
            var message = messages[i];
            if (message.Role == "tool")
            {
                var results = new StringBuilder();
                for (; i < messages.Count && messages[i].Role == "tool"; i++)
                    results.Append(results.Length > 0 ? "\n" : "").Append("<tool_response>\n").Append(messages[i].Content).Append("\n</tool_response>");
                i--;
                rewritten.Add(new ChatMessage("user", results.ToString()));
            }
            else if (message.ToolCalls is { Count: > 0 } calls)
            {
                var text = new StringBuilder(message.Content);
                foreach (var call in calls) text.Append(text.Length > 0 ? "\n" : "").Append(CallText(call));
                rewritten.Add(new ChatMessage(message.Role, text.ToString()));
            }
            else rewritten.Add(message with { ToolCalls = null, ToolCallId = null });
        }
        return rewritten;
    }
}
