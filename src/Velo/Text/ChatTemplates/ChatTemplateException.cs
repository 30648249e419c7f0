namespace Velo.Text.ChatTemplates;

/// <summary>What went wrong in a chat template, so a server can tell a client's fault from a template's.</summary>
public enum ChatTemplateErrorKind
{
    /// <summary>The template text is not valid Jinja, or uses a tag, filter or test this engine lacks.</summary>
    Syntax,

    /// <summary>Evaluation failed: an undefined value used, a type mismatch, a bad argument.</summary>
    Runtime,

    /// <summary>The template itself called <c>raise_exception</c>, usually because the messages break its rules.</summary>
    Raised,

    /// <summary>Rendering exceeded a safety cap on output size, loop iterations or nesting.</summary>
    LimitExceeded,
}

/// <summary>A chat template failed to parse or render. <see cref="Line"/> and <see cref="Column"/> are 1-based positions in the template source.</summary>
public sealed class ChatTemplateException : Exception
{
    public ChatTemplateException(ChatTemplateErrorKind kind, string message, int line, int column)
        : base(line > 0 ? $"{message} (template line {line}, column {column})" : message)
    {
        Kind = kind;
        Detail = message;
        Line = line;
        Column = column;
    }

    public ChatTemplateErrorKind Kind { get; }

    /// <summary>The message without the position, e.g. the text a template passed to <c>raise_exception</c>.</summary>
    public string Detail { get; }

    public int Line { get; }

    public int Column { get; }
}
