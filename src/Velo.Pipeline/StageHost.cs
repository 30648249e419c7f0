using System.Runtime.InteropServices;
using Google.Protobuf;
using Grpc.Core;
using Velo.Models;
using Velo.Pipeline.Protocol;
using Velo.Runtime;
using Velo.Threading;

namespace Velo.Pipeline;

/// <summary>
/// One pipeline stage: a range of a decoder's blocks (<see cref="ILayerRangeModel"/>) and, once a server has opened a
/// session, their KV memory and activations. Batches run one at a time, in the order they arrive.
/// </summary>
public sealed class StageHost : IDisposable
{
    /// <summary>The most tokens a session's batch may hold, which bounds a request's size.</summary>
    public const int MaxBatchLimit = 8192;

    /// <summary>The most sequences a session may hold.</summary>
    public const int MaxSequences = 4096;

    private readonly ILayerRangeModel _model;
    private readonly WorkerPool _pool;
    private readonly object _gate = new();
    private IModelState? _state;
    private ForwardBatch? _batch;
    private ulong _session;

    public StageHost(ILayerRangeModel model, int threads)
    {
        _model = model;
        _pool = new WorkerPool(threads);
        Description = new StageDescription
        {
            Architecture = model.Info.Architecture,
            ModelName = model.File.Metadata.GetString("general.name") ?? Path.GetFileNameWithoutExtension(model.File.Path),
            ModelIdentity = ByteString.CopyFrom(Pipeline.ModelIdentity.Of(model.File)),
            EmbeddingLength = model.Info.EmbeddingLength,
            VocabSize = model.Info.VocabSize,
            TotalLayers = model.Layers.Total,
            FirstLayer = model.Layers.Start,
            LastLayer = model.Layers.End - 1,
        };
    }

    public StageDescription Description { get; }

    public LayerRange Layers => _model.Layers;

    /// <summary>The largest message a session can send or receive: a whole batch of hidden states, or its logits.</summary>
    public int MaxMessageBytes => (int)Math.Min(int.MaxValue,
        (long)MaxBatchLimit * (sizeof(float) * Math.Max(_model.Info.EmbeddingLength, _model.Info.VocabSize) + 64) + 4096);

    public OpenReply Open(OpenRequest request)
    {
        if (request.Sequences is < 1 or > MaxSequences || request.MaxBatch is < 1 or > MaxBatchLimit
            || request.MaxLogitRows < 1 || request.MaxLogitRows > request.MaxBatch || request.ContextLength is < 1)
            throw Invalid($"a session of {request.Sequences} sequences, batches of {request.MaxBatch} tokens and {request.MaxLogitRows} logits rows " +
                $"is not possible (at most {MaxSequences} sequences and {MaxBatchLimit} tokens)");
        KvCacheTypes types;
        try
        {
            types = new KvCacheTypes(KvCacheTypes.Parse(request.KeyCacheType), KvCacheTypes.Parse(request.ValueCacheType));
        }
        catch (ArgumentException e)
        {
            throw Invalid(e.Message);
        }
        lock (_gate)
        {
            _state?.Dispose();
            _state = null;
            try
            {
                Inference.MemoryPlan.EnsureFits((context, sequences) => Inference.MemoryPlan.For(_model, context, sequences, request.MaxBatch, request.MaxLogitRows, types),
                    request.ContextLength, request.Sequences, availableBytes: null, "--ctx", "--parallel");
                _state = _model.CreateState(request.ContextLength, request.MaxBatch, request.Sequences, request.MaxLogitRows, _pool, types);
            }
            catch (Exception e) when (e is ArgumentException or Inference.NotEnoughMemoryException)
            {
                throw new RpcException(new Status(StatusCode.ResourceExhausted, $"stage {Layers}: {e.Message}"));
            }
            _batch = new ForwardBatch(request.MaxBatch);
            _session = (ulong)Random.Shared.NextInt64(1, long.MaxValue);
            return new OpenReply { Session = _session };
        }
    }

    public ForwardReply Forward(ForwardRequest request)
    {
        lock (_gate)
        {
            if (_state == null || request.Session != _session)
                throw new RpcException(new Status(StatusCode.FailedPrecondition,
                    $"stage {Layers}: the session is not open here (another server opened this stage since, or the stage restarted)"));
            var state = _state;
            var batch = _batch!;
            int n = request.Tokens.Count, dim = _model.Info.EmbeddingLength;
            if (n == 0 || n > batch.Capacity || request.Positions.Count != n || request.Sequences.Count != n || request.WantLogits.Count != n)
                throw Invalid($"a batch needs 1 to {batch.Capacity} tokens, each with a position, a sequence and a logits flag");
            if (request.SequenceLengths.Count != state.Cache.Sequences)
                throw Invalid($"the batch gives {request.SequenceLengths.Count} sequence lengths for a memory of {state.Cache.Sequences} sequences");
            if (!Layers.IsFirst && request.Hidden.Length != (long)n * dim * sizeof(float))
                throw Invalid($"the batch's hidden states are {request.Hidden.Length} bytes, not {n} rows of {dim} floats");

            SyncMemory(state.Cache, request.SequenceLengths);
            batch.Clear();
            for (int i = 0; i < n; i++)
                batch.Add(request.Tokens[i], request.Positions[i], request.Sequences[i], request.WantLogits[i]);
            if (!Layers.IsFirst)
                MemoryMarshal.Cast<byte, float>(request.Hidden.Span).CopyTo(_model.Hidden(state, n));
            try
            {
                _model.Forward(state, batch);
            }
            catch (ArgumentException e)
            {
                throw Invalid(e.Message);
            }
            return Layers.IsLast ? new ForwardReply { Logits = Logits(state, batch.LogitCount) } : new ForwardReply { Hidden = Copy(_model.Hidden(state, n)) };
        }
    }

    /// <summary>
    /// Makes each sequence hold what it holds in the server's memory before the batch: the server's tail removals
    /// (rollbacks, reused or reset sequences) happen here too. A sequence the server holds more of than the stage is
    /// out of step (the stage restarted, or missed a batch): refused, so the server resets its sequences.
    /// </summary>
    private void SyncMemory(KvCache cache, IReadOnlyList<int> lengths)
    {
        for (int s = 0; s < lengths.Count; s++)
        {
            int held = cache.Length(s), wanted = lengths[s];
            if (wanted > held)
                throw new RpcException(new Status(StatusCode.FailedPrecondition,
                    $"stage {Layers}: sequence {s} holds {held} positions here but {wanted} in the server's memory: the stage missed a batch"));
            if (wanted < held) cache.RemoveRange(s, Math.Max(wanted, 0));
        }
    }

    private ByteString Logits(IModelState state, int rows)
    {
        int vocab = _model.Info.VocabSize;
        var bytes = new byte[(long)rows * vocab * sizeof(float)];
        var floats = MemoryMarshal.Cast<byte, float>(bytes.AsSpan());
        for (int r = 0; r < rows; r++) state.Output(r).CopyTo(floats.Slice(r * vocab, vocab));
        // The array is the reply's own: wrapping it saves a second copy.
        return UnsafeByteOperations.UnsafeWrap(bytes);
    }

    private static ByteString Copy(ReadOnlySpan<float> rows) => ByteString.CopyFrom(MemoryMarshal.AsBytes(rows));

    private RpcException Invalid(string message) => new(new Status(StatusCode.InvalidArgument, $"stage {Layers}: {message}"));

    public void Dispose()
    {
        lock (_gate)
        {
            _state?.Dispose();
            _state = null;
        }
        _pool.Dispose();
        _model.Dispose();
    }
}
