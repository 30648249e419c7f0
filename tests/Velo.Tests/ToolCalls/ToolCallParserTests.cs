using System.Text;
using System.Text.Json;
using Velo.Tools;

namespace Velo.Tests.ToolCalls;

/// <summary>Each family's call format read out of model output, whole and streamed, and malformed output kept as text.</summary>
public class ToolCallParserTests
{
    private const string Weather = "{\"city\": \"Paris\", \"unit\": \"celsius\"}";

    /// <summary>Output parsed whole, and the same output fed one character at a time, as a stream of tokens might come.</summary>
    private static ToolCallOutput ParseBothWays(ToolCallFormat format, string output, bool parallel = true)
    {
        var whole = ToolCallParser.Parse(format, output, parallel);
        var parser = new ToolCallParser(format, parallel);
        var content = new StringBuilder();
        var calls = new List<ToolCall>();
        var pieces = new List<ToolOutputPiece>();
        foreach (char c in output) pieces.AddRange(parser.Push(c.ToString()));
        pieces.AddRange(parser.Finish());
        foreach (var piece in pieces)
        {
            if (piece.Call is { } call)
            {
                Assert.Equal(calls.Count, piece.Index);
                calls.Add(call);
            }
            else content.Append(piece.Content);
        }
        Assert.Equal(whole.Content, content.ToString());
        Assert.Equal(whole.Calls.Select(c => (c.Name, c.Arguments)), calls.Select(c => (c.Name, c.Arguments)));
        return whole;
    }

    private static void AssertCall(ToolCall call, string name, string arguments)
    {
        Assert.Equal(name, call.Name);
        Assert.Equal(arguments, call.Arguments);
        using var _ = JsonDocument.Parse(call.Arguments);
    }

    [Fact]
    public void Hermes_call_after_text_is_read_with_an_openai_id()
    {
        var output = ParseBothWays(ToolCallFormat.Hermes, $"Let me check.\n<tool_call>\n{{\"name\": \"get_weather\", \"arguments\": {Weather}}}\n</tool_call>");
        Assert.Equal("Let me check.", output.Content);
        AssertCall(Assert.Single(output.Calls), "get_weather", Weather);
        Assert.Matches("^call_[A-Za-z0-9]{24}$", output.Calls[0].Id);
    }

    [Fact]
    public void Hermes_parallel_calls_are_all_read_unless_parallel_calls_are_off()
    {
        string text = "<tool_call>\n{\"name\": \"a\", \"arguments\": {}}\n</tool_call>\n<tool_call>\n{\"name\": \"b\", \"arguments\": \"{\\\"x\\\": 1}\"}\n</tool_call>\n";
        var both = ParseBothWays(ToolCallFormat.Hermes, text);
        Assert.Equal("", both.Content);
        Assert.Equal(["a", "b"], both.Calls.Select(c => c.Name));
        Assert.Equal("{\"x\": 1}", both.Calls[1].Arguments);
        Assert.NotEqual(both.Calls[0].Id, both.Calls[1].Id);
        Assert.Equal("a", Assert.Single(ParseBothWays(ToolCallFormat.Hermes, text, parallel: false).Calls).Name);
    }

    [Fact]
    public void Hermes_call_left_open_at_the_end_of_output_counts_when_complete()
    {
        var output = ParseBothWays(ToolCallFormat.Hermes, "<tool_call>\n{\"name\": \"f\", \"arguments\": {\"n\": [1, 2]}}\n");
        AssertCall(Assert.Single(output.Calls), "f", "{\"n\": [1, 2]}");
    }

    [Theory]
    [InlineData("<tool_call>\n{\"name\": \"f\", \"arguments\": {\"a\": }\n</tool_call>")]
    [InlineData("<tool_call>\n{\"name\": \"f\", \"arguments\": {\"a\": 1")]
    [InlineData("<tool_call>\n{\"arguments\": {}}\n</tool_call>")]
    [InlineData("<tool_call>\n{\"name\": 7, \"arguments\": {}}\n</tool_call>")]
    [InlineData("<tool_call>\n{\"name\": \"f\", \"arguments\": \"not json\"}\n</tool_call>")]
    [InlineData("<tool_call>\n[1, 2]\n</tool_call> and then some")]
    [InlineData("<tool_call><tool_call></tool_call>")]
    [InlineData("Use <tool_call to call")]
    [InlineData("{\"name\": \"f\", \"arguments\": {}}")]
    public void Malformed_hermes_output_is_plain_text(string text)
    {
        var output = ParseBothWays(ToolCallFormat.Hermes, text);
        Assert.Empty(output.Calls);
        Assert.Equal(text, output.Content);
    }

    [Fact]
    public void Deeply_nested_arguments_are_text_not_a_crash()
    {
        string text = "<tool_call>{\"name\": \"f\", \"arguments\": " + new string('[', 100_000) + "</tool_call>";
        var output = ToolCallParser.Parse(ToolCallFormat.Hermes, text);
        Assert.Empty(output.Calls);
        Assert.Equal(text, output.Content);
    }

    [Fact]
    public void A_call_that_never_closes_becomes_text_once_it_outgrows_the_limit()
    {
        var parser = new ToolCallParser(ToolCallFormat.Hermes);
        Assert.Empty(parser.Push("<tool_call>{\"name\": \"f\", \"arguments\": {\"a\": \""));
        string released = "";
        for (int i = 0; i < ToolCallParser.MaxHeldCallChars / 1000 + 1 && released.Length == 0; i++)
            released = string.Concat(parser.Push(new string('x', 1000)).Select(p => p.Content));
        Assert.StartsWith("<tool_call>", released);
        Assert.Equal("y", Assert.Single(parser.Push("y")).Content);
    }

