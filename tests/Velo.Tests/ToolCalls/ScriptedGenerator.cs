using System.Collections.Concurrent;
using System.Threading.Channels;
using Velo.Generation;
using Velo.Inference;
using Velo.Models;
using Velo.Text;

namespace Velo.Tests.ToolCalls;

/// <summary>
/// An <see cref="IGenerationService"/> that answers each request with the next scripted output, in pieces of a few
/// characters as tokens would come, and records the requests: forces the outputs (tool calls) that a tiny model cannot
/// write, while the prompt side (tokenizer, chat template) is the real model's.
/// </summary>
public sealed class ScriptedGenerator(IGenerationService model) : IGenerationService
{
    private readonly ConcurrentQueue<string> _outputs = new();

    public ConcurrentQueue<GenerationRequest> Requests { get; } = new();

    public void Enqueue(params string[] outputs)
    {
        foreach (string output in outputs) _outputs.Enqueue(output);
    }

    public string ModelId => model.ModelId;
    public ModelInfo ModelInfo => model.ModelInfo;
    public TokenizerBase Tokenizer => model.Tokenizer;
    public ChatPromptFormatter Chat => model.Chat;
    public int ContextLength => model.ContextLength;
    public int Parallel => model.Parallel;
    public int QueueLength => 0;
    public int ActiveSequences => 0;
    public long CancelledRequests => 0;
    public SpeculationCounters Speculation => default;

    public GenerationStream Submit(GenerationRequest request, CancellationToken cancellation = default)
    {
        Requests.Enqueue(request);
        if (!_outputs.TryDequeue(out string? output)) throw new InvalidOperationException("no scripted output left");
        var channel = Channel.CreateUnbounded<GeneratedPiece>();
        int pieces = 0;
        for (int at = 0; at < output.Length; at += 3, pieces++)
            channel.Writer.TryWrite(new GeneratedPiece(pieces, output.Substring(at, Math.Min(3, output.Length - at)), TimeSpan.Zero));
        channel.Writer.Complete();
        var summary = new GenerationSummary(request.Prompt.Count, 0, pieces, FinishReason.Stop, TimeSpan.Zero);
        return new GenerationStream(channel.Reader, Task.FromResult(summary));
    }
}
