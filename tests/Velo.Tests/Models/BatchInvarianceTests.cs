using Velo.Inference;
using Velo.Kernels;
using Velo.Models;
using Velo.Runtime;
using Velo.Tensors;
using Velo.Threading;

namespace Velo.Tests.Models;

/// <summary>
/// A sequence's logits must not depend on what else is in the batch: continuous batching mixes requests freely,
/// and greedy answers must be the same alone or among others. Every matmul path (tiles of several tokens and the
/// single-token remainder) has to sum each token's products in the same order, for every weight type.
/// </summary>
public sealed class BatchInvarianceTests
{
    [Theory]
    [InlineData(GgmlType.F32)]
    [InlineData(GgmlType.F16)]
    [InlineData(GgmlType.BF16)]
    [InlineData(GgmlType.Q8_0)]
    [InlineData(GgmlType.Q4_0)]
    [InlineData(GgmlType.Q4_1)]
    [InlineData(GgmlType.Q5_0)]
    [InlineData(GgmlType.Q5_1)]
    [InlineData(GgmlType.Q6_K)]
    [InlineData(GgmlType.Q3_K)]
    [InlineData(GgmlType.Q2_K)]
    [InlineData(GgmlType.Q4_K)]
    [InlineData(GgmlType.Q5_K)]
    public void Logits_of_a_sequence_are_bit_identical_alone_and_in_any_batch(GgmlType type)
    {
        // Columns not a multiple of 32 floats or 8 blocks exercise every loop's tail; K-quant rows are whole super-blocks.
        bool kQuant = GgmlTypeInfo.BlockSize(type) == GgmlTypeInfo.QK_K;
        var spec = ReferenceForwardTests.Variant("llama-gqa") with { WeightType = type, Dim = kQuant ? 256 : 256 + 32 * 3, FfnDim = 512 + 256 };
        string path = Path.Combine(Path.GetTempPath(), $"velo-batch-invariance-{type}-{Environment.ProcessId}.gguf");
        try
        {
            ModelSynthesizer.Write(path, spec);
            using var model = ModelRegistry.Load(path);
            using var pool = new WorkerPool(2);
            float[] alone = Logits(model, pool, companions: 0);
            // 15 companions make batches large enough for the K-quants' unpacked prefill path.
            foreach (int companions in new[] { 1, 3, 4, 7, 15 })
                Assert.True(alone.AsSpan().SequenceEqual(Logits(model, pool, companions)), $"{type}: logits changed with {companions} other sequences in the batch");
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Fact]
    public void Logits_are_bit_identical_alone_and_in_any_batch_with_an_F16_KV_cache()
    {
        var spec = ReferenceForwardTests.Variant("llama-gqa") with { WeightType = GgmlType.Q4_0, Dim = 256 + 32 * 3, FfnDim = 512 + 256 };
        string path = Path.Combine(Path.GetTempPath(), $"velo-batch-invariance-f16kv-{Environment.ProcessId}.gguf");
        try
        {
            ModelSynthesizer.Write(path, spec);
            using var model = ModelRegistry.Load(path);
            using var pool = new WorkerPool(2);
            var f16 = new KvCacheTypes(GgmlType.F16, GgmlType.F16);
            float[] alone = Logits(model, pool, companions: 0, f16);
            foreach (int companions in new[] { 1, 4, 7 })
                Assert.True(alone.AsSpan().SequenceEqual(Logits(model, pool, companions, f16)), $"logits changed with {companions} other sequences in the batch");
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Theory]
    [InlineData(GgmlType.F16)]
    [InlineData(GgmlType.Q4_K)]
    [InlineData(GgmlType.Q4_0)]
    public void Logits_are_bit_identical_from_weights_copied_at_load_and_read_in_the_mapped_file(GgmlType type)
    {
        var spec = ReferenceForwardTests.Variant("llama-gqa") with { WeightType = type, Dim = 256, FfnDim = 512 + 256 };
        string path = Path.Combine(Path.GetTempPath(), $"velo-weight-copies-{type}-{Environment.ProcessId}.gguf");
        try
        {
            ModelSynthesizer.Write(path, spec);
            using var pool = new WorkerPool(2);
            WeightLoading.ReadMappedFile = true;
            using var mapped = ModelRegistry.Load(path);
            WeightLoading.ReadMappedFile = false;
            using var copied = ModelRegistry.Load(path);

            Assert.Equal(0, mapped.Repack.CopiedBytes);
            // Q4_0 is repacked either way; F16 into 16-row groups instead of the copy where the F16 group kernels run
            // (AVX-512); other types are copied as the file has them, every matrix multiplied (the embedding only
            // when tied to the output, not for its lookups).
            using var file = Velo.Formats.GgufFile.Open(path);
            bool tied = file.FindTensor("output.weight") == null;
            var multiplied = file.Tensors.Where(t => t.Shape.Count == 2 && (tied || t.Name != "token_embd.weight")).ToList();
            bool f16Groups = type == GgmlType.F16 && F16RowGroupKernels.IsSupported;
            Assert.Equal(type == GgmlType.Q4_0 || f16Groups ? 0 : multiplied.Sum(t => t.ByteSize), copied.Repack.CopiedBytes);
            long groupBytes = f16Groups ? multiplied.Sum(t => RowGroups.Bytes(type, (int)t.Shape[1], (int)t.Shape[0])) : 0;
            Assert.Equal(mapped.Repack.Bytes + groupBytes, copied.Repack.Bytes);
            Assert.True(Logits(mapped, pool, companions: 0).AsSpan().SequenceEqual(Logits(copied, pool, companions: 0)));
            Assert.True(Logits(mapped, pool, companions: 4).AsSpan().SequenceEqual(Logits(copied, pool, companions: 4)));
        }
        finally
        {
            WeightLoading.ReadMappedFile = false;
            File.Delete(path);
        }
    }

    /// <summary>Sequence 0 prefills 5 tokens and decodes 3, each step sharing the batch with other sequences' tokens; returns its last logits.</summary>
    private static float[] Logits(IModel model, WorkerPool pool, int companions, KvCacheTypes cacheTypes = default)
    {
        using var state = model.CreateState(contextLength: 32, maxBatch: 64, sequences: companions + 1, maxLogitRows: companions + 1, pool: pool,
            cacheTypes: cacheTypes);
        var batch = new ForwardBatch(64);
        int[] prompt = [1, 17, 42, 99, 7];
        // Companions go first so sequence 0's tokens land at every offset of the kernels' token tiles.
        batch.Clear();
        for (int s = 1; s <= companions; s++) batch.Add(5 * s, 0, s, wantLogits: true);
        int row = -1;
        for (int i = 0; i < prompt.Length; i++) row = batch.Add(prompt[i], i, 0, wantLogits: i == prompt.Length - 1);
        model.Forward(state, batch);
        for (int step = 0; step < 3; step++)
        {
            int next = ArgMax(state.Output(row));
            batch.Clear();
            for (int s = 1; s <= companions; s++) batch.Add(3 * s + step, step + 1, s, wantLogits: true);
            row = batch.Add(next, prompt.Length + step, 0, wantLogits: true);
            model.Forward(state, batch);
        }
        return state.Output(row).ToArray();
    }

    private static int ArgMax(ReadOnlySpan<float> values)
    {
        int best = 0;
        for (int i = 1; i < values.Length; i++)
            if (values[i] > values[best]) best = i;
        return best;
    }
}
