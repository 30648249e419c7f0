using System.Diagnostics;
using Velo.Inference;
using Velo.Models;
using Velo.Runtime;
using Velo.Threading;

namespace Velo.Tools.Training;

/// <summary>How a student is trained to imitate its teacher.</summary>
public sealed record DistillationSettings
{
    public int Steps { get; init; } = 200;

    /// <summary>Sequences per step (a mini-batch).</summary>
    public int BatchSequences { get; init; } = 8;

    public float LearningRate { get; init; } = 1e-3f;

    /// <summary>Warm-up steps; -1: a tenth of the steps.</summary>
    public int WarmupSteps { get; init; } = -1;

    public float WeightDecay { get; init; } = 0.01f;

    /// <summary>The gradient's global L2 norm is scaled down to this when larger.</summary>
    public float GradientClip { get; init; } = 1;

    /// <summary>Weight of the KL term; 1 − alpha goes to the plain next-token loss on the data's tokens.</summary>
    public float Alpha { get; init; } = 1;

    /// <summary>Temperature both distributions are softened by in the KL term.</summary>
    public float Temperature { get; init; } = 1;

    public ulong Seed { get; init; } = 42;

    public void Validate()
    {
        if (Steps < 1) throw new ArgumentException($"--steps must be at least 1, got {Steps}");
        if (BatchSequences < 1) throw new ArgumentException($"--batch-size must be at least 1, got {BatchSequences}");
        if (!(LearningRate > 0) || float.IsInfinity(LearningRate)) throw new ArgumentException($"--lr must be a positive number, got {LearningRate}");
        if (!(Alpha >= 0 && Alpha <= 1)) throw new ArgumentException($"--alpha must be in [0, 1], got {Alpha}");
        if (!(Temperature > 0) || float.IsInfinity(Temperature)) throw new ArgumentException($"--distill-temp must be positive, got {Temperature}");
        if (!(GradientClip > 0)) throw new ArgumentException($"the gradient clip must be positive, got {GradientClip}");
        if (WarmupSteps < -1) throw new ArgumentException($"--warmup must be 0 or more, got {WarmupSteps}");
    }
}

/// <summary>One finished step, for a progress display.</summary>
public sealed record TrainingStep(int Step, int Steps, double Loss, double GradientNorm, float LearningRate, double TokensPerSecond);

/// <summary>
/// Trains a Llama student (float master weights, <see cref="TrainableDecoder{T}"/>) to match a teacher's next-token
/// distributions on fixed sequences: each step draws a mini-batch of sequences with a generator seeded by the seed
/// and the step (so a resumed run draws what the uninterrupted one would), runs the teacher through Velo's inference
/// engine for its log-probabilities, then the student's forward and backward passes with one sequence per worker
/// at a time, each worker adding into its own gradient buffer; the buffers are summed in worker order, so a run
/// is deterministic for a fixed seed and thread count. The gradient is clipped by its global norm and AdamW
/// applied with warm-up and cosine decay. A loss or gradient that is not finite stops training before the update.
/// </summary>
public sealed class Distiller : IDisposable
{
    private readonly IModel _teacher;
    private readonly IModelState _teacherState;
    private readonly ForwardBatch _teacherBatch;
    private readonly WorkerPool _pool;
    private readonly TrainableDecoder<float> _student;
    private readonly DistillationSettings _settings;
    private readonly LearningRateSchedule _schedule;
    private readonly int _length;
    private readonly int _vocab;
    private readonly StepWork _work;
    private readonly float[] _scaledLogits;

