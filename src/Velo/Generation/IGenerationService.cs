using Velo.Inference;
using Velo.Models;
using Velo.Text;

namespace Velo.Generation;

/// <summary>
/// What the HTTP layer, <see cref="VeloChatClient"/> and <c>velo chat</c> generate through: concurrent requests over one
/// model, and what they need to build requests for it (its tokenizer, chat formatter and limits).
/// <see cref="BatchScheduler"/> implements it.
/// </summary>
public interface IGenerationService
{
    /// <summary>The name clients know the model by: its file name without the extension.</summary>
    string ModelId { get; }

    ModelInfo ModelInfo { get; }
    TokenizerBase Tokenizer { get; }

    /// <summary>Turns a conversation into prompt tokens with the model's chat template.</summary>
    ChatPromptFormatter Chat { get; }

    /// <summary>Tokens per sequence, prompt and output together.</summary>
    int ContextLength { get; }

    /// <summary>Sequences generated together.</summary>
    int Parallel { get; }

    /// <summary>Requests waiting for a sequence.</summary>
    int QueueLength { get; }

    /// <summary>Sequences being prefilled or generated.</summary>
    int ActiveSequences { get; }

    /// <summary>Requests that ended because their caller cancelled them (or, for a server, disconnected).</summary>
    long CancelledRequests { get; }

    /// <summary>What the decoding steps did so far: tokens per step, and drafts verified and accepted with speculation.</summary>
    SpeculationCounters Speculation { get; }

    /// <summary>Queues a generation. Throws <see cref="PromptTooLongException"/> when the prompt leaves no room to generate,
    /// <see cref="ArgumentException"/> for a request the model cannot run, <see cref="SchedulerBusyException"/> when the queue is full.</summary>
    GenerationStream Submit(GenerationRequest request, CancellationToken cancellation = default);
}
