namespace Velo.Text.ChatTemplates;

/// <summary>
/// A model's Jinja chat template (<c>tokenizer.chat_template</c>), parsed once and rendered per conversation the way
/// Hugging Face's <c>apply_chat_template</c> renders it. Immutable, so one instance can serve concurrent requests.
/// </summary>
/// <remarks>
/// Supports the Jinja used by chat templates: <c>{{ }}</c>, <c>{% %}</c>, <c>{# #}</c> with <c>-</c>/<c>+</c>
/// whitespace control and transformers' trim_blocks/lstrip_blocks; if/elif/else, for (loop.*, else, inline if
/// filter, break/continue), set (tuples, blocks, namespace attributes), macros, generation blocks; Python operators,
/// literals, slicing, str and dict methods; the common filters and tests; the globals raise_exception,
/// strftime_now, namespace, range and dict. Not supported: raw, call, filter blocks, include/import/extends, and
/// recursive loops. Output size, loop iterations, macro depth, nesting and time are capped, so a hostile template
/// fails with a <see cref="ChatTemplateException"/> instead of hanging.
/// </remarks>
public sealed class ChatTemplate
{
    /// <summary>transformers' ChatML template, for models that ship none.</summary>
    private const string ChatMlSource =
        "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}" +
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

    private readonly IReadOnlyList<Node> _body;

    private ChatTemplate(IReadOnlyList<Node> body) => _body = body;

    public static ChatTemplate ChatMl { get; } = Parse(ChatMlSource);

    /// <exception cref="ChatTemplateException">The template is not valid, or uses a tag, filter or test this engine lacks.</exception>
    public static ChatTemplate Parse(string jinjaSource)
    {
        ArgumentNullException.ThrowIfNull(jinjaSource);
        return new ChatTemplate(Parser.Parse(jinjaSource));
    }

    /// <summary>
    /// Renders the prompt. The template sees <c>messages</c>, <c>add_generation_prompt</c>, <c>bos_token</c>,
    /// <c>eos_token</c> and <c>tools</c> (none), then every entry of <paramref name="extra"/>, which may override them
    /// (e.g. <c>tools</c>, <c>enable_thinking</c>, or <c>messages</c> with fields beyond role and content). Extra
    /// values may be strings, numbers, booleans, null, dictionaries, enumerables, <see cref="ChatMessage"/>s or
    /// <see cref="System.Text.Json.JsonElement"/>s.
    /// </summary>
    /// <exception cref="ChatTemplateException">Rendering failed, the template called <c>raise_exception</c>, or a safety cap was hit.</exception>
    public string Render(IReadOnlyList<ChatMessage> messages, bool addGenerationPrompt, string bosToken, string eosToken,
        IReadOnlyDictionary<string, object?>? extra = null) =>
        Render(messages, addGenerationPrompt, bosToken, eosToken, extra, TimeProvider.System, RenderLimits.Default);

    internal string Render(IReadOnlyList<ChatMessage> messages, bool addGenerationPrompt, string bosToken, string eosToken,
        IReadOnlyDictionary<string, object?>? extra, TimeProvider clock, RenderLimits limits)
    {
        ArgumentNullException.ThrowIfNull(messages);
        var variables = new Scope(Globals.Create(clock));
        variables.Set("messages", Py.FromClr(messages));
        variables.Set("add_generation_prompt", addGenerationPrompt);
        variables.Set("bos_token", bosToken);
        variables.Set("eos_token", eosToken);
        variables.Set("tools", null);
        if (extra != null)
            foreach (var (name, value) in extra)
                variables.Set(name, Py.FromClr(value));
        return new Renderer(limits).Render(_body, variables);
    }
}
