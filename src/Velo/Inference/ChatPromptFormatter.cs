using Velo.Text;
using Velo.Text.ChatTemplates;

namespace Velo.Inference;

/// <summary>
/// Turns a conversation into prompt tokens with the model's own chat template, or ChatML when the model has none
/// (or one this engine cannot parse). Special tokens written by the template (<c>&lt;|im_start|&gt;</c>,
/// <c>&lt;|eot_id|&gt;</c>...) are encoded as the tokens they name when the vocabulary has them, else as text.
/// </summary>
public sealed class ChatPromptFormatter
{
    private const string ChatMlEndOfTurn = "<|im_end|>";
    private readonly TokenizerBase _tokenizer;
    private readonly string? _templateSource;

    public ChatPromptFormatter(LanguageModel model) : this(model.Tokenizer, model.ChatTemplate)
    {
    }

    /// <param name="templateSource">The model's Jinja chat template; null for none (ChatML is used).</param>
    public ChatPromptFormatter(TokenizerBase tokenizer, string? templateSource)
    {
        _tokenizer = tokenizer;
        _templateSource = templateSource;
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
        }
    }

    public ChatTemplate Template { get; }

    /// <summary>Why ChatML is used instead of the model's template; null when the model's own is used.</summary>
    public string? FallbackReason { get; }

    /// <summary>
    /// Stop strings a chat needs besides the model's end-of-generation tokens: with the ChatML fallback a model
    /// that was not trained on it has no end-of-turn token, and may write the end-of-turn marker as text.
    /// </summary>
    public IReadOnlyList<string> StopStrings => FallbackReason != null ? [ChatMlEndOfTurn] : [];

    public string Render(IReadOnlyList<ChatMessage> messages, bool addGenerationPrompt = true)
    {
        var tokenizer = _tokenizer;
        string bos = tokenizer.BosId >= 0 ? tokenizer.TokenText(tokenizer.BosId) : "";
        string eos = tokenizer.EosId >= 0 ? tokenizer.TokenText(tokenizer.EosId) : "";
        return Template.Render(messages, addGenerationPrompt, bos, eos);
    }

    /// <summary>
    /// The prompt tokens for a conversation, ending with the assistant's turn opened. Only the template's own markup
    /// becomes control tokens: a message that contains the text of one (<c>&lt;|im_end|&gt;</c>, <c>&lt;|eot_id|&gt;</c>)
    /// is tokenized as that plain text, so no message can forge a turn of another role.
    /// </summary>
    /// <exception cref="ChatTemplateException">The template rejected the conversation (for example, roles out of order).</exception>
    /// <exception cref="ArgumentException">The messages use every character that could mark their text as literal.</exception>
    public int[] Format(IReadOnlyList<ChatMessage> messages)
    {
        var tokenizer = _tokenizer;
        var marker = LiteralTextMarker.Create(tokenizer, messages.Select(m => m.Content), _templateSource);
        var shielded = messages.Select(m => m with { Content = marker.Protect(m.Content) }).ToList();
        int[] tokens = tokenizer.Encode(marker.Prompt(Render(shielded)), addSpecial: true);
        // Templates such as Llama 3's write the BOS token themselves; the tokenizer adds another.
        if (tokens.Length >= 2 && tokenizer.AddBos && tokens[0] == tokenizer.BosId && tokens[1] == tokenizer.BosId) return tokens[1..];
        return tokens;
    }
}
