using Velo.Runtime;
using Velo.Inference;
using Velo.Models;
using Velo.Tensors;
using Velo.Threading;

namespace Velo.Tests.Inference;

/// <summary>
/// The KV memory's layout and sequence operations (llama.cpp's seq_rm, seq_cp, seq_keep): what they leave behind
/// must be indistinguishable from a fresh run of the same tokens, down to the last bit of every logit.
/// </summary>
public sealed unsafe class KvMemoryTests : IDisposable
{
    private readonly string _folder = Directory.CreateTempSubdirectory("velo-kv-memory-").FullName;

    public void Dispose() => Directory.Delete(_folder, recursive: true);

    /// <summary>A small random-weight model with heads of 32 dimensions, the least a Q8_0 cache takes.</summary>
    private string SmallModel()
    {
        string path = Path.Combine(_folder, "small.gguf");
        var spec = new SynthSpec { Dim = 128, Layers = 2, Heads = 4, KvHeads = 2, FfnDim = 256, VocabSize = 320, ContextLength = 64, NormJitter = 0.1f };
        ModelSynthesizer.Write(path, spec, threads: 2);
        return path;
    }

    public static TheoryData<string, GgmlType> Models => new()
    {
        { "stories260K", GgmlType.F32 },
        { "stories260K", GgmlType.F16 },
        { "small", GgmlType.Q8_0 },
        { "small", GgmlType.F16 },
    };

    /// <summary>
    /// Prefill a prompt and a draft on sequence 0, roll the draft back, fork the prompt into sequence 1, decode both
    /// together, keep sequence 1 alone and decode on: every logit equals that of a fresh single-sequence run.
    /// </summary>
    [Theory]
    [MemberData(nameof(Models))]
    public void Fork_remove_keep_and_continue_equal_a_fresh_run_bit_for_bit(string modelName, GgmlType cacheType)
    {
        using var model = ModelRegistry.Load(modelName == "small" ? SmallModel() : TestPaths.Stories260K);
        using var pool = new WorkerPool(2);
        var types = new KvCacheTypes(cacheType, cacheType);
        int vocab = model.Info.VocabSize;
        int[] prompt = [.. Enumerable.Range(0, 12).Select(i => i == 0 ? 1 : (i * 37 + 11) % vocab)];
        int[] draft = [.. Enumerable.Range(0, 5).Select(i => (i * 53 + 7) % vocab)];
        int[] continuation = [.. Enumerable.Range(0, 8).Select(i => (i * 29 + 3) % vocab)];

        // The fresh run: the prompt in one pass, then the continuation token by token.
        var fresh = new List<float[]>();
        using (var state = model.CreateState(64, maxBatch: 32, sequences: 1, pool: pool, cacheTypes: types))
        {
            var batch = new ForwardBatch(32);
            for (int i = 0; i < prompt.Length; i++) batch.Add(prompt[i], i, wantLogits: i == prompt.Length - 1);
            model.Forward(state, batch);
            fresh.Add(state.Output(0).ToArray());
            for (int i = 0; i < continuation.Length; i++)
            {
                batch.Clear();
                batch.Add(continuation[i], prompt.Length + i, wantLogits: true);
                model.Forward(state, batch);
                fresh.Add(state.Output(0).ToArray());
            }
        }

        using (var state = model.CreateState(64, maxBatch: 32, sequences: 3, pool: pool, cacheTypes: types))
        {
            var cache = state.Cache;
            var batch = new ForwardBatch(32);
            // Prompt and a draft on sequence 0, something unrelated on sequence 2.
            for (int i = 0; i < prompt.Length + draft.Length; i++)
                batch.Add(i < prompt.Length ? prompt[i] : draft[i - prompt.Length], i, sequence: 0);
            for (int i = 0; i < 6; i++) batch.Add(draft[i % draft.Length], i, sequence: 2);
            model.Forward(state, batch);
            Assert.Equal(prompt.Length + draft.Length, cache.Length(0));

            // Reject the draft and the last prompt token, whose logits are decoded again.
            cache.RemoveRange(0, prompt.Length - 1);
            Assert.Equal(prompt.Length - 1, cache.Length(0));
            batch.Clear();
            batch.Add(prompt[^1], prompt.Length - 1, sequence: 0, wantLogits: true);
            model.Forward(state, batch);
            Assert.Equal(fresh[0], state.Output(0).ToArray());

            // Fork the prompt into sequence 1, which held nothing, in two copies: a prefix, then the rest.
            cache.Copy(0, 1, 0, 5);
            cache.Copy(0, 1, 5, prompt.Length);
            Assert.Equal(prompt.Length, cache.Length(1));
            batch.Clear();
            batch.Add(continuation[0], prompt.Length, sequence: 0, wantLogits: true);
            batch.Add(continuation[0], prompt.Length, sequence: 1, wantLogits: true);
            model.Forward(state, batch);
            Assert.Equal(fresh[1], state.Output(0).ToArray());
            Assert.Equal(fresh[1], state.Output(1).ToArray());

            cache.Keep(1);
            Assert.Equal(0, cache.Length(0));
            Assert.Equal(0, cache.Length(2));
            for (int i = 1; i < continuation.Length; i++)
            {
                batch.Clear();
                batch.Add(continuation[i], prompt.Length + i, sequence: 1, wantLogits: true);
                model.Forward(state, batch);
                Assert.Equal(fresh[i + 1], state.Output(0).ToArray());
            }
        }
    }

