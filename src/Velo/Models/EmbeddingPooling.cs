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

/// <summary>An encoder whose pooling and normalisation the caller may choose in place of its file's, as llama.cpp's
/// <c>--pooling</c> and <c>--embd-normalize</c> do. Choose before creating states: they are sized for the choice.</summary>
public interface IPoolingChoice
{
    /// <param name="pooling">The pooling to use; null keeps the file's.</param>
    /// <param name="normalize">Whether pooled vectors get unit length; null keeps the file's.</param>
    /// <exception cref="NotSupportedException">Rank pooling on a model without a classification head.</exception>
    void ChoosePooling(EmbeddingPooling? pooling, bool? normalize);
}
