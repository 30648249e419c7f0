using Velo.Inference;
using Velo.Models;
using Velo.Runtime;
using Velo.Tensors;
using Velo.Threading;

namespace Velo.Tests.Models;

public class AllocationTests
{
    [Theory]
    [InlineData(GgmlType.F32)]
    [InlineData(GgmlType.F16)]
    [InlineData(GgmlType.Q8_0)]
    [InlineData(GgmlType.Q4_0)]
    [InlineData(GgmlType.Q4_K)]
    public void DecodeLoopAllocatesNothing(GgmlType type)
    {
        var spec = ReferenceForwardTests.Variant("llama-gqa") with { WeightType = type };
        string path = Path.Combine(Path.GetTempPath(), $"velo-alloc-{type}-{Environment.ProcessId}.gguf");
        try
        {
            ModelSynthesizer.Write(path, spec);
            using var model = ModelRegistry.Load(path);
            using var pool = new WorkerPool(2);
            using var state = model.CreateState(contextLength: 128, maxBatch: 1, pool: pool);
            var batch = new ForwardBatch(1);
            var sampler = new Sampler(new SamplerOptions { Seed = 1, RepeatPenalty = 1.1f }, model.Info.VocabSize);
            var history = new int[128];
            int token = 1;

            void Step(int position)
            {
                batch.Clear();
                batch.Add(token, position, wantLogits: true);
                model.Forward(state, batch);
                token = sampler.Sample(state.Output(0), history.AsSpan(0, position + 1));
                history[position + 1] = token;
            }

            for (int pos = 0; pos < 4; pos++) Step(pos); // warm-up: JIT, scratch buffers sized

            int position = 4;
            AllocationCheck.SomeWindowAllocatesNothing(() => Step(position++), stepsPerWindow: 15);
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Fact]
    public void LoadingDoesNotCopyWeightsIntoManagedMemory()
    {
        var spec = ReferenceForwardTests.Variant("llama-gqa") with { Layers = 8 };
        string path = Path.Combine(Path.GetTempPath(), $"velo-load-{Environment.ProcessId}.gguf");
        try
        {
            ModelSynthesizer.Write(path, spec);
            long fileSize = new FileInfo(path).Length;
            long before = GC.GetAllocatedBytesForCurrentThread();
            using var model = ModelRegistry.Load(path);
            long allocated = GC.GetAllocatedBytesForCurrentThread() - before;
            Assert.True(allocated < fileSize / 20, $"loading allocated {allocated} managed bytes for a {fileSize}-byte file");
        }
        finally
        {
            File.Delete(path);
        }
    }
}