    /// <summary>Stored rows are exactly what the type's converter makes of them: the Q8_0 reference quantizer's bytes, F16's rounding, F32's copy.</summary>
    [Theory]
    [InlineData(GgmlType.Q8_0, 32)]
    [InlineData(GgmlType.Q8_0, 128)]
    [InlineData(GgmlType.F16, 40)]
    [InlineData(GgmlType.F32, 40)]
    public void Stored_rows_equal_the_converters_bytes(GgmlType type, int headDim)
    {
        const int layers = 2, sequences = 2, context = 8, kvHeads = 3;
        int kvDim = kvHeads * headDim;
        var rng = new Random(headDim);
        var batch = new ForwardBatch(sequences * context);
        for (int p = 0; p < context; p++)
            for (int s = 0; s < sequences; s++) batch.Add(0, p, s);
        float[] keys = [.. Enumerable.Range(0, batch.Count * kvDim).Select(i => (float)((rng.NextDouble() * 2 - 1) * (i % 17 == 0 ? 1e-3 : 4)))];
        float[] values = [.. keys.Select(x => -2 * x)];
        using var cache = new KvCache(layers, sequences, context, kvHeads, headDim, type, type);
        cache.Append(batch);
        fixed (float* k = keys, v = values)
            for (int l = 0; l < layers; l++) cache.Store(l, batch, k, v);

        var expected = new byte[GgmlTypeInfo.RowBytes(type, headDim)];
        for (int l = 0; l < layers; l++)
        {
            var layer = cache.Layer(l);
            for (int i = 0; i < batch.Count; i++)
                for (int h = 0; h < kvHeads; h++)
                {
                    var head = layer.Head(batch.Sequences[i], h);
                    long at = (long)batch.Positions[i] * expected.Length;
                    Quantize.Row(type, keys.AsSpan(i * kvDim + h * headDim, headDim), expected);
                    Assert.Equal(expected, new ReadOnlySpan<byte>(head.Keys + at, expected.Length).ToArray());
                    Quantize.Row(type, values.AsSpan(i * kvDim + h * headDim, headDim), expected);
                    Assert.Equal(expected, new ReadOnlySpan<byte>(head.Values + at, expected.Length).ToArray());
                }
        }
    }

    [Fact]
    public void Copy_moves_exactly_the_range_and_every_layer_and_head()
    {
        const int layers = 2, context = 10, kvHeads = 2, headDim = 4, kvDim = kvHeads * headDim;
        using var cache = new KvCache(layers, 2, context, kvHeads, headDim);
        var batch = new ForwardBatch(2 * context);
        for (int p = 0; p < context; p++) batch.Add(0, p, 0);
        for (int p = 0; p < 3; p++) batch.Add(0, p, 1);
        float[] keys = [.. Enumerable.Range(0, batch.Count * kvDim).Select(i => (float)i)], values = [.. keys.Select(x => -x)];
        cache.Append(batch);
        fixed (float* k = keys, v = values)
            for (int l = 0; l < layers; l++) cache.Store(l, batch, k, v);

        cache.Copy(0, 1, 2, 7);

        Assert.Equal(7, cache.Length(1));
        Assert.Equal(context, cache.Length(0));
        for (int l = 0; l < layers; l++)
            for (int h = 0; h < kvHeads; h++)
            {
                var source = cache.Layer(l).Head(0, h);
                var destination = cache.Layer(l).Head(1, h);
                for (int p = 0; p < 7; p++)
                    for (int d = 0; d < headDim; d++)
                    {
                        // Positions 0 and 1 keep sequence 1's own rows (batch rows context + p); 2..6 are sequence 0's.
                        int row = p < 2 ? context + p : p;
                        Assert.Equal(keys[row * kvDim + h * headDim + d], ((float*)destination.Keys)[p * headDim + d]);
                        Assert.Equal(values[row * kvDim + h * headDim + d], ((float*)destination.Values)[p * headDim + d]);
                        Assert.Equal(keys[p * kvDim + h * headDim + d], ((float*)source.Keys)[p * headDim + d]);
                    }
            }
    }

