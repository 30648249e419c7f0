using System.Runtime.InteropServices;
using Velo.Text;

namespace Velo.Sampling.Grammars;

/// <summary>
/// One sequence's progress through a <see cref="Grammar"/>, and which tokens may come next.
/// <para>
/// The state is llama.cpp's: a set of pushdown stacks of grammar positions, each with a terminal on top (the empty
/// stack means "complete"). Stacks are interned as (position, parent) nodes and sets of them as states, and each
/// (state, byte) transition is computed once and stored: matching becomes a walk over a lazily built automaton. The
/// token mask for a state is one preorder scan of the vocabulary's byte trie that skips every subtree whose prefix
/// the grammar rejects; masks are cached per state, so a state seen before (the inside of a string, say) costs only
/// the copy of its mask into the candidates.
/// </para>
/// </summary>
public sealed class GrammarMatcher
{
    // Caches are dropped (and the current state re-interned) once they grow past these between steps; within one
    // step, states past the hard limit are treated as dead, which can only forbid tokens, never allow a wrong one.
    private const int MaxStates = 1 << 14;
    private const int HardMaxStates = 1 << 16;
    private const int MaxNodes = 1 << 20;
    private const int MaxCachedMasks = 64;
    private const int DeadState = 0;

    private readonly Grammar _grammar;
    private readonly TokenTrie _trie;
    private readonly TokenizerBase _tokenizer;
    private readonly ulong[] _mask;
    private readonly int _vocabSize;
    private readonly int[] _stateAtDepth;

    // Stack nodes: node 0 is the empty stack.
    private readonly List<int> _nodePositions = [];
    private readonly List<int> _nodeParents = [];
    private readonly Dictionary<long, int> _nodeIds = [];

    // States: state 0 is dead (no stack); each has its sorted node ids, transitions (built lazily) and cached mask.
    private readonly List<int[]> _stateNodes = [];
    private readonly List<int[]?> _transitions = [];
    private readonly List<ulong[]?> _masks = [];
    private readonly Dictionary<int[], int> _stateIds = new(new NodeSetComparer());
    private int _cachedMasks;

    private readonly List<int> _expanded = [];
    private readonly HashSet<int> _seen = [];
    private readonly Stack<int> _work = new();

    private int _state;

    /// <param name="vocabSize">The model's vocabulary size when it differs from the tokenizer's (the mask covers the
    /// model's logits; ids the tokenizer lacks are never allowed).</param>
    public GrammarMatcher(Grammar grammar, TokenizerBase tokenizer, int? vocabSize = null)
    {
        ArgumentNullException.ThrowIfNull(grammar);
        ArgumentNullException.ThrowIfNull(tokenizer);
        _grammar = grammar;
        _tokenizer = tokenizer;
        _trie = TokenTrie.For(tokenizer);
        _vocabSize = vocabSize ?? tokenizer.VocabSize;
        ArgumentOutOfRangeException.ThrowIfLessThan(_vocabSize, 1, nameof(vocabSize));
        _mask = new ulong[(_vocabSize + 63) / 64];
        _stateAtDepth = new int[_trie.MaxDepth + 1];
        ClearCaches();
        _expanded.Clear();
        _seen.Clear();
        foreach (int start in grammar.AlternativesOf(grammar.Root))
            Expand(grammar.Kind(start) == ElementKind.End ? 0 : InternNode(start, 0));
        _state = InternState();
    }

    /// <summary>The output so far is a complete match (end-of-generation may come now).</summary>
    public bool IsAccepting => _stateNodes[_state].AsSpan().Contains(0);

    /// <summary>Nothing more can follow: the output is complete, or ended with an end-of-generation token.</summary>
    public bool IsComplete => Ended || _stateNodes[_state] is [0];

    /// <summary>An end-of-generation token was accepted.</summary>
    public bool Ended { get; private set; }

    /// <summary>The current state's mask is cached (the next <see cref="NextTokens"/> only returns it).</summary>
    internal bool HasCachedMask => _masks[_state] != null;

