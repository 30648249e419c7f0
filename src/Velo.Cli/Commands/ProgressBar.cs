using Spectre.Console;

namespace Velo.Cli.Commands;

/// <summary>A byte-counting Spectre.Console progress bar on stderr, so stdout stays clean for scripts.</summary>
internal static class ProgressBar
{
    /// <summary>Runs <paramref name="work"/>, which names its current step and reports bytes done.</summary>
    public static void Run(string title, long totalBytes, Action<Action<string>, Action<long>> work)
    {
        // Redirected to a log, the bar degrades to occasional plain lines rather than escape codes.
        var console = AnsiConsole.Create(new AnsiConsoleSettings
        {
            Out = new AnsiConsoleOutput(Console.Error),
            Ansi = Console.IsErrorRedirected ? AnsiSupport.No : AnsiSupport.Detect,
            Interactive = Console.IsErrorRedirected ? InteractionSupport.No : InteractionSupport.Detect,
        });
        console.Progress()
            .AutoClear(false)
            .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new TransferSpeedColumn(), new RemainingTimeColumn())
            .Start(context =>
            {
                var task = context.AddTask(Markup.Escape(title), maxValue: Math.Max(1, totalBytes));
                work(step => task.Description = Markup.Escape($"{title}: {step}"), bytes => task.Increment(bytes));
                task.Description = Markup.Escape(title);
                task.Value = task.MaxValue;
            });
    }
}
