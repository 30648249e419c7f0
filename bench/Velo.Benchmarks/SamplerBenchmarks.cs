using BenchmarkDotNet.Attributes;
using Velo.Inference;

namespace Velo.Benchmarks;

/// <summary>One sampling step over a Llama 3 sized vocabulary (128,256 random logits), with a 64-token history.</summary>
[MemoryDiagnoser]
public class SamplerBenchmarks
{
    private const int VocabSize = 128256;
    private readonly float[] _logits = new float[VocabSize];
    private readonly int[] _history = Enumerable.Range(0, 64).Select(i => i * 97 % VocabSize).ToArray();
    private Sampler _greedy = null!;
    private Sampler _default = null!;
    private Sampler _penalizedAndBiased = null!;

    [GlobalSetup]
    public void Setup()
    {
        var rng = new Random(1);
        for (int i = 0; i < VocabSize; i++) _logits[i] = (float)(rng.NextDouble() * 20 - 10);
        _greedy = new Sampler(SamplerOptions.Greedy, VocabSize);
        _default = new Sampler(new SamplerOptions { Seed = 1 }, VocabSize);
        _penalizedAndBiased = new Sampler(new SamplerOptions { Seed = 1, RepeatPenalty = 1.1f }, VocabSize,
            new Dictionary<int, float> { [5] = 3, [77] = -100 });
    }

    [Benchmark]
    public int Greedy() => _greedy.Sample(_logits, _history);

    [Benchmark]
    public int DefaultSampling() => _default.Sample(_logits, _history);

    [Benchmark]
    public int PenaltiesAndLogitBias() => _penalizedAndBiased.Sample(_logits, _history);

    [Benchmark]
    public int Distribution() => _default.Distribution(_logits, _history).Count;
}
