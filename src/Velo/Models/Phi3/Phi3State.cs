using Velo.Models.Blocks;
using Velo.Runtime;
using Velo.Threading;

namespace Velo.Models.Phi3;

/// <summary>A decoder state that also holds the LongRoPE factors its context length selects.</summary>
internal sealed unsafe class Phi3State(Phi3Model owner, float* ropeFactors, int contextLength, int maxBatch, int sequences, int maxLogitRows,
    WorkerPool? pool, KvCacheTypes cacheTypes)
    : DecoderState(owner, owner.Config.Dimensions, slidingRope: false, contextLength, maxBatch, sequences, maxLogitRows, pool, cacheTypes)
{
    /// <summary>
    /// LongRoPE's long or short factors, chosen once for the state's context: every key in its cache must have been
    /// rotated as the queries reading it are.
    /// </summary>
    public float* RopeFactors { get; } = ropeFactors;
}