    /// <param name="sequences">Training sequences, all of one length.</param>
    public Distiller(IModel teacher, ParameterLayout studentLayout, float[] studentParameters, IReadOnlyList<int[]> sequences,
        DistillationSettings settings, WorkerPool pool)
    {
        settings.Validate();
        if (sequences.Count == 0) throw new ArgumentException("there is no training text: give -f FILE or --generate N");
        _length = sequences[0].Length;
        if (_length < 2 || sequences.Any(s => s.Length != _length)) throw new ArgumentException("training sequences must all have one length of at least 2 tokens");
        if (teacher.Info.VocabSize != studentLayout.Shape.VocabSize)
            throw new ArgumentException($"the teacher has {teacher.Info.VocabSize} output tokens and the student {studentLayout.Shape.VocabSize}: they cannot share a tokenizer");
        if (studentParameters.Length != studentLayout.Count) throw new ArgumentException("the student's parameters do not match its layout");
        long needed = MemoryNeeded(studentLayout, settings.BatchSequences, _length, pool.ThreadCount);
        long available = AvailableMemory.Measure();
        if (needed > available)
            throw new InvalidOperationException(
                $"training this student needs about {needed >> 20} MiB (weights, moments and a gradient per thread in F32, activations of {_length}-token sequences) but {available >> 20} MiB are available; use a shorter -c, a smaller -b or fewer threads");
        _teacher = teacher;
        _pool = pool;
        _settings = settings;
        _vocab = studentLayout.Shape.VocabSize;
        Sequences = sequences;
        Parameters = studentParameters;
        Optimizer = new AdamW(studentLayout, weightDecay: settings.WeightDecay);
        int warmup = settings.WarmupSteps >= 0 ? settings.WarmupSteps : Math.Max(1, settings.Steps / 10);
        _schedule = new LearningRateSchedule(settings.LearningRate, Math.Min(warmup, settings.Steps), settings.Steps);
        _student = new TrainableDecoder<float>(studentLayout);
        _scaledLogits = new float[_vocab];
        _teacherBatch = new ForwardBatch(_length);
        _teacherState = teacher.CreateState(_length, _length, sequences: 1, maxLogitRows: _length, pool: pool);
        _work = new StepWork(_student, studentLayout, pool.ThreadCount, settings.BatchSequences, _length, _vocab);
    }

    public float[] Parameters { get; }
    public AdamW Optimizer { get; }
    public IReadOnlyList<int[]> Sequences { get; }

    /// <summary>Steps done so far; a resumed run sets it from its checkpoint.</summary>
    public int Step { get; set; }

    /// <summary>
    /// Bytes a run allocates: parameters, two AdamW moments and one gradient buffer per thread, per-thread
    /// activations and logit gradients, and the batch's teacher log-probabilities, all in float.
    /// </summary>
    public static long MemoryNeeded(ParameterLayout layout, int batch, int length, int threads)
    {
        var s = layout.Shape;
        long perLayer = (long)length * (6L * s.Dim + 4L * s.QueryDim + 3L * s.KvDim + 4L * s.FfnDim + 2) + (long)s.Heads * length * length;
        long activations = perLayer * s.Layers + (long)length * (3L * s.Dim + 2L * s.VocabSize);
        long floats = (long)layout.Count * (3 + threads) + threads * activations + (long)batch * length * s.VocabSize;
        return checked(floats * sizeof(float));
    }

    /// <summary>Continues from a checkpoint (its sequences must be those this distiller was given).</summary>
    public void Restore(TrainingCheckpoint.State state)
    {
        state.Parameters.CopyTo(Parameters, 0);
        state.FirstMoment.CopyTo(Optimizer.FirstMoment, 0);
        state.SecondMoment.CopyTo(Optimizer.SecondMoment, 0);
        Optimizer.Updates = state.Updates;
        Step = state.Step;
    }

    /// <summary>
    /// Runs one step. Returns its figures, or null when the loss or gradient was not finite, in which case the
    /// parameters are left as they were before the step.
    /// </summary>
    public TrainingStep? RunStep()
    {
        var clock = Stopwatch.StartNew();
        int batch = _settings.BatchSequences;
        var random = new Random(unchecked((int)(_settings.Seed * 0x9E3779B97F4A7C15 >> 33) ^ Step * 0x2545F491));
        for (int i = 0; i < batch; i++) _work.Batch[i] = Sequences[random.Next(Sequences.Count)];
        if (_settings.Alpha > 0)
            for (int i = 0; i < batch; i++) TeacherLogProbabilities(_work.Batch[i], _work.TeacherLogProbs[i]);

        _work.Parameters = Parameters;
        _work.Alpha = _settings.Alpha;
        _work.Temperature = _settings.Temperature;
        _work.PositionWeight = 1f / (batch * (_length - 1));
        var job = new StepJob(_work);
        _pool.Run(ref job);

        var gradient = _work.Gradients[0];
        for (int t = 1; t < _work.Gradients.Length; t++)
        {
            var other = _work.Gradients[t];
            for (int i = 0; i < gradient.Length; i++) gradient[i] += other[i];
        }
        double loss = 0;
        for (int i = 0; i < batch; i++) loss += _work.Losses[i];
        double squares = 0;
        foreach (float g in gradient) squares += (double)g * g;
        double norm = Math.Sqrt(squares);
        if (!double.IsFinite(loss) || !double.IsFinite(norm)) return null;

        if (norm > _settings.GradientClip)
        {
            float scale = (float)(_settings.GradientClip / norm);
            for (int i = 0; i < gradient.Length; i++) gradient[i] *= scale;
        }
        float rate = _schedule.At(Step);
        Optimizer.Step(Parameters, gradient, rate);
        Step++;
        return new TrainingStep(Step, _settings.Steps, loss, norm, rate, batch * _length / clock.Elapsed.TotalSeconds);
    }

