using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using Spectre.Console;
using Velo.Formats;
using Velo.Inference;
using Velo.Threading;
using Velo.Tools;
using Velo.Tools.Training;

namespace Velo.Cli.Commands;

/// <summary>
/// <c>velo distill --teacher T.gguf --student S.gguf -o OUT.gguf</c>: trains a student to match a teacher's
/// next-token distributions, on a text and/or text the teacher generates, and writes it as an F32 GGUF.
/// </summary>
internal static class DistillCommand
{
    public static Command Create()
    {
        var teacher = new Option<string>("--teacher") { Description = "GGUF model to imitate", Required = true };
        var student = new Option<string?>("--student") { Description = "GGUF Llama model to train (a pruned teacher, say)" };
        var studentShape = new Option<string?>("--student-shape") { Description = "Train a new student from scratch instead, e.g. dim=32,layers=3,heads=4,kv-heads=2,ffn=86 (unnamed sizes: the teacher's)" };
        var output = new Option<string>("--output", "-o") { Description = "GGUF file to write the trained student to", Required = true };
        var textFile = new Option<FileInfo?>("--file", "-f") { Description = "Training text" };
        var generate = new Option<int>("--generate") { Description = "Also train on N sequences the teacher samples from BOS (sequence-level distillation)" }.AtLeast(0);
        var temperature = new Option<float>("--temp") { Description = "Sampling temperature of the generated text", DefaultValueFactory = _ => 1f };
        var topK = new Option<int>("--top-k") { Description = "Top-k sampling of the generated text (0: off)", DefaultValueFactory = _ => 0 }.AtLeast(0);
        var alpha = new Option<float>("--alpha") { Description = "Weight of the KL divergence to the teacher; 1 - alpha weighs the plain next-token loss", DefaultValueFactory = _ => 1f };
        var distillTemperature = new Option<float>("--distill-temp") { Description = "Temperature softening both distributions in the KL term", DefaultValueFactory = _ => 1f };
        var steps = new Option<int>("--steps") { Description = "Optimizer steps", DefaultValueFactory = _ => 200 }.AtLeast(1);
        var learningRate = new Option<float>("--lr") { Description = "Peak learning rate (AdamW, warm-up then cosine decay to a tenth)", DefaultValueFactory = _ => 1e-3f };
        var warmup = new Option<int>("--warmup") { Description = "Warm-up steps (default: a tenth of the steps)", DefaultValueFactory = _ => -1 };
        var batch = new Option<int>("--batch-size", "-b") { Description = "Sequences per step", DefaultValueFactory = _ => 8 }.AtLeast(1);
        var context = new Option<int>("--ctx-size", "-c") { Description = "Tokens per training sequence", DefaultValueFactory = _ => 128 }.AtLeast(2);
        var seed = new Option<ulong>("--seed") { Description = "Seed of the generated text, the initialisation and the batches", DefaultValueFactory = _ => 42 };
        var checkpoint = new Option<string?>("--checkpoint") { Description = "Directory to keep the training state in (checkpoint.bin)" };
        var checkpointEvery = new Option<int>("--checkpoint-every") { Description = "Steps between checkpoints", DefaultValueFactory = _ => 50 }.AtLeast(1);
        var resume = new Option<bool>("--resume") { Description = "Continue from the checkpoint in --checkpoint DIR" };
        var threads = CommonOptions.Threads();
        var command = new Command("distill", "Train a student model to imitate a teacher's next-token distributions (knowledge distillation)")
        {
            teacher, student, studentShape, output, textFile, generate, temperature, topK, alpha, distillTemperature, steps, learningRate, warmup,
            batch, context, seed, checkpoint, checkpointEvery, resume, threads,
        };
        command.SetAction(parse => CommonOptions.Guard(() => Run(new Arguments(
            parse.GetValue(teacher)!, parse.GetValue(student), parse.GetValue(studentShape), parse.GetValue(output)!, parse.GetValue(textFile),
            parse.GetValue(generate), new SamplerOptions { Temperature = parse.GetValue(temperature), TopK = parse.GetValue(topK), TopP = 1, MinP = 0 },
            new DistillationSettings
            {
                Steps = parse.GetValue(steps), BatchSequences = parse.GetValue(batch), LearningRate = parse.GetValue(learningRate),
                WarmupSteps = parse.GetValue(warmup), Alpha = parse.GetValue(alpha), Temperature = parse.GetValue(distillTemperature), Seed = parse.GetValue(seed),
            },
            parse.GetValue(context), parse.GetValue(checkpoint), parse.GetValue(checkpointEvery), parse.GetValue(resume), parse.GetValue(threads)))));
        return command;
    }

