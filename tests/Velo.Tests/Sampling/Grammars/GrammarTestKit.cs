using System.Text;
using Velo.Sampling.Grammars;
using Velo.Text;

namespace Velo.Tests.Sampling.Grammars;

/// <summary>Tokenizers of every kind in ../shared, and drivers that push text through a <see cref="GrammarMatcher"/>.</summary>
internal static class GrammarTestKit
{
    private static readonly Dictionary<string, Lazy<TokenizerBase>> Loaded = new()
    {
        ["stories260K (SentencePiece, 512)"] = new(() => Load(TestPaths.Stories260K)),
        ["llama-spm (SentencePiece)"] = new(() => Load(TestPaths.SharedFile("tokenizers", "vocab", "ggml-vocab-llama-spm.gguf"))),
        ["phi-3 (SentencePiece)"] = new(() => Load(TestPaths.SharedFile("tokenizers", "vocab", "ggml-vocab-phi-3.gguf"))),
        ["gpt-2 (byte-level BPE)"] = new(() => Load(TestPaths.SharedFile("tokenizers", "vocab", "ggml-vocab-gpt-2.gguf"))),
        ["llama3 (byte-level BPE, 128k)"] = new(() => (TokenizerBase)Tokenizer.FromHuggingFace(TestPaths.SharedFile("tokenizers", "hf", "llama3"))),
        ["qwen3 (byte-level BPE, 151k)"] = new(() => (TokenizerBase)Tokenizer.FromHuggingFace(TestPaths.SharedFile("tokenizers", "hf", "qwen3"))),
        ["bert-bge (WordPiece)"] = new(() => Load(TestPaths.SharedFile("tokenizers", "vocab", "ggml-vocab-bert-bge.gguf"))),
    };

    public static IEnumerable<string> TokenizerNames => Loaded.Keys;

    public static TokenizerBase Get(string name) => Loaded[name].Value;

    public static TokenizerBase Small => Get("stories260K (SentencePiece, 512)");

    private static TokenizerBase Load(string path) => (TokenizerBase)Tokenizer.FromGguf(path);

    /// <summary>Whether the grammar matches exactly this text.</summary>
    public static bool Matches(Grammar grammar, string text)
    {
        var matcher = new GrammarMatcher(grammar, Small);
        return matcher.AcceptBytes(Encoding.UTF8.GetBytes(text)) && matcher.IsAccepting;
    }

    /// <summary>
    /// Forces a document through the mask: at every step each token whose bytes start the rest of the document must be
    /// allowed (none is ever forbidden), then the longest one is taken; at the end, end-of-generation must be allowed.
    /// Returns false when the vocabulary cannot spell the document at all (no token starts the rest).
    /// </summary>
    public static bool Force(Grammar grammar, TokenizerBase tokenizer, string document, out string failure)
    {
        failure = "";
        var trie = TokenTrie.For(tokenizer);
        var matcher = new GrammarMatcher(grammar, tokenizer);
        byte[] bytes = Encoding.UTF8.GetBytes(document);
        int at = 0;
        while (at < bytes.Length)
        {
            var mask = matcher.NextTokens();
            int longest = -1, longestLength = 0;
            foreach (var (token, length) in Prefixes(trie, bytes.AsSpan(at)))
            {
                if ((mask[token >> 6] >> (token & 63) & 1) == 0)
                {
                    failure = $"token {token} '{tokenizer.TokenText(token)}' forbidden at byte {at} of {document}";
                    return true;
                }
                if (length > longestLength) (longest, longestLength) = (token, length);
            }
            if (longest < 0) return false;
            matcher.Accept(longest);
            at += longestLength;
        }
        if (!matcher.IsAccepting) failure = $"not accepted at the end of {document}";
        else if (tokenizer.EosId >= 0 && !matcher.Allows(tokenizer.EosId) && tokenizer.IsEndOfGeneration(tokenizer.EosId))
            failure = $"end-of-generation forbidden after {document}";
        return true;
    }

    /// <summary>Tokens (in the trie) whose bytes are a prefix of <paramref name="text"/>, with their lengths.</summary>
    public static List<(int Token, int Length)> Prefixes(TokenTrie trie, ReadOnlySpan<byte> text)
    {
        var found = new List<(int, int)>();
        int node = 0;
        for (int depth = 0; depth < text.Length; depth++)
        {
            int child = node + 1, next = -1;
            while (child < trie.SubtreeEnds[node])
            {
                if (trie.NodeBytes[child] == text[depth]) { next = child; break; }
                child = trie.SubtreeEnds[child];
            }
            if (next < 0) break;
            node = next;
            for (int t = trie.TokenStarts[node]; t < trie.TokenStarts[node + 1]; t++) found.Add((trie.Tokens[t], depth + 1));
        }
        return found;
    }

    /// <summary>
    /// Samples under the grammar with random choices that lean towards closing structures (so outputs finish), and
    /// returns the text, or null when it had not finished within <paramref name="maxTokens"/>.
    /// </summary>
    public static string? Sample(Grammar grammar, TokenizerBase tokenizer, Random random, int maxTokens)
    {
        var matcher = new GrammarMatcher(grammar, tokenizer);
        var output = new List<byte>();
        var allowed = new List<int>();
        var closing = new List<int>();
        for (int step = 0; step < maxTokens; step++)
        {
            var mask = matcher.NextTokens();
            allowed.Clear();
            closing.Clear();
            for (int word = 0; word < mask.Length; word++)
                for (ulong bits = mask[word]; bits != 0; bits &= bits - 1)
                {
                    int id = word * 64 + System.Numerics.BitOperations.TrailingZeroCount(bits);
                    allowed.Add(id);
                    var piece = tokenizer.TokenBytes(id);
                    if (tokenizer.IsEndOfGeneration(id) || piece.Length > 0 && piece[0] is (byte)'"' or (byte)'}' or (byte)']' or (byte)',' or (byte)'0' or (byte)'t' or (byte)'n')
                        closing.Add(id);
                }
            if (allowed.Count == 0) throw new InvalidOperationException("the mask allows nothing");
            var pool = closing.Count > 0 && random.NextDouble() < 0.6 ? closing : allowed;
            int token = pool[random.Next(pool.Count)];
            matcher.Accept(token);
            if (matcher.Ended) return Encoding.UTF8.GetString(output.ToArray());
            output.AddRange(tokenizer.TokenBytes(token).ToArray());
            if (matcher.IsComplete) return Encoding.UTF8.GetString(output.ToArray());
        }
        return null;
    }
}
