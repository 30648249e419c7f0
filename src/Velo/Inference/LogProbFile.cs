using System.Buffers.Binary;
using System.Runtime.InteropServices;

namespace Velo.Inference;

/// <summary>
/// The file <c>velo perplexity --kl-divergence-base</c> writes: the evaluated tokens, then for every scored position
/// the base model's log-probabilities over the whole vocabulary, each quantized to 16 bits over its row's range
/// (capped at <see cref="Range"/> nats below the top), as llama.cpp's base files do to halve their size.
/// <code>
/// "VKLD" u32 version  i32 vocab  i32 n_ctx  i32 n_tokens  i32 tokens[n_tokens]
/// per scored position: i32 top token, f32 lowest log-prob, f32 step, u16 levels[vocab]
/// </code>
/// </summary>
public static class LogProbFile
{
    public const uint Magic = 0x444C4B56; // "VKLD" read as a little-endian uint32
    public const uint Version = 1;

    /// <summary>
    /// Log-probabilities more than this far below the top are stored as the floor: e^-32 per token is far below
    /// anything a divergence can notice even over 10⁶ tokens, and the step stays under 5·10⁻⁴ nats.
    /// </summary>
    public const float Range = 32;
}

/// <summary>Streams a base model's log-probabilities to a <see cref="LogProbFile"/>.</summary>
public sealed class LogProbWriter : IDisposable
{
    private readonly Stream _stream;
    private byte[] _row = [];

    public LogProbWriter(string path) =>
        _stream = new FileStream(path, FileMode.Create, FileAccess.Write, FileShare.None, 1 << 20);

    /// <summary>Starts the file with the tokens that will be evaluated (whole chunks of <paramref name="contextLength"/>).</summary>
    public void WriteHeader(ReadOnlySpan<int> tokens, int contextLength, int vocabSize)
    {
        if (_row.Length != 0) throw new InvalidOperationException("the header was already written");
        _row = new byte[12 + 2 * vocabSize];
        Span<byte> header = stackalloc byte[20];
        BinaryPrimitives.WriteUInt32LittleEndian(header, LogProbFile.Magic);
        BinaryPrimitives.WriteUInt32LittleEndian(header[4..], LogProbFile.Version);
        BinaryPrimitives.WriteInt32LittleEndian(header[8..], vocabSize);
        BinaryPrimitives.WriteInt32LittleEndian(header[12..], contextLength);
        BinaryPrimitives.WriteInt32LittleEndian(header[16..], tokens.Length);
        _stream.Write(header);
        _stream.Write(MemoryMarshal.AsBytes(tokens));
    }

    /// <summary>Appends one position's log-probabilities (a whole vocabulary) and its most likely token.</summary>
    public void Append(ReadOnlySpan<float> logProbs, int top)
    {
        if (_row.Length != 12 + 2 * logProbs.Length) throw new InvalidOperationException("the header must be written first, for this vocabulary");
        float max = logProbs[top], min = max;
        foreach (float v in logProbs) min = MathF.Min(min, v);
        min = MathF.Max(min, max - LogProbFile.Range);
        float step = max > min ? (max - min) / ushort.MaxValue : 1;
        float inverse = 1 / step;
        var row = _row.AsSpan();
        BinaryPrimitives.WriteInt32LittleEndian(row, top);
        BinaryPrimitives.WriteSingleLittleEndian(row[4..], min);
        BinaryPrimitives.WriteSingleLittleEndian(row[8..], step);
        var levels = MemoryMarshal.Cast<byte, ushort>(row[12..]);
        for (int i = 0; i < logProbs.Length; i++)
            levels[i] = (ushort)Math.Clamp(MathF.Round((logProbs[i] - min) * inverse), 0, ushort.MaxValue);
        _stream.Write(_row);
    }

    public void Dispose() => _stream.Dispose();
}

/// <summary>Reads a <see cref="LogProbFile"/> back position by position.</summary>
public sealed class LogProbReader : IDisposable
{
    private readonly Stream _stream;
    private readonly byte[] _row;
    private readonly string _path;

