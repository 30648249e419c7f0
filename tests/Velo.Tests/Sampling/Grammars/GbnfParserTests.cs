using Velo.Sampling.Grammars;

namespace Velo.Tests.Sampling.Grammars;

public class GbnfParserTests
{
    [Theory]
    [InlineData("root ::= \"yes\" | \"no\"", "yes", true)]
    [InlineData("root ::= \"yes\" | \"no\"", "no", true)]
    [InlineData("root ::= \"yes\" | \"no\"", "ye", false)]
    [InlineData("root ::= [a-c]+", "abcabc", true)]
    [InlineData("root ::= [a-c]+", "", false)]
    [InlineData("root ::= [^a-c]*", "xyz€😀", true)]
    [InlineData("root ::= [^a-c]*", "xbz", false)]
    [InlineData("root ::= \"x\"{2,3}", "xx", true)]
    [InlineData("root ::= \"x\"{2,3}", "xxxx", false)]
    [InlineData("root ::= \"x\"{2,}", "xxxxxxx", true)]
    [InlineData("root ::= (\"a\" \"b\")? \"c\"", "abc", true)]
    [InlineData("root ::= (\"a\" \"b\")? \"c\"", "ac", false)]
    [InlineData("root ::= . .", "é😀", true)]
    [InlineData("root ::= [\\u00e9-\\u00ea] \"\\x41\\n\"", "éA\n", true)]
    [InlineData("root ::= item (\",\" item)*\nitem ::= [0-9]+  # a comment\n", "1,22,333", true)]
    [InlineData("root ::=\n  \"a\"\n  | \"b\"\n", "b", true)]
    [InlineData("root ::= (\n  \"a\" |\n  \"b\"\n)+", "abba", true)]
    [InlineData("root ::= list\nlist ::= \"[\" (list (\",\" list)*)? \"]\"", "[[],[[]]]", true)]
    [InlineData("root ::= list\nlist ::= \"[\" (list (\",\" list)*)? \"]\"", "[[],[[]]", false)]
    [InlineData("root ::= \"\\\"\" [^\"\\\\]* \"\\\"\"", "\"hi there\"", true)]
    public void Matches_text_as_llama_cpp_would(string gbnf, string text, bool expected) =>
        Assert.Equal(expected, GrammarTestKit.Matches(Grammar.FromGbnf(gbnf), text));

    [Theory]
    [InlineData("root ::= foo", "'foo' is used but never defined")]
    [InlineData("start ::= \"a\"", "no 'root' rule")]
    [InlineData("root ::= \"a", "unterminated string")]
    [InlineData("root ::= [a-", "unterminated character class")]
    [InlineData("root ::= root \"a\" | \"b\"", "left-recursive")]
    [InlineData("root ::= x\nx ::= \"a\"?*", "left-recursive")]
    [InlineData("root ::= \"a\"{3,2}", "maximum below its minimum")]
    [InlineData("root ::= \"a\"{1000001}", "at most")]
    [InlineData("root ::= \"a\" )", "unexpected ')'")]
    [InlineData("root ::= \"\\q\"", "unknown escape")]
    [InlineData("root ::= \"\\uD800\"", "not a Unicode scalar value")]
    [InlineData("root ::= \"a\"\nroot ::= \"b\"", "defined twice")]
    [InlineData("root := \"a\"", "expected '::='")]
    [InlineData("root ::= *", "nothing to repeat")]
    public void Refuses_bad_grammars_naming_the_problem(string gbnf, string expected)
    {
        var error = Assert.Throws<GrammarException>(() => Grammar.FromGbnf(gbnf));
        Assert.Contains(expected, error.Message);
        Assert.IsAssignableFrom<ArgumentException>(error);
    }

    [Fact]
    public void Deep_nesting_and_huge_repetition_are_refused_not_crashing()
    {
        Assert.Throws<GrammarException>(() => Grammar.FromGbnf("root ::= " + new string('(', 10_000) + "\"a\"" + new string(')', 10_000)));
        var huge = Assert.Throws<GrammarException>(() => Grammar.FromGbnf("root ::= " + string.Concat(Enumerable.Repeat("\"ab\"{100000} ", 25))));
        Assert.Contains("too large", huge.Message);
    }

    [Fact]
    public void Any_json_object_accepts_objects_only()
    {
        var grammar = Grammar.AnyJsonObject();
        Assert.True(GrammarTestKit.Matches(grammar, "{\"a\": [1, -2.5e3, true, null, {\"b\": \"\\u00e9\\n\"}]}"));
        Assert.False(GrammarTestKit.Matches(grammar, "[1]"));
        Assert.False(GrammarTestKit.Matches(grammar, "{\"a\": 01}"));
        Assert.False(GrammarTestKit.Matches(grammar, "{\"a\": \"\\ud800\"}"));
    }
}