    private sealed record Arguments(
        string Teacher, string? Student, string? StudentShape, string Output, FileInfo? TextFile, int Generate, SamplerOptions Sampling,
        DistillationSettings Settings, int SequenceLength, string? CheckpointDirectory, int CheckpointEvery, bool Resume, int Threads);

    private static int Run(Arguments a)
    {
        a.Settings.Validate();
        if ((a.Student == null) == (a.StudentShape == null)) throw new ArgumentException("give the student as --student FILE or --student-shape SIZES (one of them)");
        if (a.Resume && a.CheckpointDirectory == null) throw new ArgumentException("--resume needs --checkpoint DIR");
        if (a.Resume && (a.TextFile != null || a.Generate > 0))
            throw new ArgumentException("--resume trains on the sequences kept in the checkpoint; leave out -f and --generate");
        if (!a.Resume && a.TextFile == null && a.Generate == 0) throw new ArgumentException("there is no training text: give -f FILE and/or --generate N");

        using var teacher = LanguageModel.Load(a.Teacher);
        using var template = GgufFile.Open(a.Student ?? a.Teacher);
        DecoderShape shape;
        float[] parameters;
        if (a.Student != null)
        {
            using (var studentModel = LanguageModel.Load(a.Student))
                ModelComparison.RequireSameTokenizer(teacher, "teacher", studentModel, "student");
            shape = DecoderGguf.ReadShape(template);
            parameters = DecoderGguf.ReadParameters(template, new ParameterLayout(shape));
        }
        else
        {
            shape = ParseShape(a.StudentShape!, DecoderGguf.ReadShape(template));
            parameters = new ParameterLayout(shape).RandomParameters(a.Settings.Seed);
        }
        var layout = new ParameterLayout(shape);
        using var pool = new WorkerPool(a.Threads);

        TrainingCheckpoint.State? resumed = a.Resume ? TrainingCheckpoint.Load(a.CheckpointDirectory!, shape) : null;
        var sequences = resumed?.Sequences ?? TrainingSequences(teacher, a, pool);
        Console.Error.WriteLine(Invariant($"distill: student {shape.Layers} layers, dim {shape.Dim}, ffn {shape.FfnDim}, heads {shape.Heads}/{shape.KvHeads}, {layout.Count / 1e6:F3} M parameters; {sequences.Count} sequences of {sequences[0].Length} tokens"));

        using var distiller = new Distiller(teacher.Model, layout, parameters, sequences, a.Settings, pool);
        if (resumed != null)
        {
            distiller.Restore(resumed);
            Console.Error.WriteLine($"distill: resumed at step {distiller.Step} from {TrainingCheckpoint.PathIn(a.CheckpointDirectory!)}");
        }
        int lastCheckpoint = resumed?.Step ?? -1;
        var clock = Stopwatch.StartNew();
        TrainingStep? last = null;
        bool diverged = false;
        WithProgress(a.Settings.Steps, distiller.Step, (report) =>
        {
            while (distiller.Step < a.Settings.Steps)
            {
                var step = distiller.RunStep();
                if (step == null)
                {
                    diverged = true;
                    return;
                }
                last = step;
                report(step);
                if (a.CheckpointDirectory != null && (step.Step % a.CheckpointEvery == 0 || step.Step == a.Settings.Steps))
                {
                    TrainingCheckpoint.Save(a.CheckpointDirectory, distiller);
                    lastCheckpoint = step.Step;
                }
            }
        });
        if (diverged)
        {
            string kept = lastCheckpoint >= 0
                ? $"the last good checkpoint, step {lastCheckpoint}, is kept in {TrainingCheckpoint.PathIn(a.CheckpointDirectory!)}; resume from it with a lower --lr"
                : "no checkpoint was written (use --checkpoint DIR to keep one)";
            throw new InvalidOperationException($"the loss became NaN or infinite at step {distiller.Step + 1}; training stopped without writing {a.Output}; {kept}");
        }
        DecoderGguf.Write(a.Output, template, layout, distiller.Parameters);
        if (last != null)
            Console.Error.WriteLine(Invariant($"distill: {distiller.Step} steps, final loss {last.Loss:F4}, {clock.Elapsed.TotalSeconds:F1} s"));
        Console.Out.WriteLine($"written {a.Output}");
        return 0;
    }

