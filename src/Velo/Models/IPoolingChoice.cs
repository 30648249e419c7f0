namespace Velo.Models;

/// <summary>An encoder whose pooling and normalisation the caller may choose in place of its file's, as llama.cpp's
/// <c>--pooling</c> and <c>--embd-normalize</c> do. Choose before creating states: they are sized for the choice.</summary>
public interface IPoolingChoice
{
    /// <param name="pooling">The pooling to use; null keeps the file's.</param>
    /// <param name="normalize">Whether pooled vectors get unit length; null keeps the file's.</param>
    /// <exception cref="NotSupportedException">Rank pooling on a model without a classification head.</exception>
    void ChoosePooling(EmbeddingPooling? pooling, bool? normalize);
}
