using System.CommandLine.Parsing;
using System.Text.RegularExpressions;
using Spectre.Console;

namespace Velo.Cli;

/// <summary>How the <c>velo</c> command talks to its user: plain error lines, help without repeated defaults, colour only on a terminal.</summary>
internal static partial class CliSetup
{
    /// <summary>
    /// Colour and styles only for a terminal: output redirected to a file or a pipe, or NO_COLOR set
    /// (https://no-color.org), gets plain text. Tables keep their full width there instead of wrapping at 80 columns.
    /// </summary>
    public static void ConfigureConsole()
    {
        bool plain = Console.IsOutputRedirected || !string.IsNullOrEmpty(Environment.GetEnvironmentVariable("NO_COLOR"));
        if (!plain) return;
        AnsiConsole.Console = AnsiConsole.Create(new AnsiConsoleSettings
        {
            Ansi = AnsiSupport.No,
            ColorSystem = ColorSystemSupport.NoColors,
            Out = new AnsiConsoleOutput(Console.Out),
        });
        if (Console.IsOutputRedirected) AnsiConsole.Profile.Width = 200;
    }

    /// <summary>
    /// The help text with each default given once: an option whose description already says "(default: ...)" in
    /// words loses System.CommandLine's "[default: ...]" (the bundled model's full path, this machine's core count).
    /// </summary>
    public static string ShowDefaultsOnce(string help)
    {
        var lines = help.Split('\n');
        var result = new List<string>(lines.Length);
        bool saidInWords = false;
        foreach (string line in lines)
        {
            // An option's entry starts with its aliases; wrapped lines of its description follow, indented further.
            if (OptionStart().IsMatch(line)) saidInWords = false;
            saidInWords |= line.Contains("(default:", StringComparison.Ordinal);
            result.Add(saidInWords ? RepeatedDefault().Replace(line, "") : line);
        }
        return string.Join('\n', result);
    }

    [GeneratedRegex(@"^\s{2}-")]
    private static partial Regex OptionStart();

    [GeneratedRegex(@"\s*\[default: [^\]]*\]")]
    private static partial Regex RepeatedDefault();

    /// <summary>A parse error in plain words: which option, what it takes, what it got; one line.</summary>
    public static string Plain(ParseError error)
    {
        string message = error.Message;
        if (CannotParse().Match(message) is { Success: true } parse)
            return $"{parse.Groups["option"].Value} takes {Describe(parse.Groups["type"].Value)}, got '{parse.Groups["value"].Value}'";
        if (NotAmong().Match(message) is { Success: true } among)
        {
            var choices = Choices().Matches(among.Groups["choices"].Value).Select(m => m.Groups[1].Value);
            string? option = error.SymbolResult switch
            {
                OptionResult result => result.Option.Name,
                ArgumentResult { Parent: OptionResult result } => result.Option.Name,
                _ => null,
            };
            return $"{option ?? "the value"} must be one of {string.Join(", ", choices)}; got '{among.Groups["value"].Value}'";
        }
        return string.Join(' ', message.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries));
    }

    private static string Describe(string type) => type switch
    {
        "System.Int32" or "System.Int64" or "System.UInt64" => "a whole number",
        "System.Single" or "System.Double" => "a number",
        "System.Boolean" => "true or false",
        "System.IO.FileInfo" => "a file path",
        _ => $"a value of type {type}",
    };

    [GeneratedRegex(@"^Cannot parse argument '(?<value>.*)' for option '(?<option>[^']+)' as expected type '(?<type>[^']+)'", RegexOptions.Singleline)]
    private static partial Regex CannotParse();

    [GeneratedRegex(@"^Argument '(?<value>.*?)' not recognized\. Must be one of:(?<choices>.*)$", RegexOptions.Singleline)]
    private static partial Regex NotAmong();

    [GeneratedRegex(@"'([^']*)'")]
    private static partial Regex Choices();
}
