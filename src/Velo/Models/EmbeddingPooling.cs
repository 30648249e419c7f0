namespace Velo.Models;

/// <summary>How an encoder turns its token rows into one vector per input (llama.cpp's <c>pooling_type</c> values).</summary>
public enum EmbeddingPooling
{
    /// <summary>Each token's own row (its last hidden state).</summary>
    None = 0,

    /// <summary>The mean of the input's token rows.</summary>
    Mean = 1,

    /// <summary>The row of the input's first token ([CLS]).</summary>
    Cls = 2,

    /// <summary>The row of the input's last token.</summary>
    Last = 3,

    /// <summary>llama.cpp's <c>rank</c> (4): the [CLS] row through the classification head (<c>cls</c>, then
    /// <c>cls.output</c> when present), one score per label: a cross-encoder reranker or a classifier.</summary>
    Rank = 4,
}
