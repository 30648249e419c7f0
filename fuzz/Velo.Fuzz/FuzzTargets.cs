using System.Text;
using Microsoft.AspNetCore.Http;
using Velo.Formats;
using Velo.Generation;
using Velo.Inference;
using Velo.Models.Bert;
using Velo.Server;
using Velo.Text;
using Velo.Text.ChatTemplates;
using Velo.Threading;

namespace Velo.Fuzz;

/// <summary>
/// The fuzz targets: each feeds one input to an attack surface and returns how it ended, throwing only when the input
/// made the code fail in a way it must not (any exception but the clean rejections that surface documents). The
/// fuzzer (Program.cs) and the regression tests (FuzzRegressionTests) run these same functions.
/// </summary>
public static class FuzzTargets
{
    public static IReadOnlyList<string> Names { get; } = ["gguf", "tokenizer", "jinja", "http", "onnx", "safetensors"];

    /// <summary>The text the tokenizer target encodes: ASCII, control-token markup, accents, CJK, digits, whitespace runs.</summary>
    private const string TokenizerText = "Hello world! <s></s><|im_start|>user\n héllo ünïcödé 日本語 12345  \t\n<unk>[CLS]";

    /// <summary>Runs <paramref name="input"/> through <paramref name="target"/>; returns "ok" or the clean rejection.</summary>
    public static string Run(string target, byte[] input) => target switch
    {
        "gguf" => Gguf(input),
        "tokenizer" => TokenizerMetadata(input),
        "jinja" => Jinja(input),
        "http" => Http(input),
        "onnx" => Onnx(input),
        "safetensors" => Safetensors(input),
        _ => throw new ArgumentException($"unknown fuzz target '{target}'; targets: {string.Join(", ", Names)}", nameof(target)),
    };

    /// <summary>The GGUF reader as <c>velo info</c> uses it, then the full model load <c>velo run</c> and the server do.</summary>
    private static string Gguf(byte[] input) => WithTempFile(input, path =>
    {
        using (var file = GgufFile.Open(path))
        {
            foreach (var (_, value) in file.Metadata) GgufMetadata.Describe(value);
            foreach (var tensor in file.Tensors) _ = tensor.ByteSize;
        }
        using var model = LanguageModel.Load(path);
        return "ok";
    }, IsCleanFileRejection);

