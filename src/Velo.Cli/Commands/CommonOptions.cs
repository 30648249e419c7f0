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

    public static Option<string> CacheTypeK() => new("--cache-type-k", "-ctk")
    {
        Description = "KV cache type for keys: f32 or f16 (half the memory)",
        DefaultValueFactory = _ => "f32",
    };

    public static Option<string> CacheTypeV() => new("--cache-type-v", "-ctv")
    {
        Description = "KV cache type for values: f32 or f16 (half the memory)",
        DefaultValueFactory = _ => "f32",
    };

    public static KvCacheTypes CacheTypes(ParseResult parse, Option<string> keys, Option<string> values) =>
        new(KvCacheTypes.Parse(parse.GetValue(keys)!), KvCacheTypes.Parse(parse.GetValue(values)!));

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