    [Fact]
    public void Commit_writes_an_empty_cache_and_refuses_one_that_holds_positions()
    {
        const int headDim = 4;
        using var cache = new KvCache(2, 2, 8, 1, headDim);
        cache.Commit();
        Assert.All(new ReadOnlySpan<float>(cache.Layer(1).Head(1, 0).Values, 8 * headDim).ToArray(), x => Assert.Equal(0f, x));

        var batch = new ForwardBatch(1);
        batch.Add(0, 0, 1);
        float[] keys = [1, 2, 3, 4], values = [5, 6, 7, 8];
        cache.Append(batch);
        fixed (float* k = keys, v = values)
            for (int l = 0; l < 2; l++) cache.Store(l, batch, k, v);
        var e = Assert.Throws<InvalidOperationException>(cache.Commit);
        Assert.Contains("sequence 1 holds 1 positions", e.Message);
        Assert.Equal(values, new ReadOnlySpan<float>(cache.Layer(1).Head(1, 0).Values, headDim).ToArray());
    }

    [Fact]
    public void Sequence_operations_refuse_what_a_contiguous_layout_cannot_hold()
    {
        using var cache = new KvCache(1, 2, 16, 1, 32);
        var batch = new ForwardBatch(16);
        for (int p = 0; p < 10; p++) batch.Add(0, p, 0);
        cache.Append(batch);

        // A hole in the middle: llama.cpp masks it, a contiguous sequence cannot.
        var middle = Assert.Throws<NotSupportedException>(() => cache.RemoveRange(0, 3, 5));
        Assert.Contains("from the middle of sequence 0, which holds 10", middle.Message);
        Assert.Equal(10, cache.Length(0));
        cache.RemoveRange(0, 12, 20); // nothing stored there
        cache.RemoveRange(0, 4, 10);  // a range reaching the end is a tail
        Assert.Equal(4, cache.Length(0));

        // Positions must continue a sequence: no gaps, and consecutive within a batch.
        batch.Clear();
        batch.Add(0, 5, 0);
        Assert.Throws<ArgumentException>(() => cache.Append(batch));
        batch.Clear();
        batch.Add(0, 4, 1);
        Assert.Throws<ArgumentException>(() => cache.Append(batch));
        batch.Clear();
        batch.Add(0, 4, 0);
        batch.Add(0, 6, 0);
        Assert.Throws<ArgumentException>(() => cache.Append(batch));
        Assert.Equal(4, cache.Length(0));

        // A position before the end rewrites the sequence from there.
        batch.Clear();
        batch.Add(0, 2, 0);
        cache.Append(batch);
        Assert.Equal(3, cache.Length(0));

        Assert.Throws<ArgumentOutOfRangeException>(() => cache.Copy(0, 1, 0, 4)); // sequence 0 holds 3
        Assert.Throws<ArgumentException>(() => cache.Copy(0, 1, 1, 3));            // sequence 1 lacks position 0
        Assert.Throws<ArgumentOutOfRangeException>(() => cache.Keep(2));
    }

    [Fact]
    public void A_Q8_0_cache_is_sized_and_parsed_like_llama_cpps()
    {
        Assert.Equal(GgmlType.Q8_0, KvCacheTypes.Parse("q8_0"));
        // 34 bytes per 32 elements, keys and values, per layer, sequence and position.
        long bytes = KvCache.BytesFor(3, 2, 16, 256, new KvCacheTypes(GgmlType.Q8_0, GgmlType.Q8_0));
        Assert.Equal(3L * 2 * 2 * 16 * 256 / 32 * 34, bytes);
        using var cache = new KvCache(3, 2, 16, 4, 64, GgmlType.Q8_0, GgmlType.Q8_0);
        Assert.Equal(bytes, cache.Bytes);
        var e = Assert.Throws<ArgumentException>(() => new KvCache(1, 1, 16, 2, 48, GgmlType.F16, GgmlType.Q8_0));
        Assert.Contains("this model's values have 48", e.Message);
    }
}
