namespace Velo.Tests.Cli;

/// <summary><c>velo run</c> with llama.cpp's output constraints: --grammar, --json-schema and their file forms.</summary>
public class RunGrammarCommandTests
{
    [Fact]
    public void A_grammar_or_schema_constrains_the_output()
    {
        var r = CliRunner.Run("run", "-m", TestPaths.Stories260K, "-p", "Once", "-n", "20", "--grammar", "root ::= (\"yes\" | \"no\") \"!\"");
        Assert.True(r.ExitCode == 0, r.Stderr);
        Assert.True(r.Stdout.EndsWith("yes!\n\n") || r.Stdout.EndsWith("no!\n\n"), r.Stdout);

        r = CliRunner.Run("run", "-m", TestPaths.Stories260K, "-p", "Once", "-n", "60", "--seed", "2", "-j",
            """{"type":"object","properties":{"ok":{"type":"boolean"},"n":{"enum":[1,2,3]}},"required":["ok","n"],"additionalProperties":false}""");
        Assert.True(r.ExitCode == 0, r.Stderr);
        string json = r.Stdout[r.Stdout.IndexOf('{')..].TrimEnd();
        using var document = System.Text.Json.JsonDocument.Parse(json);
        Assert.Contains(document.RootElement.GetProperty("n").GetInt32(), (int[])[1, 2, 3]);
    }

    [Fact]
    public void An_unsupported_schema_is_a_clear_error()
    {
        var r = CliRunner.Run("run", "-m", TestPaths.Stories260K, "-p", "Once", "-n", "4", "-j", """{"type":"string","pattern":"a"}""");
        Assert.Equal(1, r.ExitCode);
        Assert.Contains("the JSON Schema keyword 'pattern' is not supported (at $.pattern)", r.Stderr);
    }
}
