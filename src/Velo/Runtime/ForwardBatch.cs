namespace Velo.Runtime;

/// <summary>
/// The tokens of one forward pass: each with its position, the sequence (KV cache slot) it belongs to, and whether
/// its logits are wanted. Several sequences may share a batch; a sequence's tokens must come in position order.
/// The arrays are allocated once, at the batch's capacity.
/// </summary>
public sealed class ForwardBatch
{
    public ForwardBatch(int capacity)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(capacity, 1);
        Tokens = new int[capacity];
        Positions = new int[capacity];
        Sequences = new int[capacity];
        WantLogits = new bool[capacity];
        TokenTypes = new int[capacity];
    }

    public int Capacity => Tokens.Length;
    public int Count { get; private set; }
    public int LogitCount { get; private set; }

    public int[] Tokens { get; }
    public int[] Positions { get; }
    public int[] Sequences { get; }
    public bool[] WantLogits { get; }

    /// <summary>Each token's segment (BERT's token type): 0, or 1 for the second text of a pair such as a reranker's document.</summary>
    public int[] TokenTypes { get; }

    public void Clear()
    {
        Count = 0;
        LogitCount = 0;
    }

    /// <summary>Adds a token; returns the row of its logits in the output (or -1 if none were asked for).</summary>
    public int Add(int token, int position, int sequence = 0, bool wantLogits = false, int tokenType = 0)
    {
        if (Count == Capacity) throw new InvalidOperationException($"the batch is full ({Capacity} tokens)");
        Tokens[Count] = token;
        Positions[Count] = position;
        Sequences[Count] = sequence;
        WantLogits[Count] = wantLogits;
        TokenTypes[Count] = tokenType;
        Count++;
        return wantLogits ? LogitCount++ : -1;
    }
}
