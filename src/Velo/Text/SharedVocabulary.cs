namespace Velo.Text;

/// <summary>Whether two models' token ids mean the same texts, as a draft and its target, or the small and large models
/// of a cascade, must: one's tokens are fed to the other.</summary>
public static class SharedVocabulary
{
    /// <summary>Throws <see cref="ArgumentException"/> naming the first difference: the sizes (the models' and the
    /// tokenizers'), or the first token whose text differs.</summary>
    /// <param name="subject">The two models, as the message starts: "the draft model a.gguf and the target b.gguf".</param>
    public static void Ensure(string subject, string firstRole, TokenizerBase first, int firstModelVocab,
        string secondRole, TokenizerBase second, int secondModelVocab)
    {
        if (firstModelVocab != secondModelVocab || first.VocabSize != second.VocabSize)
            throw new ArgumentException($"{subject} do not share a vocabulary: {firstModelVocab} tokens against {secondModelVocab}");
        for (int id = 0; id < first.VocabSize; id++)
            if (first.TokenText(id) != second.TokenText(id))
                throw new ArgumentException($"{subject} do not share a vocabulary: token {id} is '{first.TokenText(id)}' in {firstRole} but '{second.TokenText(id)}' in {secondRole}");
    }
}