    /// <summary>The teacher's log-probabilities at the distillation temperature, a row per position.</summary>
    private void TeacherLogProbabilities(int[] sequence, float[] logProbs)
    {
        _teacherState.Cache.RemoveRange(0, 0);
        _teacherBatch.Clear();
        for (int j = 0; j < sequence.Length; j++) _teacherBatch.Add(sequence[j], j, 0, wantLogits: true);
        _teacher.Forward(_teacherState, _teacherBatch);
        float inverse = 1 / _settings.Temperature;
        var scaled = _scaledLogits;
        for (int j = 0; j < sequence.Length; j++)
        {
            var logits = _teacherState.Output(j);
            for (int v = 0; v < _vocab; v++) scaled[v] = logits[v] * inverse;
            Perplexity.LogSoftmax(scaled, logProbs.AsSpan(j * _vocab, _vocab));
        }
    }

    public void Dispose() => _teacherState.Dispose();

    /// <summary>What a step's workers share: the batch, per-worker activations and gradient buffers, per-sequence losses.</summary>
    private sealed class StepWork
    {
        public StepWork(TrainableDecoder<float> student, ParameterLayout layout, int threads, int batch, int length, int vocab)
        {
            Student = student;
            Batch = new int[batch][];
            TeacherLogProbs = Enumerable.Range(0, batch).Select(_ => new float[length * vocab]).ToArray();
            Losses = new double[batch];
            Activations = Enumerable.Range(0, threads).Select(_ => new DecoderActivations<float>(layout.Shape, length)).ToArray();
            Scratch = Enumerable.Range(0, threads).Select(_ => new DecoderGradientScratch<float>(layout.Shape, length)).ToArray();
            Gradients = Enumerable.Range(0, threads).Select(_ => new float[layout.Count]).ToArray();
            LogitGradients = Enumerable.Range(0, threads).Select(_ => new float[length * vocab]).ToArray();
            Vocab = vocab;
        }

        public TrainableDecoder<float> Student { get; }
        public int[][] Batch { get; }
        public float[][] TeacherLogProbs { get; }
        public double[] Losses { get; }
        public DecoderActivations<float>[] Activations { get; }
        public DecoderGradientScratch<float>[] Scratch { get; }
        public float[][] Gradients { get; }
        public float[][] LogitGradients { get; }
        public int Vocab { get; }
        public float[] Parameters { get; set; } = [];
        public float Alpha { get; set; }
        public float Temperature { get; set; }
        public float PositionWeight { get; set; }
    }

    /// <summary>Worker t takes sequences t, t + threads, …, in order, into its own gradient buffer.</summary>
    private readonly struct StepJob(StepWork work) : IParallelJob
    {
        public void Execute(int threadIndex, int threadCount)
        {
            var gradients = work.Gradients[threadIndex];
            Array.Clear(gradients);
            var activations = work.Activations[threadIndex];
            var dLogits = work.LogitGradients[threadIndex];
            int vocab = work.Vocab;
            for (int i = threadIndex; i < work.Batch.Length; i += threadCount)
            {
                int[] tokens = work.Batch[i];
                work.Student.Forward(work.Parameters, tokens, activations);
                double loss = 0;
                for (int t = 0; t < tokens.Length; t++)
                {
                    var row = dLogits.AsSpan(t * vocab, vocab);
                    if (t == tokens.Length - 1)
                    {
                        row.Clear(); // the last position has no next token to learn
                        continue;
                    }
                    loss += TrainingOps<float>.DistillationLoss(activations.Logits.AsSpan(t * vocab, vocab), tokens[t + 1],
                        work.Alpha > 0 ? work.TeacherLogProbs[i].AsSpan(t * vocab, vocab) : [], work.Alpha, work.Temperature, work.PositionWeight, row);
                }
                work.Losses[i] = loss;
                work.Student.Backward(work.Parameters, activations, dLogits, gradients, work.Scratch[threadIndex]);
            }
        }
    }
}
