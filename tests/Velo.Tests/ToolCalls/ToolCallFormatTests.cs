using System.Text.Json;
using Velo.Generation;
using Velo.Tools;

namespace Velo.Tests.ToolCalls;

/// <summary>Which format a model gets, the schema a forced call must match, and the check of a forced choice.</summary>
public class ToolCallFormatTests
{
    private static readonly ToolDefinition Weather = new("get_weather", "Weather",
        JsonDocument.Parse("""{"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}""").RootElement.Clone());
    private static readonly ToolDefinition Time = new("get_time");

    [Theory]
    [InlineData("{% for m in messages %}{% if tools %}<tool_call>{% endif %}{% endfor %}", "llama", "hermes")]
    [InlineData("{% if tools is not none %}Environment: ipython{% endif %}", "qwen2", "llama3")]
    [InlineData("{% if tools %}[AVAILABLE_TOOLS]{{ tools|tojson }}[/AVAILABLE_TOOLS]{% endif %}[TOOL_CALLS]", "llama", "mistral")]
    [InlineData("{% if tools %}{{ tools }}{% endif %}", "mistral", "mistral")]
    [InlineData("{% if tools %}{{ tools }}{% endif %}", "llama", "llama3")]
    [InlineData("{% if tools %}{{ tools }}{% endif %}", "phi3", "fallback")]
    [InlineData("{{ messages[0].content }}", "qwen3", "fallback")]
    [InlineData(null, "gemma2", "fallback")]
    public void Format_follows_the_template_then_the_architecture(string? template, string architecture, string expected) =>
        Assert.Equal(expected, ToolCallFormat.For(template, architecture).Name);

    [Fact]
    public void Named_choice_constrains_to_that_function_inside_the_formats_markers()
    {
        var request = new ToolRequest([Weather, Time], ToolChoice.Function("get_weather"));
        var hermes = ToolCallFormat.Hermes.ConstraintSchema(request);
        Assert.Equal("<tool_call>\n", hermes.Prefix);
        Assert.Equal("\n</tool_call>", hermes.Suffix);
        Assert.Equal("get_weather", hermes.Schema.GetProperty("properties").GetProperty("name").GetProperty("const").GetString());
        Assert.Equal("string", hermes.Schema.GetProperty("properties").GetProperty("arguments").GetProperty("properties").GetProperty("city").GetProperty("type").GetString());
        Assert.Equal(["name", "arguments"], hermes.Schema.GetProperty("required").EnumerateArray().Select(e => e.GetString()));
        Assert.False(hermes.Schema.GetProperty("additionalProperties").GetBoolean());

        var llama = ToolCallFormat.Llama3.ConstraintSchema(request);
        Assert.Equal("", llama.Prefix);
        Assert.True(llama.Schema.GetProperty("properties").TryGetProperty("parameters", out _));
    }

    [Fact]
    public void Required_choice_allows_any_tool_and_mistral_a_list_of_calls()
    {
        var required = ToolCallFormat.Fallback.ConstraintSchema(new ToolRequest([Weather, Time], ToolChoice.Required));
        Assert.Equal(["get_weather", "get_time"],
            required.Schema.GetProperty("anyOf").EnumerateArray().Select(s => s.GetProperty("properties").GetProperty("name").GetProperty("const").GetString()));

        var mistral = ToolCallFormat.Mistral.ConstraintSchema(new ToolRequest([Weather], ToolChoice.Required, ParallelCalls: false));
        Assert.Equal("[TOOL_CALLS]", mistral.Prefix);
        Assert.Equal("array", mistral.Schema.GetProperty("type").GetString());
        Assert.Equal(1, mistral.Schema.GetProperty("minItems").GetInt32());
        Assert.Equal(1, mistral.Schema.GetProperty("maxItems").GetInt32());

        Assert.Throws<ArgumentException>(() => ToolCallFormat.Hermes.ConstraintSchema(new ToolRequest([Weather], ToolChoice.Auto)));
    }

    [Fact]
    public void Prepare_shows_the_formats_markers_and_gives_a_constraint_only_for_a_forced_call()
    {
        var options = new GenerationOptions();
        var auto = ToolCalling.Prepare(options, new ToolRequest([Weather], ToolChoice.Auto), ToolCallFormat.Llama3);
        Assert.Equal(["<|python_tag|>"], auto.Options.ShownControlTokens);
        Assert.Null(auto.Constraint);
        Assert.NotNull(ToolCalling.Prepare(options, new ToolRequest([Weather], ToolChoice.Required), ToolCallFormat.Llama3).Constraint);
        var none = ToolCalling.Prepare(options, new ToolRequest([Weather], ToolChoice.None), ToolCallFormat.Llama3);
        Assert.Same(options, none.Options);
        Assert.Null(ToolCalling.Parser(new ToolRequest([Weather], ToolChoice.None), ToolCallFormat.Llama3));
    }

    [Fact]
    public void Control_tokens_a_format_needs_are_decoded_though_others_are_skipped()
    {
        var tokenizer = Velo.Text.Tokenizer.FromHuggingFace(TestPaths.SharedFile("tokenizers", "hf", "llama3"));
        // Llama 3.0's vocabulary has no <|python_tag|>; any control token shows the mechanism.
        int tag = ((Velo.Text.TokenizerBase)tokenizer).TokenId("<|start_header_id|>");
        Assert.True(tag >= 0);
        int eot = ((Velo.Text.TokenizerBase)tokenizer).TokenId("<|eot_id|>");
        var shown = new Velo.Text.StreamingDecoder(tokenizer, skipSpecial: true, shown: new HashSet<int> { tag });
        Assert.Equal("<|start_header_id|>", shown.Append(tag));
        Assert.Equal("", shown.Append(eot));
        Assert.Equal("", new Velo.Text.StreamingDecoder(tokenizer, skipSpecial: true).Append(tag));
    }

    [Fact]
    public void A_forced_choice_that_the_output_misses_is_refused_not_passed_off()
    {
        var call = new ToolCall("call_1", "get_time", "{}");
        ToolCalling.CheckChoice(new ToolRequest([Weather, Time], ToolChoice.Required), [call]);
        ToolCalling.CheckChoice(new ToolRequest([Weather, Time], ToolChoice.Function("get_time")), [call]);
        ToolCalling.CheckChoice(new ToolRequest([Weather, Time], ToolChoice.Auto), []);
        Assert.Throws<ToolChoiceNotMetException>(() => ToolCalling.CheckChoice(new ToolRequest([Weather, Time], ToolChoice.Required), []));
        Assert.Contains("get_weather", Assert.Throws<ToolChoiceNotMetException>(() =>
            ToolCalling.CheckChoice(new ToolRequest([Weather, Time], ToolChoice.Function("get_weather")), [call])).Message);
    }
}