    [Fact]
    public void Text_streams_before_a_call_is_complete_and_the_call_comes_out_whole()
    {
        var parser = new ToolCallParser(ToolCallFormat.Hermes);
        Assert.Equal("Checking", Assert.Single(parser.Push("Checking")).Content);
        Assert.Empty(parser.Push(" <tool_"));   // could start a call: held
        Assert.Empty(parser.Push("call>{\"name\": \"f\", \"arguments\": {\"q\": 1}}"));
        var call = Assert.Single(parser.Push("</tool_call>"));
        AssertCall(call.Call!, "f", "{\"q\": 1}");
        Assert.Equal(" after", Assert.Single(parser.Push(" after")).Content);
        Assert.Empty(parser.Finish());
    }

    [Fact]
    public void Fallback_format_also_reads_a_bare_call_object()
    {
        var output = ParseBothWays(ToolCallFormat.Fallback, "  {\"name\": \"f\", \"arguments\": {\"a\": \"b\"}}  ");
        AssertCall(Assert.Single(output.Calls), "f", "{\"a\": \"b\"}");
        Assert.Equal("", output.Content);
        var plain = ParseBothWays(ToolCallFormat.Fallback, "{\"answer\": 42} is JSON");
        Assert.Empty(plain.Calls);
        Assert.Equal("{\"answer\": 42} is JSON", plain.Content);
        // Only at the start: a call object in the middle of prose is prose.
        Assert.Empty(ParseBothWays(ToolCallFormat.Fallback, "Say {\"name\": \"f\", \"arguments\": {}}").Calls);
    }

    [Fact]
    public void Llama3_calls_with_parameters_with_and_without_python_tag()
    {
        string call = $"{{\"name\": \"get_weather\", \"parameters\": {Weather}}}";
        AssertCall(Assert.Single(ParseBothWays(ToolCallFormat.Llama3, call).Calls), "get_weather", Weather);
        AssertCall(Assert.Single(ParseBothWays(ToolCallFormat.Llama3, "<|python_tag|>" + call).Calls), "get_weather", Weather);
        var two = ParseBothWays(ToolCallFormat.Llama3, $"<|python_tag|>{call}; {{\"name\": \"time\", \"parameters\": {{}}}}");
        Assert.Equal(["get_weather", "time"], two.Calls.Select(c => c.Name));
    }

    [Theory]
    [InlineData("<|python_tag|>brave_search.call(query=\"weather in Paris\")")]
    [InlineData("{\"name\": \"f\", \"parameters\": {}} and more words")]
    [InlineData("{\"name\": \"f\", \"parameters\": {\"a\": 1}")]
    [InlineData("The answer is {\"name\": \"f\"}")]
    public void Llama3_output_that_is_no_call_is_plain_text(string text)
    {
        var output = ParseBothWays(ToolCallFormat.Llama3, text);
        Assert.Empty(output.Calls);
        Assert.Equal(text, output.Content);
    }

    [Fact]
    public void Mistral_v3_list_and_v11_name_args_calls_get_nine_character_ids()
    {
        var list = ParseBothWays(ToolCallFormat.Mistral, $"[TOOL_CALLS] [{{\"name\": \"get_weather\", \"arguments\": {Weather}}}, {{\"name\": \"t\", \"arguments\": {{}}}}]");
        Assert.Equal(["get_weather", "t"], list.Calls.Select(c => c.Name));
        AssertCall(list.Calls[0], "get_weather", Weather);
        Assert.All(list.Calls, c => Assert.Matches("^[A-Za-z0-9]{9}$", c.Id));
        var named = ParseBothWays(ToolCallFormat.Mistral, $"[TOOL_CALLS]get_weather[ARGS]{Weather}[TOOL_CALLS]t[ARGS]{{}}");
        Assert.Equal(["get_weather", "t"], named.Calls.Select(c => c.Name));
        AssertCall(named.Calls[0], "get_weather", Weather);
        var afterText = ParseBothWays(ToolCallFormat.Mistral, "Sure. [TOOL_CALLS][{\"name\": \"t\", \"arguments\": {}}]");
        Assert.Equal("Sure.", afterText.Content);
        Assert.Single(afterText.Calls);
    }

    [Theory]
    [InlineData("[TOOL_CALLS][{\"name\": 1}]")]
    [InlineData("[TOOL_CALLS][]")]
    [InlineData("[TOOL_CALLS]get_weather{\"city\": \"Paris\"}")]
    [InlineData("[TOOL_CALLS][{\"name\": \"t\", \"arguments\": {}}] trailing")]
    public void Malformed_mistral_output_is_plain_text(string text)
    {
        var output = ParseBothWays(ToolCallFormat.Mistral, text);
        Assert.Empty(output.Calls);
        Assert.Equal(text, output.Content);
    }

    [Fact]
    public void Plain_answers_pass_through_unchanged_in_every_format()
    {
        const string text = "  Once upon a time, a [cat] met a {dog} and said <hi>.\n";
        foreach (var format in new[] { ToolCallFormat.Hermes, ToolCallFormat.Fallback, ToolCallFormat.Llama3, ToolCallFormat.Mistral })
        {
            var output = ParseBothWays(format, text);
            Assert.Empty(output.Calls);
            Assert.Equal(text, output.Content);
        }
    }
}
