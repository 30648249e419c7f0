using System.CommandLine;
using Velo.Formats;
using Velo.Inference;

namespace Velo.Cli.Commands;

/// <summary>Options shared by several commands, named as llama.cpp's tools name them.</summary>
internal static class CommonOptions
{
    /// <summary>The small demo model shipped beside the executable, used when no -m is given.</summary>
    public static string BundledModel => Path.Combine(AppContext.BaseDirectory, "models", "stories260K.gguf");

    public static Option<string> Model() => new("--model", "-m")
    {
        Description = "GGUF model file (default: the bundled stories260K demo model)",
        DefaultValueFactory = _ => BundledModel,
    };

    public static Option<int> Threads() => new("--threads", "-t")
    {
        Description = "Worker threads (default: all cores)",
        DefaultValueFactory = _ => Environment.ProcessorCount,
    };

    public static Option<int> Context() => new("--ctx", "-c")
    {
        Description = "Context length in tokens (default: the model's, capped at 4096)",
    };

    /// <summary>The context to allocate: the user's choice, else the model's own capped so a KV cache fits anywhere.</summary>
    public static int ContextFor(LanguageModel model, int requested) =>
        requested > 0 ? requested : Math.Min(model.Config.ContextLength, 4096);

    /// <summary>Runs a command body, turning the errors a user can cause into one clear line and exit code 1.</summary>
    public static int Guard(Func<int> body)
    {
        try
        {
            return body();
        }
        catch (Exception e) when (e is GgufFormatException or NotSupportedException or FileNotFoundException
                                      or DirectoryNotFoundException or ArgumentException or InvalidOperationException
                                      or IOException or UnauthorizedAccessException or FormatException or InvalidDataException)
        {
            Console.Out.Flush();
            Console.Error.WriteLine($"error: {e.Message}");
            return 1;
        }
        catch (OperationCanceledException)
        {
            return 130;
        }
    }
}