    public LogProbReader(string path)
    {
        _path = path;
        _stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 20);
        try
        {
            Span<byte> header = stackalloc byte[20];
            ReadExactly(header, "header");
            if (BinaryPrimitives.ReadUInt32LittleEndian(header) != LogProbFile.Magic)
                throw new FormatException($"{path}: not a Velo KL-divergence base file (written by velo perplexity --kl-divergence-base)");
            uint version = BinaryPrimitives.ReadUInt32LittleEndian(header[4..]);
            if (version != LogProbFile.Version) throw new FormatException($"{path}: unsupported KL-divergence base version {version}");
            VocabSize = BinaryPrimitives.ReadInt32LittleEndian(header[8..]);
            ContextLength = BinaryPrimitives.ReadInt32LittleEndian(header[12..]);
            int tokenCount = BinaryPrimitives.ReadInt32LittleEndian(header[16..]);
            if (VocabSize < 1 || ContextLength < 4 || tokenCount < 2 * ContextLength || (long)tokenCount * 4 > _stream.Length)
                throw new FormatException($"{path}: corrupt KL-divergence base header (vocab {VocabSize}, context {ContextLength}, {tokenCount} tokens)");
            Tokens = new int[tokenCount];
            ReadExactly(MemoryMarshal.AsBytes(Tokens.AsSpan()), "tokens");
            _row = new byte[12 + 2 * VocabSize];
        }
        catch
        {
            _stream.Dispose();
            throw;
        }
    }

    public int VocabSize { get; }
    public int ContextLength { get; }

    /// <summary>The tokens the base was computed over, whole chunks only.</summary>
    public int[] Tokens { get; }

    /// <summary>Throws unless the comparison run evaluates what the base did, or the first chunks of it.</summary>
    public void CheckMatches(ReadOnlySpan<int> tokens, int contextLength, int vocabSize)
    {
        if (vocabSize != VocabSize)
            throw new ArgumentException($"{_path}: the base model has a vocabulary of {VocabSize}, this one {vocabSize}: KL divergence needs the same vocabulary");
        if (contextLength != ContextLength)
            throw new ArgumentException($"{_path}: the base was computed with a context of {ContextLength}, this run uses {contextLength}");
        // A run may stop after fewer chunks (--chunks) than the base holds: its positions are a prefix of the base's.
        if (tokens.Length > Tokens.Length || !tokens.SequenceEqual(Tokens.AsSpan(0, tokens.Length)))
            throw new ArgumentException($"{_path}: the base was computed over different tokens ({Tokens.Length}) than this run's ({tokens.Length})");
    }

    /// <summary>
    /// Reads the next position into <paramref name="logProbs"/>, renormalized so they are the log-probabilities of
    /// a true distribution (the 16-bit rounding would otherwise leave a first-order error in every divergence);
    /// returns the base model's most likely token.
    /// </summary>
    public int Next(Span<float> logProbs)
    {
        ReadExactly(_row, "log-probabilities (the base file ends early)");
        var row = _row.AsSpan();
        int top = BinaryPrimitives.ReadInt32LittleEndian(row);
        float min = BinaryPrimitives.ReadSingleLittleEndian(row[4..]);
        float step = BinaryPrimitives.ReadSingleLittleEndian(row[8..]);
        var levels = MemoryMarshal.Cast<byte, ushort>(row[12..]);
        double sum = 0;
        for (int i = 0; i < levels.Length; i++)
        {
            logProbs[i] = min + levels[i] * step;
            sum += Math.Exp(logProbs[i]);
        }
        float logSum = (float)Math.Log(sum);
        for (int i = 0; i < levels.Length; i++) logProbs[i] -= logSum;
        return top;
    }

    private void ReadExactly(Span<byte> buffer, string what)
    {
        try
        {
            _stream.ReadExactly(buffer);
        }
        catch (EndOfStreamException)
        {
            throw new FormatException($"{_path}: truncated KL-divergence base file reading {what}");
        }
    }

    public void Dispose() => _stream.Dispose();
}