    private static List<int[]> TrainingSequences(LanguageModel teacher, Arguments a, WorkerPool pool)
    {
        int bos = teacher.Tokenizer.AddBos ? teacher.Tokenizer.BosId : -1;
        var sequences = new List<int[]>();
        if (a.TextFile != null)
        {
            sequences.AddRange(TrainingText.Chunks(teacher.Tokenizer.Encode(File.ReadAllText(a.TextFile.FullName), addSpecial: true), a.SequenceLength, bos));
            if (sequences.Count == 0) throw new ArgumentException($"{a.TextFile.Name} holds fewer than {a.SequenceLength} tokens, one training sequence (-c)");
        }
        if (a.Generate > 0)
        {
            var clock = Stopwatch.StartNew();
            int every = Math.Max(1, a.Generate / 10);
            sequences.AddRange(TrainingText.Generate(teacher, a.Generate, a.SequenceLength, a.Sampling, a.Settings.Seed, pool, i =>
            {
                if ((i + 1) % every == 0) Console.Error.WriteLine($"distill: generating {i + 1}/{a.Generate} sequences ..");
            }));
            Console.Error.WriteLine(Invariant($"distill: the teacher generated {a.Generate} sequences of {a.SequenceLength} tokens in {clock.Elapsed.TotalSeconds:F1} s"));
        }
        return sequences;
    }

    /// <summary>The teacher's shape with the sizes <paramref name="spec"/> names (dim, layers, heads, kv-heads, ffn) replaced.</summary>
    private static DecoderShape ParseShape(string spec, DecoderShape teacher)
    {
        var shape = teacher with { TiedOutput = false };
        bool dimChanged = false, headsChanged = false;
        foreach (string part in spec.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            string[] kv = part.Split('=', 2, StringSplitOptions.TrimEntries);
            if (kv.Length != 2 || !int.TryParse(kv[1], NumberStyles.None, CultureInfo.InvariantCulture, out int value) || value <= 0)
                throw new ArgumentException($"--student-shape: '{part}' is not NAME=POSITIVE_NUMBER");
            shape = kv[0] switch
            {
                "dim" => shape with { Dim = value },
                "layers" => shape with { Layers = value },
                "heads" => shape with { Heads = value },
                "kv-heads" => shape with { KvHeads = value },
                "ffn" => shape with { FfnDim = value },
                _ => throw new ArgumentException($"--student-shape: unknown size '{kv[0]}' (dim, layers, heads, kv-heads, ffn)"),
            };
            dimChanged |= kv[0] == "dim";
            headsChanged |= kv[0] == "heads";
        }
        if ((dimChanged || headsChanged) && shape.Dim % shape.Heads != 0)
            throw new ArgumentException($"--student-shape: dim {shape.Dim} is not a multiple of {shape.Heads} heads");
        if (dimChanged || headsChanged) shape = shape with { HeadDim = shape.Dim / shape.Heads };
        if (!spec.Contains("kv-heads") && shape.Heads % shape.KvHeads != 0) shape = shape with { KvHeads = shape.Heads };
        try
        {
            shape.Validate();
        }
        catch (ArgumentException e)
        {
            throw new ArgumentException($"--student-shape: {e.Message}");
        }
        return shape;
    }

    /// <summary>A step bar with loss and tokens/s on stderr; redirected, a plain line every tenth of the run.</summary>
    private static void WithProgress(int steps, int done, Action<Action<TrainingStep>> work)
    {
        static string Describe(TrainingStep s) =>
            Invariant($"step {s.Step}/{s.Steps} loss {s.Loss:F4} |g| {s.GradientNorm:F3} lr {s.LearningRate:G3} {s.TokensPerSecond:F0} tok/s");
        if (Console.IsErrorRedirected)
        {
            int every = Math.Max(1, steps / 10);
            work(s =>
            {
                if (s.Step % every == 0 || s.Step == s.Steps || s.Step == 1) Console.Error.WriteLine($"distill: {Describe(s)}");
            });
            return;
        }
        var console = AnsiConsole.Create(new AnsiConsoleSettings { Out = new AnsiConsoleOutput(Console.Error) });
        console.Progress().AutoClear(false)
            .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new RemainingTimeColumn())
            .Start(context =>
            {
                var task = context.AddTask("distill", maxValue: steps);
                task.Value = done;
                work(s =>
                {
                    task.Description = Markup.Escape(Describe(s));
                    task.Value = s.Step;
                });
            });
    }

    private static string Invariant(FormattableString s) => s.ToString(CultureInfo.InvariantCulture);
}
