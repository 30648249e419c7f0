using Velo.Generation;
using Velo.Diagnostics;
using Velo.Inference;
using Velo.Runtime;
using Velo.Tensors;
using Velo.Threading;

namespace Velo.Tests.Inference;

public sealed class MemoryPlanTests : IDisposable
{
    private const long SixtyFourMiB = 64L << 20;

    private readonly LanguageModel _model = LanguageModel.Load(TestPaths.Stories260K);
    private readonly WorkerPool _pool = new(1);

    public void Dispose()
    {
        _pool.Dispose();
        _model.Dispose();
    }

    [Theory]
    [InlineData(512, 512, 1, 1, GgmlType.F32, GgmlType.F32)]
    [InlineData(64, 9, 4, 4, GgmlType.F16, GgmlType.F32)]
    [InlineData(128, 33, 3, 33, GgmlType.F16, GgmlType.F16)]
    public void The_estimate_is_what_the_state_allocates(int context, int maxBatch, int sequences, int logitRows, GgmlType keys, GgmlType values)
    {
        var types = new KvCacheTypes(keys, values);
        var plan = MemoryPlan.For(_model.Model, context, sequences, maxBatch, logitRows, types);
        using var state = _model.Model.CreateState(context, maxBatch, sequences, logitRows, _pool, types);

        Assert.Equal(state.Cache.Bytes, plan.KvCacheBytes);
        Assert.Equal(state.ScratchBytes, plan.ScratchBytes);
        Assert.True(plan.WeightBytes >= _model.Model.File.Tensors.Sum(t => t.ByteSize));
        Assert.True(plan.WeightBytes < _model.Model.File.FileSize);
        Assert.Equal(plan.WeightBytes + plan.KvCacheBytes + plan.ScratchBytes, plan.TotalBytes);
    }

    [Fact]
    public void A_scheduler_that_does_not_fit_is_refused_naming_a_ctx_and_a_parallel_that_do()
    {
        var options = new BatchSchedulerOptions { ContextLength = 20_000, Parallel = 8, AvailableMemoryBytes = SixtyFourMiB };

        var e = Assert.Throws<NotEnoughMemoryException>(() => new BatchScheduler(_model, options, _pool, start: false));

        Assert.Equal(SixtyFourMiB, e.AvailableBytes);
        Assert.True(e.NeededBytes > SixtyFourMiB);
        Assert.InRange(e.FittingContextLength, 1, options.ContextLength - 1);
        Assert.InRange(e.FittingSequences, 1, options.Parallel - 1);
        Assert.Contains("64.0 MiB of memory is available", e.Message);
        Assert.Contains($"--ctx {e.FittingContextLength} with --parallel 8", e.Message);
        Assert.Contains($"--parallel {e.FittingSequences} with --ctx 20000", e.Message);
        // What it suggests really fits, and is the most that does.
        using (new BatchScheduler(_model, options with { ContextLength = e.FittingContextLength }, _pool, start: false)) { }
        using (new BatchScheduler(_model, options with { Parallel = e.FittingSequences }, _pool, start: false)) { }
        Assert.Throws<NotEnoughMemoryException>(() => new BatchScheduler(_model, options with { ContextLength = e.FittingContextLength + 1 }, _pool, start: false));
        Assert.Throws<NotEnoughMemoryException>(() => new BatchScheduler(_model, options with { Parallel = e.FittingSequences + 1 }, _pool, start: false));
    }

    [Fact]
    public void When_not_even_a_context_of_one_fits_the_refusal_says_so()
    {
        var options = new BatchSchedulerOptions { ContextLength = 16, Parallel = 1, AvailableMemoryBytes = 1L << 20 };

        var e = Assert.Throws<NotEnoughMemoryException>(() => new BatchScheduler(_model, options, _pool, start: false));

        Assert.Equal(0, e.FittingContextLength);
        Assert.Contains("not even --ctx 1 fits", e.Message);
    }

    /// <summary>Sizes past 63 bits are refused as "more than 8 EiB", never wrapped or thrown as an OverflowException.</summary>
    [Fact]
    public void Sizes_that_overflow_are_refused_without_allocating()
    {
        Assert.Throws<OverflowException>(() => KvCache.BytesFor(int.MaxValue, int.MaxValue, int.MaxValue, int.MaxValue, default));
        var options = new BatchSchedulerOptions { ContextLength = int.MaxValue, Parallel = int.MaxValue };

        var e = Assert.Throws<NotEnoughMemoryException>(() => new BatchScheduler(_model, options, _pool, start: false));

        Assert.Equal(long.MaxValue, e.NeededBytes);
        Assert.Contains("needs more than 8 EiB", e.Message);
        Assert.Contains("lower both --ctx and --parallel", e.Message);
    }

    [Fact]
    public void Perplexity_refuses_a_chunk_too_large_for_memory_and_names_one_that_fits()
    {
        var settings = new PerplexitySettings { ContextLength = 1_000_000, BatchSize = 512, AvailableMemoryBytes = SixtyFourMiB };

        var e = Assert.Throws<NotEnoughMemoryException>(() => new Perplexity(_model.Model, settings, _pool));

        Assert.Contains($"what fits: --ctx-size {e.FittingContextLength}", e.Message);
        using (new Perplexity(_model.Model, settings with { ContextLength = e.FittingContextLength }, _pool)) { }
    }

    [Fact]
    public void A_benchmark_too_large_for_memory_is_refused_before_allocating()
    {
        var e = Assert.Throws<NotEnoughMemoryException>(() => Benchmark.EnsureTextGenerationFits(_model.Model, 100_000, 8, availableBytes: SixtyFourMiB));

        Assert.Contains($"--n-gen {e.FittingContextLength} with --parallel 8", e.Message);
    }

    [Fact]
    public void A_negative_context_is_an_error_not_the_default()
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => new BatchScheduler(_model, new BatchSchedulerOptions { ContextLength = -5 }, _pool, start: false));
        Assert.Throws<ArgumentOutOfRangeException>(() => new TextGenerator(_model, contextLength: -5, pool: _pool));
    }

    [Fact]
    public void Available_memory_comes_from_MemAvailable()
    {
        const string memInfo = "MemTotal:       24576000 kB\nMemFree:         1000000 kB\nMemAvailable:   12000000 kB\nBuffers:  1 kB\n";
        Assert.Equal(12_000_000L * 1024, AvailableMemory.ParseMemAvailable(memInfo));
        Assert.Null(AvailableMemory.ParseMemAvailable("MemTotal: 1 kB\n"));
        Assert.Null(AvailableMemory.ParseMemAvailable("MemAvailable: lots kB\n"));
        Assert.Null(AvailableMemory.ParseMemAvailable("MemAvailable: 99999999999999999 kB\n"));

        long measured = AvailableMemory.Measure();
        Assert.InRange(measured, 1, GC.GetGCMemoryInfo().TotalAvailableMemoryBytes);
    }
}