    /// <summary>Automaton states built so far (a diagnostic of the caches).</summary>
    public int StateCount => _stateNodes.Count;

    /// <summary>
    /// The tokens that can come next, one bit per token id (bit i of word i/64): tokens whose bytes continue a valid
    /// output, end-of-generation tokens when the output is complete, or, at a dead end no token can continue,
    /// end-of-generation tokens alone. Valid until the next call.
    /// </summary>
    public ReadOnlySpan<ulong> NextTokens()
    {
        TrimCaches();
        if (Ended) throw new InvalidOperationException("the grammar has already ended");
        var cached = _masks[_state];
        if (cached != null) return cached;

        var mask = _mask.AsSpan();
        mask.Clear();
        var bytes = _trie.NodeBytes;
        var depths = _trie.Depths;
        var ends = _trie.SubtreeEnds;
        var tokenStarts = _trie.TokenStarts;
        var tokens = _trie.Tokens;
        var stateAt = _stateAtDepth;
        stateAt[0] = _state;
        bool any = false;
        for (int node = 1; node < bytes.Length;)
        {
            int depth = depths[node];
            int next = Next(stateAt[depth - 1], bytes[node]);
            if (next == DeadState)
            {
                node = ends[node];
                continue;
            }
            stateAt[depth] = next;
            for (int t = tokenStarts[node], end = tokenStarts[node + 1]; t < end; t++)
            {
                int id = tokens[t];
                if (id >= _vocabSize) continue;
                mask[id >> 6] |= 1UL << (id & 63);
                any = true;
            }
            node++;
        }
        if (IsAccepting || !any)
            foreach (int id in _trie.EndOfGeneration)
                if (id < _vocabSize) mask[id >> 6] |= 1UL << (id & 63);

        if (_cachedMasks >= MaxCachedMasks)
        {
            for (int s = 0; s < _masks.Count; s++) _masks[s] = null;
            _cachedMasks = 0;
        }
        _masks[_state] = mask.ToArray();
        _cachedMasks++;
        return _masks[_state];
    }

    /// <summary>Whether the token may come next (what <see cref="NextTokens"/> says of it).</summary>
    public bool Allows(int token)
    {
        var mask = NextTokens();
        return (uint)token < (uint)_vocabSize && (mask[token >> 6] >> (token & 63) & 1) != 0;
    }

    /// <summary>Moves past a chosen token. Throws <see cref="InvalidOperationException"/> for a token the grammar
    /// forbids here (the sampler's mask never chooses one).</summary>
    public void Accept(int token)
    {
        TrimCaches();
        if (Ended) throw new InvalidOperationException("the grammar has already ended");
        if (_tokenizer.IsEndOfGeneration(token))
        {
            if (!Allows(token)) throw new InvalidOperationException("end-of-generation cannot come before the grammar is complete");
            Ended = true;
            return;
        }
        if (_tokenizer.GetTokenType(token) is TokenType.Normal or TokenType.Byte or TokenType.UserDefined
            && _tokenizer.TokenBytes(token) is { IsEmpty: false } bytes && AcceptBytes(bytes))
            return;
        throw new InvalidOperationException($"token {token} ('{_tokenizer.TokenText(token)}') cannot continue the grammar here");
    }

    /// <summary>Moves past raw output bytes; false (and no move) when they cannot continue a valid output.</summary>
    public bool AcceptBytes(ReadOnlySpan<byte> text)
    {
        TrimCaches();
        int state = _state;
        foreach (byte b in text)
        {
            state = Next(state, b);
            if (state == DeadState) return false;
        }
        _state = state;
        return true;
    }

    // ---- The automaton ----

    private int Next(int state, byte value)
    {
        var row = _transitions[state];
        if (row == null)
        {
            row = new int[256];
            Array.Fill(row, -1);
            _transitions[state] = row;
        }
        int next = row[value];
        if (next >= 0) return next;
        next = ComputeTransition(state, value);
        row[value] = next;
        return next;
    }

