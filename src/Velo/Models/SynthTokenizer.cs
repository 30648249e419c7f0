using Velo.Formats;
using Velo.Text;

namespace Velo.Models;

/// <summary>
/// The vocabulary a synthesized model carries: copied from a GGUF file's <c>tokenizer.*</c> metadata, or converted
/// from a tokenizer read elsewhere (a Hugging Face tokenizer.json). A vocabulary smaller than the model's embedding
/// is filled up with unused tokens, because llama.cpp sizes the embedding by the token list and rejects a file
/// where the two differ.
/// </summary>
public abstract class SynthTokenizer
{
    private const string PaddingPrefix = "<|velo_unused_";

    internal abstract void Write(GgufWriter writer, int vocabSize);

    public static SynthTokenizer FromGguf(GgufMetadata metadata) => new GgufSource(metadata);

    public static SynthTokenizer FromData(TokenizerData data) => new DataSource(data);

    private static string[] PadTokens(string[] tokens, int vocabSize)
    {
        if (tokens.Length > vocabSize)
            throw new ArgumentException($"the tokenizer has {tokens.Length} tokens, more than the model's vocabulary of {vocabSize}");
        var padded = new string[vocabSize];
        tokens.CopyTo(padded, 0);
        for (int i = tokens.Length; i < vocabSize; i++) padded[i] = $"{PaddingPrefix}{i}|>";
        return padded;
    }

    private static T[] Pad<T>(T[] values, int vocabSize, T filler)
    {
        var padded = new T[vocabSize];
        values.CopyTo(padded, 0);
        padded.AsSpan(values.Length).Fill(filler);
        return padded;
    }

    /// <summary>Every <c>tokenizer.*</c> key verbatim (chat template included), padded where needed.</summary>
    private sealed class GgufSource(GgufMetadata metadata) : SynthTokenizer
    {
        internal override void Write(GgufWriter writer, int vocabSize)
        {
            var tokens = metadata.GetStringArray("tokenizer.ggml.tokens") ?? throw new ArgumentException("the vocabulary file has no tokenizer.ggml.tokens");
            var padded = PadTokens(tokens, vocabSize);
            foreach (var (key, value) in metadata)
                if (key.StartsWith("tokenizer.", StringComparison.Ordinal)) writer.Set(key, value);
            if (padded.Length == tokens.Length) return;
            writer.Set("tokenizer.ggml.tokens", padded);
            if (metadata.GetInt32Array("tokenizer.ggml.token_type") is { } types)
                writer.Set("tokenizer.ggml.token_type", Pad(types, vocabSize, (int)TokenType.Unused));
            if (metadata.GetFloat32Array("tokenizer.ggml.scores") is { } scores)
                writer.Set("tokenizer.ggml.scores", Pad(scores, vocabSize, 0f));
        }
    }

    private sealed class DataSource(TokenizerData data) : SynthTokenizer
    {
        internal override void Write(GgufWriter writer, int vocabSize)
        {
            var padded = data.Tokens.Length == vocabSize ? data : data with
            {
                Tokens = PadTokens(data.Tokens, vocabSize),
                Scores = data.Scores is { } scores ? Pad(scores, vocabSize, 0f) : null,
                TokenTypes = Pad(data.TokenTypes ?? Enumerable.Repeat(TokenType.Normal, data.Tokens.Length).ToArray(), vocabSize, TokenType.Unused),
            };
            GgufTokenizerMetadata.Write(padded, writer);
        }
    }
}
