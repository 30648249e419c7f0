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
}