    /// <summary>The 8-token WordPiece vocabulary the onnx target's models are imported with.</summary>
    public static TokenizerData OnnxVocabulary() => new()
    {
        Kind = TokenizerKind.WordPiece, Tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "▁a", "▁b", "c"],
        ClsId = 2, BosId = 2, SepId = 3, UnknownId = 1, PadId = 0, MaskId = 4, AddBos = true, AddSep = true, Lowercase = true, MaxWordChars = 100,
    };

    /// <summary><c>velo convert</c> of an ONNX file: the protobuf reader, then the BERT mapping and the GGUF it writes.</summary>
    private static string Onnx(byte[] input)
    {
        try
        {
            var onnx = OnnxModel.Parse(input, "fuzz.onnx");
            // A MemoryStream, as the writer checks each tensor's size by the stream's position; the data is no larger than the input.
            BertOnnxImporter.Build(onnx, OnnxVocabulary(), new BertImportOptions()).WriteTo(new MemoryStream());
            return "ok";
        }
        catch (OnnxFormatException e)
        {
            return Rejected(e);
        }
    }

    /// <summary>A safetensors file as <c>velo convert DIR</c> opens it: the header's checks, then every F32/F16/BF16 row converted to floats.</summary>
    private static string Safetensors(byte[] input) => WithTempFile(input, path =>
    {
        using var file = SafetensorsFile.Open(path);
        foreach (var tensor in file.Tensors)
        {
            if (tensor.FloatType is not { } type || tensor.ElementCount == 0) continue;
            long length = tensor.Shape.Length == 0 ? 1 : tensor.Shape[^1];
            int rowBytes = checked((int)Velo.Tensors.GgmlTypeInfo.RowBytes(type, length));
            var values = new float[length];
            for (long row = 0; row < tensor.ElementCount / length; row++)
                Velo.Tensors.Dequantize.Row(type, file.Bytes(tensor, row * rowBytes, rowBytes), values);
        }
        return "ok";
    }, e => e is SafetensorsFormatException);

    /// <summary>The tokenizer built from a GGUF's <c>tokenizer.*</c> metadata, then one encode/decode round.</summary>
    private static string TokenizerMetadata(byte[] input) => WithTempFile(input, path =>
    {
        using var file = GgufFile.Open(path);
        var tokenizer = Tokenizer.FromData(GgufTokenizerMetadata.Read(file.Metadata));
        int[] ids = tokenizer.Encode(TokenizerText, addSpecial: true, parseSpecial: true);
        tokenizer.Decode(ids);
        tokenizer.Decode(ids, skipSpecial: true);
        return "ok";
    }, IsCleanFileRejection);

    /// <summary>A chat template as the server gets it from a model file: parsed, then rendered for a fixed conversation.</summary>
    private static string Jinja(byte[] input)
    {
        try
        {
            var template = ChatTemplate.Parse(Encoding.UTF8.GetString(input));
            // Built here, not in a static field: under afl, Velo's instrumented code must not run before SharpFuzz
            // has mapped afl's coverage memory, and this class's static initializer runs when Program checks a name.
            ChatMessage[] conversation =
                [new("system", "You are terse."), new("user", "Hi <|eot_id|>"), new("assistant", "Hello."), new("user", "2+2?")];
            template.Render(conversation, addGenerationPrompt: true, bosToken: "<s>", eosToken: "</s>");
            return "ok";
        }
        catch (ChatTemplateException e)
        {
            return Rejected(e);
        }
    }

    /// <summary>
    /// One body posted to both <c>/v1/chat/completions</c> and <c>/v1/completions</c>, through the real handlers. The
    /// scheduler's queue is full, so a body that passes every check ends in the 503 "server busy" instead of generating.
    /// </summary>
    private static string Http(byte[] input)
    {
        var engine = HttpEngine.Value;
        string chat = Post(input, http => CompletionEndpoints.ChatAsync(http, engine));
        string completion = Post(input, http => CompletionEndpoints.CompletionAsync(http, engine));
        return $"chat: {chat}; completion: {completion}";
    }

    private static string Post(byte[] input, Func<HttpContext, Task> handler)
    {
        var http = new DefaultHttpContext();
        http.Request.Method = "POST";
        http.Request.ContentType = "application/json";
        http.Request.Body = new MemoryStream(input, writable: false);
        try
        {
            handler(http).GetAwaiter().GetResult();
            throw new InvalidOperationException("the handler returned without an error although the scheduler queue is full");
        }
        catch (ApiException e) when (e.Status is >= 400 and < 500 || e is { Status: 503, Code: "server_busy" })
        {
            return $"{e.Status} {e.Message}";
        }
    }

    /// <summary>stories260K behind a scheduler that never runs and whose only place is taken, built once per process.</summary>
    private static readonly Lazy<VeloEngine> HttpEngine = new(() =>
    {
        var model = LanguageModel.Load(Stories260KPath());
        var scheduler = new BatchScheduler(model, new BatchSchedulerOptions { Parallel = 1, QueueCapacity = 0, ContextLength = 256 },
            new WorkerPool(1), start: false);
        scheduler.Submit(new GenerationRequest { Prompt = [model.Tokenizer.BosId] });
        return new VeloEngine(scheduler, "stories260K");
    });

    /// <summary>$VELO_FUZZ_MODEL, else ../shared's copy beside the repository that holds the working directory or this program.</summary>
    private static string Stories260KPath()
    {
        if (Environment.GetEnvironmentVariable("VELO_FUZZ_MODEL") is { Length: > 0 } path) return path;
        foreach (var start in new[] { Environment.CurrentDirectory, AppContext.BaseDirectory })
            for (var dir = new DirectoryInfo(start); dir != null; dir = dir.Parent)
                if (File.Exists(Path.Combine(dir.FullName, "Velo.slnx")))
                    return Path.Combine(dir.FullName, "..", "shared", "models", "stories260K", "stories260K.gguf");
        throw new FileNotFoundException("stories260K.gguf not found: set VELO_FUZZ_MODEL or run inside the repository");
    }

    /// <summary>What a hostile model file may cause: a rejection naming what is wrong, never an overflow, index or null error.</summary>
    private static bool IsCleanFileRejection(Exception e) =>
        e is GgufFormatException or InvalidDataException or NotSupportedException || e.GetType() == typeof(ArgumentException);

    /// <summary>The APIs take paths, so the input goes to a file of this process and thread (tests replay in parallel).</summary>
    private static string WithTempFile(byte[] input, Func<string, string> run, Func<Exception, bool> isClean)
    {
        string path = Path.Combine(Path.GetTempPath(), $"velo-fuzz-{Environment.ProcessId}-{Environment.CurrentManagedThreadId}.gguf");
        File.WriteAllBytes(path, input);
        try
        {
            return run(path);
        }
        catch (Exception e) when (isClean(e))
        {
            return Rejected(e);
        }
        finally
        {
            File.Delete(path);
        }
    }

    private static string Rejected(Exception e) => $"rejected: {e.GetType().Name}: {e.Message}";
}
