using SharpFuzz;
using Velo.Fuzz;

// fuzz TARGET                 run under afl-fuzz (fuzz/run.sh): every input from afl goes through the target
// seeds TARGET SHARED OUTDIR  write the target's starting corpus
// replay TARGET FILE...       run files through the target and print how each ended (exit 1 if any crashed)
switch (args)
{
    case ["fuzz", var target]:
        CheckTarget(target);
        // Out of process: a stack overflow or native crash kills only the child, which SharpFuzz reports to afl as a
        // crash and restarts, instead of ending the whole fuzzing run.
        Fuzzer.OutOfProcess.Run(stream =>
        {
            var input = new MemoryStream();
            stream.CopyTo(input);
            FuzzTargets.Run(target, input.ToArray());
        });
        return 0;
    case ["seeds", var target, var shared, var output]:
        CheckTarget(target);
        Directory.CreateDirectory(output);
        foreach (var (name, data) in FuzzSeeds.For(target, shared)) File.WriteAllBytes(Path.Combine(output, name), data);
        return 0;
    case ["replay", var target, .. var files]:
        CheckTarget(target);
        bool crashed = false;
        foreach (string file in files)
        {
            try
            {
                Console.WriteLine($"{file}: {Truncate(FuzzTargets.Run(target, File.ReadAllBytes(file)))}");
            }
            catch (Exception e)
            {
                crashed = true;
                Console.WriteLine($"{file}: CRASH {e.GetType().FullName}: {Truncate(e.Message)}");
                Console.WriteLine(string.Join('\n', e.StackTrace?.Split('\n').Take(6) ?? []));
            }
        }
        return crashed ? 1 : 0;
    default:
        Console.Error.WriteLine("usage: Velo.Fuzz fuzz TARGET | seeds TARGET SHARED_DIR OUT_DIR | replay TARGET FILE...");
        Console.Error.WriteLine($"targets: {string.Join(", ", FuzzTargets.Names)}");
        return 2;
}

static void CheckTarget(string target)
{
    if (!FuzzTargets.Names.Contains(target)) throw new ArgumentException($"unknown target '{target}'; targets: {string.Join(", ", FuzzTargets.Names)}");
}

static string Truncate(string text) => text.Length <= 300 ? text : text[..300] + "...";