    private int ComputeTransition(int state, byte value)
    {
        if (state == DeadState) return DeadState;
        _expanded.Clear();
        _seen.Clear();
        foreach (int node in _stateNodes[state])
        {
            if (node == 0) continue;
            int position = _nodePositions[node];
            if (!_grammar.Accepts(position, value)) continue;
            int parent = _nodeParents[node];
            Expand(_grammar.Kind(position + 1) == ElementKind.End ? parent : InternNode(position + 1, parent));
        }
        return InternState();
    }

    /// <summary>Adds to _expanded every stack with a terminal on top (or the empty stack) that the stack can become
    /// without consuming a byte: rule references on top are replaced by each of their alternatives.</summary>
    private void Expand(int start)
    {
        _work.Push(start);
        while (_work.Count > 0)
        {
            int node = _work.Pop();
            if (!_seen.Add(node)) continue;
            if (node == 0)
            {
                _expanded.Add(0);
                continue;
            }
            int position = _nodePositions[node];
            if (_grammar.Kind(position) == ElementKind.Terminal)
            {
                _expanded.Add(node);
                continue;
            }
            int parent = _nodeParents[node];
            int returnTo = _grammar.Kind(position + 1) == ElementKind.End ? parent : InternNode(position + 1, parent);
            foreach (int alternative in _grammar.AlternativesOf(_grammar.Argument(position)))
                _work.Push(_grammar.Kind(alternative) == ElementKind.End ? returnTo : InternNode(alternative, returnTo));
        }
    }

    private int InternNode(int position, int parent)
    {
        long key = (long)position << 32 | (uint)parent;
        if (_nodeIds.TryGetValue(key, out int id)) return id;
        id = _nodePositions.Count;
        _nodePositions.Add(position);
        _nodeParents.Add(parent);
        _nodeIds[key] = id;
        return id;
    }

    /// <summary>The state for the stacks in _expanded.</summary>
    private int InternState()
    {
        if (_expanded.Count == 0) return DeadState;
        var span = CollectionsMarshal.AsSpan(_expanded);
        span.Sort();
        int[] nodes = span.ToArray();
        if (_stateIds.TryGetValue(nodes, out int id)) return id;
        if (_stateNodes.Count >= HardMaxStates) return DeadState;
        id = _stateNodes.Count;
        _stateNodes.Add(nodes);
        _transitions.Add(null);
        _masks.Add(null);
        _stateIds[nodes] = id;
        return id;
    }

    private void ClearCaches()
    {
        _nodePositions.Clear();
        _nodeParents.Clear();
        _nodeIds.Clear();
        _stateNodes.Clear();
        _transitions.Clear();
        _masks.Clear();
        _stateIds.Clear();
        _cachedMasks = 0;
        _nodePositions.Add(-1);
        _nodeParents.Add(-1);
        _stateNodes.Add([]);
        _transitions.Add(null);
        _masks.Add(null);
    }

    /// <summary>Between steps: when the caches have grown too large, rebuild them holding only the current state.</summary>
    private void TrimCaches()
    {
        if (_stateNodes.Count < MaxStates && _nodePositions.Count < MaxNodes) return;
        var stacks = _stateNodes[_state].Select(Materialize).ToList();
        ClearCaches();
        _expanded.Clear();
        foreach (var stack in stacks)
        {
            int node = 0;
            for (int i = stack.Count - 1; i >= 0; i--) node = InternNode(stack[i], node);
            _expanded.Add(node);
        }
        _state = InternState();
    }

    /// <summary>A stack's positions, top first.</summary>
    private List<int> Materialize(int node)
    {
        var positions = new List<int>();
        for (; node != 0; node = _nodeParents[node]) positions.Add(_nodePositions[node]);
        return positions;
    }

    private sealed class NodeSetComparer : IEqualityComparer<int[]>
    {
        public bool Equals(int[]? x, int[]? y) => x.AsSpan().SequenceEqual(y);

        public int GetHashCode(int[] nodes)
        {
            var hash = new HashCode();
            foreach (int node in nodes) hash.Add(node);
            return hash.ToHashCode();
        }
    }
}
