using Velo.Text;
using Velo.Text.ChatTemplates;
using Velo.Tools;

namespace Velo.Inference;

/// <summary>
/// Turns a conversation into prompt tokens with the model's own chat template, or ChatML when the model has none
/// (or one this engine cannot parse). Special tokens written by the template (<c>&lt;|im_start|&gt;</c>,
/// <c>&lt;|eot_id|&gt;</c>...) are encoded as the tokens they name when the vocabulary has them, else as text.
/// Tools go to a template that reads the <c>tools</c> variable as Hugging Face passes them; any other template gets
/// <see cref="FallbackToolPrompt"/>. <see cref="ToolFormat"/> says how the model will write its calls.
/// </summary>
public sealed class ChatPromptFormatter
{
    private const string ChatMlEndOfTurn = "<|im_end|>";
    private readonly TokenizerBase _tokenizer;
    private readonly string? _templateSource;

    public ChatPromptFormatter(LanguageModel model) : this(model.Tokenizer, model.ChatTemplate, model.Info.Architecture)
    {
    }

    /// <param name="templateSource">The model's Jinja chat template; null for none (ChatML is used).</param>
    /// <param name="architecture">The model's <c>general.architecture</c>, which picks the tool-call format where the template does not show it.</param>
    public ChatPromptFormatter(TokenizerBase tokenizer, string? templateSource, string architecture = "")
    {
        _tokenizer = tokenizer;
        _templateSource = templateSource;
        ToolFormat = ToolCallFormat.Fallback;
        if (templateSource is not { } source)
        {
            Template = ChatTemplate.ChatMl;
            FallbackReason = "the model has no chat template";
            return;
        }
        try
        {
            Template = ChatTemplate.Parse(source);
        }
        catch (ChatTemplateException e)
        {
            Template = ChatTemplate.ChatMl;
            FallbackReason = $"the model's chat template cannot be used ({e.Message})";
            return;
        }
        RendersTools = ToolCallFormat.TemplateRendersTools(source);
        ToolFormat = ToolCallFormat.For(source, architecture);
    }

    public ChatTemplate Template { get; }

    /// <summary>Whether the template renders tools itself; otherwise <see cref="FallbackToolPrompt"/> offers them.</summary>
    public bool RendersTools { get; }

    /// <summary>How the model writes tool calls, for <see cref="ToolCallParser"/>.</summary>
    public ToolCallFormat ToolFormat { get; }

    /// <summary>Why ChatML is used instead of the model's template; null when the model's own is used.</summary>
    public string? FallbackReason { get; }

    /// <summary>
    /// Stop strings a chat needs besides the model's end-of-generation tokens: with the ChatML fallback a model
    /// that was not trained on it has no end-of-turn token, and may write the end-of-turn marker as text.
    /// </summary>
    public IReadOnlyList<string> StopStrings => FallbackReason != null ? [ChatMlEndOfTurn] : [];

    /// <param name="tools">Tools to offer the model; null or empty for none.</param>
    public string Render(IReadOnlyList<ChatMessage> messages, bool addGenerationPrompt = true, IReadOnlyList<ToolDefinition>? tools = null) =>
        Render(messages, tools ?? [], addGenerationPrompt, text => text);

    private string Render(IReadOnlyList<ChatMessage> messages, IReadOnlyList<ToolDefinition> tools, bool addGenerationPrompt, Func<string, string> literal)
    {
        var tokenizer = _tokenizer;
        string bos = tokenizer.BosId >= 0 ? tokenizer.TokenText(tokenizer.BosId) : "";
        string eos = tokenizer.EosId >= 0 ? tokenizer.TokenText(tokenizer.EosId) : "";
        if (RendersTools)
        {
            var extra = new Dictionary<string, object?>
            {
                ["messages"] = messages.Select(message => TemplateValues.Message(message, literal)).ToList(),
                ["tools"] = tools.Count > 0 ? tools.Select(tool => TemplateValues.Tool(tool, literal)).ToList() : null,
            };
            return Template.Render(messages, addGenerationPrompt, bos, eos, extra);
        }
        var plain = FallbackToolPrompt.Rewrite(messages, tools);
        var marked = plain.Select(message => message with { Content = literal(message.Content) }).ToList();
        try
        {
            return Template.Render(marked, addGenerationPrompt, bos, eos);
        }
        catch (ChatTemplateException) when (tools.Count > 0 && marked.Count > 1 && marked[1].Role == "user")
        {
            // A template without a system role (Gemma 1 and 2 refuse one): the tools' prompt opens the first user turn.
            marked[1] = marked[1] with { Content = marked[0].Content + "\n\n" + marked[1].Content };
            marked.RemoveAt(0);
            return Template.Render(marked, addGenerationPrompt, bos, eos);
        }
    }

    /// <summary>
    /// The prompt tokens for a conversation, ending with the assistant's turn opened. Only the template's own markup
    /// becomes control tokens: a message that contains the text of one (<c>&lt;|im_end|&gt;</c>, <c>&lt;|eot_id|&gt;</c>)
    /// is tokenized as that plain text, so no message can forge a turn of another role. The same holds for every text
    /// of tool calls, tool results and tool definitions.
    /// </summary>
    /// <exception cref="ChatTemplateException">The template rejected the conversation (for example, roles out of order).</exception>
    /// <exception cref="ArgumentException">The messages use every character that could mark their text as literal.</exception>
    public int[] Format(IReadOnlyList<ChatMessage> messages, IReadOnlyList<ToolDefinition>? tools = null)
    {
        var tokenizer = _tokenizer;
        tools ??= [];
        var marker = LiteralTextMarker.Create(tokenizer, UntrustedTexts(messages, tools), _templateSource);
        int[] tokens = tokenizer.Encode(marker.Prompt(Render(messages, tools, addGenerationPrompt: true, marker.Protect)), addSpecial: true);
        // Templates such as Llama 3's write the BOS token themselves; the tokenizer adds another.
        if (tokens.Length >= 2 && tokenizer.AddBos && tokens[0] == tokenizer.BosId && tokens[1] == tokenizer.BosId) return tokens[1..];
        return tokens;
    }

    private static IEnumerable<string> UntrustedTexts(IReadOnlyList<ChatMessage> messages, IReadOnlyList<ToolDefinition> tools)
    {
        foreach (var message in messages)
        {
            yield return message.Content;
            if (message.ToolCallId != null) yield return message.ToolCallId;
            foreach (var call in message.ToolCalls ?? [])
            {
                yield return call.Id;
                yield return call.Name;
                yield return call.Arguments;
            }
        }
        foreach (var tool in tools)
        {
            yield return tool.Name;
            if (tool.Description != null) yield return tool.Description;
            if (tool.Parameters is { } parameters)
                foreach (string text in JsonTexts(parameters)) yield return text;
        }
    }

    /// <summary>The names and strings of a JSON value, decoded, as the template will see them.</summary>
    private static IEnumerable<string> JsonTexts(System.Text.Json.JsonElement json) => json.ValueKind switch
    {
        System.Text.Json.JsonValueKind.Object => json.EnumerateObject().SelectMany(property => JsonTexts(property.Value).Prepend(property.Name)),
        System.Text.Json.JsonValueKind.Array => json.EnumerateArray().SelectMany(JsonTexts),
        System.Text.Json.JsonValueKind.String => [json.GetString()!],
        _ => [],
    };
}
