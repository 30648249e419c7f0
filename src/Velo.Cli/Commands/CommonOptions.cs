using System.CommandLine;
using Velo.Models;
using Velo.Formats;
using Velo.Inference;
using Velo.Runtime;

namespace Velo.Cli.Commands;

/// <summary>Options shared by several commands, named as llama.cpp's tools name them.</summary>
internal static class CommonOptions
{
    /// <summary>The small demo model shipped beside the executable, used when no -m is given.</summary>
    public static string BundledModel => Path.Combine(AppContext.BaseDirectory, "models", "stories260K.gguf");

    public static Option<string> Model() => new("--model", "-m")
    {
        Description = "GGUF model file or Hugging Face model folder (default: the bundled stories260K demo model)",
        DefaultValueFactory = _ => BundledModel,
    };

    public static Option<int> Threads() => new Option<int>("--threads", "-t")
    {
        Description = "Worker threads (default: all cores)",
        DefaultValueFactory = _ => Environment.ProcessorCount,
    }.WithinProcessorCount();

    /// <summary>Refuses thread counts below 1 or above the machine's logical processors.</summary>
    public static Option<int> WithinProcessorCount(this Option<int> option)
    {
        option.Validators.Add(result =>
        {
            if (ThreadCountError(result.GetValueOrDefault<int>()) is { } error) result.AddError(error);
        });
        return option;
    }

    /// <summary>Why <paramref name="threads"/> is not a usable thread count, or null when it is.</summary>
    public static string? ThreadCountError(int threads) =>
        threads >= 1 && threads <= Environment.ProcessorCount ? null
            : $"--threads must be between 1 and {Environment.ProcessorCount}, the logical processors of this machine " +
              $"(more threads than processors only take turns on them and slow every step), got {threads}";

    /// <summary>A TCP port: 0 (any free one) to 65535.</summary>
    public static Option<int> Port(string description, int defaultPort)
    {
        var option = new Option<int>("--port") { Description = description, DefaultValueFactory = _ => defaultPort };
        option.Validators.Add(result =>
        {
            int value = result.GetValueOrDefault<int>();
            if (value is < 0 or > 65535) result.AddError($"--port must be between 0 and 65535, got {value}");
        });
        return option;
    }

    public static Option<int> Context() => new Option<int>("--ctx", "-c")
    {
        Description = $"Context length in tokens (default: the model's, capped at {ModelInfo.DefaultContextCap})",
    }.AtLeast(0, "0 or absent means the model's own");

    public static Option<int> Parallel(string description) => new Option<int>("--parallel", "-np")
    {
        Description = description,
        DefaultValueFactory = _ => 4,
    }.AtLeast(1);

    /// <summary>Refuses values below <paramref name="minimum"/> with an error naming the option (and, if given, what the minimum means).</summary>
    public static Option<int> AtLeast(this Option<int> option, int minimum, string? meaning = null)
    {
        option.Validators.Add(result =>
        {
            int value = result.GetValueOrDefault<int>();
            if (value < minimum)
                result.AddError($"{option.Name} must be at least {minimum}{(meaning != null ? $" ({meaning})" : "")}, got {value}");
        });
        return option;
    }

    // Sampling options take their defaults from SamplerOptions, the one place they are written (llama.cpp's values).
    private static readonly SamplerOptions SamplingDefaults = new();

    public static Option<float> Temperature() => new("--temp") { Description = "Temperature (0: greedy)", DefaultValueFactory = _ => SamplingDefaults.Temperature };

    public static Option<int> TopK() =>
        new Option<int>("--top-k") { Description = "Top-k sampling (0: off)", DefaultValueFactory = _ => SamplingDefaults.TopK }.AtLeast(0, "0 turns it off");

    public static Option<float> TopP() => new("--top-p") { Description = "Top-p sampling (1: off)", DefaultValueFactory = _ => SamplingDefaults.TopP };

    public static Option<float> MinP() => new("--min-p") { Description = "Min-p sampling (0: off)", DefaultValueFactory = _ => SamplingDefaults.MinP };

    public static Option<float> RepeatPenalty() =>
        new("--repeat-penalty") { Description = "Penalty for repeated tokens (1: off)", DefaultValueFactory = _ => SamplingDefaults.RepeatPenalty };

    /// <summary>Speculative decoding's options (llama.cpp's names and defaults), read back by <see cref="Speculation"/>.</summary>
    public sealed class SpeculationOptionSet
    {
        private static readonly Velo.Generation.SpeculationOptions Defaults = new();

