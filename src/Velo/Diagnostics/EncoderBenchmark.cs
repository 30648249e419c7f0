using System.Diagnostics;
using Velo.Inference;

namespace Velo.Diagnostics;

/// <summary>One encoder test: how many inputs of how many tokens each, and the times of its runs.</summary>
public sealed record EncoderBenchResult(string Test, int Inputs, int TokensPerInput, double[] Milliseconds)
{
    public double MedianMilliseconds => Milliseconds.Order().ElementAt(Milliseconds.Length / 2);
    public double InputsPerSecond => Inputs * 1000 / MedianMilliseconds;
}

/// <summary>
/// <c>velo bench</c> for encoders: the latency of one short input and the throughput of a batch, on random token
/// ids between [CLS] and [SEP] (the same ids every run), after one warm-up run each.
/// </summary>
public static class EncoderBenchmark
{
    public static EncoderBenchResult Run(TextEmbedder embedder, int inputs, int tokensPerInput, int repetitions, int vocabSize)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(inputs, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(repetitions, 1);
        int tokens = Math.Clamp(tokensPerInput, 2, embedder.MaxInputTokens);
        int[] specials = embedder.Tokenize("");
        var random = new Random(1);
        // Ordinary word pieces sit past the first thousand ids in BERT vocabularies ([unused] and special tokens first).
        int low = Math.Min(1000, vocabSize - 1);
        int[][] batch = Enumerable.Range(0, inputs)
            .Select(_ => (int[])[specials[0], .. Enumerable.Range(0, tokens - 2).Select(_ => random.Next(low, vocabSize)), specials[^1]])
            .ToArray();
        embedder.EmbedTokens(batch);
        var times = new double[repetitions];
        for (int i = 0; i < repetitions; i++)
        {
            var clock = Stopwatch.StartNew();
            embedder.EmbedTokens(batch);
            times[i] = clock.Elapsed.TotalMilliseconds;
        }
        return new EncoderBenchResult($"embed {inputs}×{tokens}", inputs, tokens, times);
    }
}
