using System.CommandLine;
using Spectre.Console;
using Velo.Formats;
using Velo.Models;
using Velo.Models.HuggingFace;
using Velo.Tensors;
using Velo.Text;

namespace Velo.Cli.Commands;

/// <summary><c>velo info</c>: what a GGUF file holds — architecture, hyperparameters, tokenizer, tensors by type.</summary>
internal static class InfoCommand
{
    public static Command Create()
    {
        var file = new Argument<string>("model")
        {
            Description = "GGUF file or Hugging Face model folder (default: the bundled stories260K demo model)",
            Arity = ArgumentArity.ZeroOrOne,
            DefaultValueFactory = _ => CommonOptions.BundledModel,
        };
        var tensors = new Option<bool>("--tensors") { Description = "List every tensor" };
        var command = new Command("info", "Describe a GGUF model file") { file, tensors };
        command.SetAction(parse => CommonOptions.Guard(() => Show(parse.GetValue(file)!, parse.GetValue(tensors))));
        return command;
    }

    private static int Show(string path, bool listTensors)
    {
        using var gguf = GgufFile.Open(HuggingFaceModelCache.Resolve(path));
        var m = gguf.Metadata;
        AnsiConsole.MarkupLineInterpolated($"[bold]{Path.GetFileName(path)}[/]: GGUF v{gguf.Version}, {gguf.FileSize / (1024.0 * 1024):F1} MiB, {m.Count} metadata keys, {gguf.Tensors.Count} tensors, alignment {gguf.Alignment}");
        if (m.GetString("general.name") is { } name) AnsiConsole.MarkupLineInterpolated($"name: {name}");

        ShowModel(gguf);
        ShowTokenizer(m);
        ShowTensorsByType(gguf);
        if (listTensors) ShowTensors(gguf);
        ShowOtherMetadata(m);
        return 0;
    }

    private static void ShowModel(GgufFile gguf)
    {
        string? arch = gguf.Architecture;
        if (arch == null)
        {
            AnsiConsole.WriteLine("architecture: none (a vocabulary-only file)");
            return;
        }
        if (!ModelRegistry.IsSupported(arch) || gguf.Tensors.Count == 0)
        {
            AnsiConsole.MarkupLineInterpolated($"architecture: {arch} (Velo cannot run this architecture yet)");
            return;
        }
        var info = ModelRegistry.ReadInfo(gguf);
        var table = new Table().Title("model").AddColumns("", "");
        table.HideHeaders();
        void Row(string key, string value) => table.AddRow(Markup.Escape(key), Markup.Escape(value));
        Row("architecture", info.Architecture);
        Row("parameters", FormatCount(gguf.Tensors.Sum(t => t.ElementCount)));
        foreach (var (key, value) in info.Properties) Row(key, value);
        AnsiConsole.Write(table);
    }

    private static void ShowTokenizer(GgufMetadata m)
    {
        if (m.GetString("tokenizer.ggml.model") is not { } kind) return;
        var table = new Table().Title("tokenizer").AddColumns("", "");
        table.HideHeaders();
        table.AddRow("type", Markup.Escape(kind));
        if (m.GetString("tokenizer.ggml.pre") is { } pre) table.AddRow("pre-tokenizer", Markup.Escape(pre));
        table.AddRow("tokens", (m.GetStringArray("tokenizer.ggml.tokens")?.Length ?? 0).ToString());
        if (m.GetStringArray("tokenizer.ggml.merges") is { } merges) table.AddRow("merges", merges.Length.ToString());
        // BOS and EOS are always shown, the others when the file names them; an id a file stores as -1 means none.
        foreach (var special in new[] { "bos", "eos", "eot", "unknown", "padding", "cls", "seperator" })
        {
            bool present = m.TryGetUInt32($"tokenizer.ggml.{special}_token_id", out uint id);
            if (present || special is "bos" or "eos") table.AddRow($"{special} id", present ? TokenId(id) : "none");
        }
        try
        {
            var tokenizer = Tokenizer.FromGguf(m);
            table.AddRow("loads", "yes");
            _ = tokenizer;
        }
        catch (Exception e) when (e is GgufFormatException or NotSupportedException or ArgumentException or FormatException or InvalidDataException)
        {
            table.AddRow("loads", Markup.Escape("no: " + e.Message));
        }
        if (m.GetString("tokenizer.chat_template") is { } template) table.AddRow("chat template", $"{template.Length} characters");
        AnsiConsole.Write(table);
    }

    private static void ShowTensorsByType(GgufFile gguf)
    {
        if (gguf.Tensors.Count == 0) return;
        var table = new Table().Title("tensors by type").AddColumns("type", "tensors", "elements", "MiB", "bits/weight");
        foreach (var group in gguf.Tensors.GroupBy(t => t.Type).OrderByDescending(g => g.Sum(t => t.ByteSize)))
        {
            long elements = group.Sum(t => t.ElementCount), bytes = group.Sum(t => t.ByteSize);
            table.AddRow(group.Key.ToString(), group.Count().ToString(), FormatCount(elements), $"{bytes / (1024.0 * 1024):F2}", $"{bytes * 8.0 / elements:F2}");
        }
        long allElements = gguf.Tensors.Sum(t => t.ElementCount), allBytes = gguf.Tensors.Sum(t => t.ByteSize);
        table.AddRow("[bold]total[/]", gguf.Tensors.Count.ToString(), FormatCount(allElements), $"{allBytes / (1024.0 * 1024):F2}", $"{allBytes * 8.0 / allElements:F2}");
        AnsiConsole.Write(table);
    }

    private static void ShowTensors(GgufFile gguf)
    {
        var table = new Table().Title("tensors").AddColumns("name", "type", "shape", "bytes", "offset");
        foreach (var t in gguf.Tensors)
            table.AddRow(Markup.Escape(t.Name), t.Type.ToString(), string.Join(" × ", t.Shape), t.ByteSize.ToString(), t.Offset.ToString());
        AnsiConsole.Write(table);
    }

    private static void ShowOtherMetadata(GgufMetadata m)
    {
        var table = new Table().Title("metadata").AddColumns("key", "value");
        foreach (var (key, value) in m)
        {
            if (key.StartsWith("tokenizer.ggml.", StringComparison.Ordinal) && value is GgufArray) continue;
            string shown = key.EndsWith("_token_id", StringComparison.Ordinal) && value is uint.MaxValue or -1 ? "none" : GgufMetadata.Describe(value);
            if (shown.Length > 80) shown = shown[..80] + "…";
            table.AddRow(Markup.Escape(key), Markup.Escape(shown.ReplaceLineEndings("⏎")));
        }
        AnsiConsole.Write(table);
    }

    /// <summary>A special token id, or "none" for the -1 (stored unsigned) files write for an absent token.</summary>
    private static string TokenId(uint id) => id == uint.MaxValue ? "none" : id.ToString();

    private static string FormatCount(long n) => n switch
    {
        >= 1_000_000_000 => $"{n / 1e9:F2} B",
        >= 1_000_000 => $"{n / 1e6:F2} M",
        >= 1_000 => $"{n / 1e3:F1} K",
        _ => n.ToString(),
    };
}