        public Option<string?> DraftModel { get; } = new("--model-draft", "-md") { Description = "Draft model for speculative decoding (same vocabulary as the model)" };
        public Option<int> DraftMax { get; } = new("--draft-max", "--draft-n") { Description = "Draft tokens verified per pass at most", DefaultValueFactory = _ => Defaults.DraftMax };
        public Option<int> DraftMin { get; } = new("--draft-min", "--draft-n-min") { Description = "Drafts shorter than this are not verified", DefaultValueFactory = _ => Defaults.DraftMin };
        public Option<float> DraftPMin { get; } = new("--draft-p-min") { Description = "The draft model stops at a token it is less sure of than this", DefaultValueFactory = _ => Defaults.DraftPMin };
        public Option<int> NGram { get; } = new("--spec-ngram") { Description = "Prompt lookup: propose what followed the last N tokens earlier in the text (0: off)" };

        public IEnumerable<Option> All => [DraftModel, DraftMax, DraftMin, DraftPMin, NGram];

        /// <summary>The options given, or null when no draft model and no n-gram lookup asks for speculation.</summary>
        public Velo.Generation.SpeculationOptions? Speculation(ParseResult parse)
        {
            var options = new Velo.Generation.SpeculationOptions
            {
                DraftMax = parse.GetValue(DraftMax),
                DraftMin = parse.GetValue(DraftMin),
                DraftPMin = parse.GetValue(DraftPMin),
                NGram = parse.GetValue(NGram),
            };
            options.Validate();
            bool draft = parse.GetValue(DraftModel) != null;
            if (draft && options.NGram > 0) throw new ArgumentException("give either --model-draft or --spec-ngram: one source of drafts at a time");
            return draft || options.NGram > 0 ? options : null;
        }
    }

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
    public static int ContextFor(LanguageModel model, int requested)
    {
        if (requested == 0) return model.Info.ContextFor(0);
        WarnIfBeyondTraining(model.Name, model.Info.ContextLength, requested);
        return requested;
    }

    /// <summary>Allowed, as llama.cpp allows it, but said: past its trained context a model's output degrades.</summary>
    public static void WarnIfBeyondTraining(string modelName, int trainedContext, int contextLength)
    {
        if (contextLength > trainedContext)
            Console.Error.WriteLine($"warning: the context of {contextLength} tokens is longer than the {trainedContext} {modelName} was trained on; expect worse output past that");
    }

    /// <summary>llama.cpp's output constraints: <c>--grammar</c>, <c>--grammar-file</c>, <c>-j/--json-schema</c>,
    /// <c>-jf/--json-schema-file</c>; at most one of them.</summary>
    public sealed class GrammarOptionSet
    {
        public Option<string?> Gbnf { get; } = new("--grammar") { Description = "Constrain the output to this GBNF grammar (llama.cpp's format, start rule 'root')" };
        public Option<FileInfo?> GbnfFile { get; } = new("--grammar-file") { Description = "Read the GBNF grammar from a file" };
        public Option<string?> Schema { get; } = new("--json-schema", "-j") { Description = "Constrain the output to JSON valid against this JSON Schema" };
        public Option<FileInfo?> SchemaFile { get; } = new("--json-schema-file", "-jf") { Description = "Read the JSON Schema from a file" };

        public IEnumerable<Option> All => [Gbnf, GbnfFile, Schema, SchemaFile];

        public Velo.Sampling.Grammars.Grammar? Grammar(ParseResult parse)
        {
            string? gbnf = parse.GetValue(GbnfFile) is { } gbnfFile ? File.ReadAllText(gbnfFile.FullName) : parse.GetValue(Gbnf);
            string? schema = parse.GetValue(SchemaFile) is { } schemaFile ? File.ReadAllText(schemaFile.FullName) : parse.GetValue(Schema);
            int given = (parse.GetValue(Gbnf) != null ? 1 : 0) + (parse.GetValue(GbnfFile) != null ? 1 : 0)
                + (parse.GetValue(Schema) != null ? 1 : 0) + (parse.GetValue(SchemaFile) != null ? 1 : 0);
            if (given > 1) throw new ArgumentException("give only one of --grammar, --grammar-file, --json-schema and --json-schema-file");
            if (gbnf != null) return Velo.Sampling.Grammars.Grammar.FromGbnf(gbnf);
            if (schema == null) return null;
            try
            {
                using var document = System.Text.Json.JsonDocument.Parse(schema);
                return Velo.Sampling.Grammars.Grammar.FromJsonSchema(document.RootElement);
            }
            catch (System.Text.Json.JsonException e)
            {
                throw new ArgumentException($"the JSON Schema is not valid JSON: {e.Message}");
            }
        }
    }

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
