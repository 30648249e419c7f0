using System.Runtime.CompilerServices;
using Velo.Text;

namespace Velo.Sampling.Grammars;

/// <summary>
/// Every token's output bytes in one byte trie, laid out in preorder with each node's subtree end, so a grammar walks
/// the whole vocabulary in one forward scan and skips a dead prefix's tokens in one jump. Control and unknown tokens
/// (which decode to nothing) are left out; end-of-generation tokens are listed apart. Built once per tokenizer.
/// </summary>
internal sealed class TokenTrie
{
    private static readonly ConditionalWeakTable<TokenizerBase, TokenTrie> Cache = new();

    private TokenTrie(TokenizerBase tokenizer)
    {
        VocabSize = tokenizer.VocabSize;
        var entries = new List<(byte[] Bytes, int Id)>();
        var endOfGeneration = new List<int>();
        for (int id = 0; id < tokenizer.VocabSize; id++)
        {
            if (tokenizer.IsEndOfGeneration(id)) endOfGeneration.Add(id);
            if (tokenizer.GetTokenType(id) is not (TokenType.Normal or TokenType.Byte or TokenType.UserDefined)) continue;
            var bytes = tokenizer.TokenBytes(id);
            if (!bytes.IsEmpty) entries.Add((bytes.ToArray(), id));
        }
        EndOfGeneration = endOfGeneration.ToArray();
        entries.Sort((a, b) => a.Bytes.AsSpan().SequenceCompareTo(b.Bytes) is int c and not 0 ? c : a.Id.CompareTo(b.Id));

        var nodeByte = new List<byte> { 0 };
        var depth = new List<int> { 0 };
        var tokenStart = new List<int> { 0 };
        var tokens = new List<int>(entries.Count);
        var path = new List<int> { 0 }; // node at each depth of the current path
        var previous = Array.Empty<byte>();
        var subtreeEnd = new List<int> { 0 };
        foreach (var (bytes, id) in entries)
        {
            int common = bytes.AsSpan().CommonPrefixLength(previous);
            // Close the nodes of the previous path below the common prefix.
            for (int d = path.Count - 1; d > common; d--) subtreeEnd[path[d]] = nodeByte.Count;
            path.RemoveRange(common + 1, path.Count - common - 1);
            for (int d = common; d < bytes.Length; d++)
            {
                path.Add(nodeByte.Count);
                nodeByte.Add(bytes[d]);
                depth.Add(d + 1);
                tokenStart.Add(tokens.Count);
                subtreeEnd.Add(0);
            }
            tokens.Add(id);
            previous = bytes;
        }
        for (int d = path.Count - 1; d >= 0; d--) subtreeEnd[path[d]] = nodeByte.Count;
        tokenStart.Add(tokens.Count);

        NodeBytes = nodeByte.ToArray();
        Depths = depth.ToArray();
        SubtreeEnds = subtreeEnd.ToArray();
        TokenStarts = tokenStart.ToArray();
        Tokens = tokens.ToArray();
        MaxDepth = Depths.Max();
    }

    public static TokenTrie For(TokenizerBase tokenizer) => Cache.GetValue(tokenizer, t => new TokenTrie(t));

    public int VocabSize { get; }
    public int[] EndOfGeneration { get; }
    public int MaxDepth { get; }
    public int NodeCount => NodeBytes.Length;

    // Node i (preorder; 0 is the root): the byte on the edge into it, its depth, the first node after its subtree,
    // and the tokens whose bytes end there (Tokens[TokenStarts[i]..TokenStarts[i + 1]]).
    public byte[] NodeBytes { get; }
    public int[] Depths { get; }
    public int[] SubtreeEnds { get; }
    public int[] TokenStarts { get; }
    public int[] Tokens { get; }
}
