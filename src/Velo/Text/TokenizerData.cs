namespace Velo.Text;

/// <summary>The tokenization algorithm a vocabulary is meant for (GGUF <c>tokenizer.ggml.model</c>).</summary>
public enum TokenizerKind
{
    /// <summary>SentencePiece-style BPE over scored pieces with byte fallback (<c>llama</c>).</summary>
    SentencePiece,
    /// <summary>Byte-level BPE over ranked merges (<c>gpt2</c>).</summary>
    ByteLevelBpe,
    /// <summary>Greedy longest-match WordPiece (<c>bert</c>).</summary>
    WordPiece,
}

/// <summary>Token types as numbered by GGUF <c>tokenizer.ggml.token_type</c>.</summary>
public enum TokenType
{
    Undefined = 0,
    Normal = 1,
    Unknown = 2,
    Control = 3,
    UserDefined = 4,
    Unused = 5,
    Byte = 6,
}

/// <summary>
/// A vocabulary and its settings, independent of the file it came from (GGUF metadata or tokenizer.json).
/// Special ids are -1 when absent. WordPiece pieces use the GGUF convention: a word-initial piece starts with
/// <c>▁</c> and a continuation piece has no prefix.
/// </summary>
public sealed record TokenizerData
{
    public required TokenizerKind Kind { get; init; }
    public required string[] Tokens { get; init; }

    /// <summary>SentencePiece piece scores; higher merges first.</summary>
    public float[]? Scores { get; init; }

    /// <summary>Per-token types; all <see cref="TokenType.Normal"/> when null.</summary>
    public TokenType[]? TokenTypes { get; init; }

    /// <summary>Byte-level BPE merges in rank order.</summary>
    public IReadOnlyList<(string Left, string Right)>? Merges { get; init; }

    /// <summary>Pre-tokenizer name as in GGUF <c>tokenizer.ggml.pre</c> (e.g. <c>llama-bpe</c>, <c>qwen2</c>).</summary>
    public string? PreTokenizer { get; init; }

    /// <summary>Split patterns applied in order when the pre-tokenizer is not one of the named ones.</summary>
    public IReadOnlyList<string>? PreTokenizerPatterns { get; init; }

    public int BosId { get; init; } = -1;
    public int EosId { get; init; } = -1;
    public int EotId { get; init; } = -1;
    public int EomId { get; init; } = -1;
    public int UnknownId { get; init; } = -1;
    public int SepId { get; init; } = -1;
    public int PadId { get; init; } = -1;
    public int ClsId { get; init; } = -1;
    public int MaskId { get; init; } = -1;

    public bool AddBos { get; init; }
    public bool AddEos { get; init; }

    /// <summary>Append SEP after the text (BERT-style <c>[CLS] text [SEP]</c>).</summary>
    public bool AddSep { get; init; }

    /// <summary>SentencePiece: prefix text with a space at the start and after each special token.</summary>
    public bool AddSpacePrefix { get; init; }

    /// <summary>Byte-level BPE: a pre-tokenized word that is itself a token is emitted without merging (Llama 3).</summary>
    public bool IgnoreMerges { get; init; }

    /// <summary>WordPiece: lower-case and strip accents (uncased models).</summary>
    public bool Lowercase { get; init; }

    /// <summary>WordPiece: words longer than this many characters become the unknown token; 0 means no limit.</summary>
    public int MaxWordChars { get; init; }

    /// <summary>Special tokens that swallow the whitespace before / after them when matched in text.</summary>
    public IReadOnlySet<int>? LeftStripTokens { get; init; }
    public IReadOnlySet<int>? RightStripTokens { get; init; }
}
