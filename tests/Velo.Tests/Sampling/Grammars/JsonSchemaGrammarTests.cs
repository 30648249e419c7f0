using System.Text.Json;
using Json.Schema;
using Velo.Sampling.Grammars;

namespace Velo.Tests.Sampling.Grammars;

public class JsonSchemaGrammarTests
{
    public static TheoryData<SchemaCase> Cases() => [.. SchemaSuite.All];

    public static TheoryData<string> Tokenizers() => [.. GrammarTestKit.TokenizerNames];

    private static Grammar Compile(SchemaCase c)
    {
        using var schema = JsonDocument.Parse(c.Schema);
        return Grammar.FromJsonSchema(schema.RootElement);
    }

    [Fact]
    public void The_suite_holds_at_least_fifty_schemas() => Assert.True(SchemaSuite.All.Length >= 50, $"{SchemaSuite.All.Length} schemas");

    [Theory]
    [MemberData(nameof(Cases))]
    public void Accepts_the_valid_documents_and_rejects_the_invalid(SchemaCase c)
    {
        var grammar = Compile(c);
        var validator = JsonSchema.FromText(c.Schema);
        foreach (string document in c.Valid)
        {
            Assert.True(IsValid(validator, document), $"the suite's own document is invalid: {document}");
            Assert.True(GrammarTestKit.Matches(grammar, document), $"rejected valid {document}\n{grammar.Source}");
        }
        foreach (string document in c.Invalid)
            Assert.False(GrammarTestKit.Matches(grammar, document), $"accepted invalid {document}");
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void Random_sampling_under_the_mask_always_validates(SchemaCase c)
    {
        var grammar = Compile(c);
        var validator = JsonSchema.FromText(c.Schema);
        var random = new Random(c.Name.Length * 7919 + c.Schema.Length);
        int finished = 0;
        foreach (var (tokenizer, samples) in (ReadOnlySpan<(string, int)>)[("stories260K (SentencePiece, 512)", 6), ("gpt-2 (byte-level BPE)", 2)])
            for (int sample = 0; sample < samples; sample++)
            {
                string? output = GrammarTestKit.Sample(grammar, GrammarTestKit.Get(tokenizer), random, maxTokens: 400);
                if (output == null) continue;
                finished++;
                Assert.True(IsValid(validator, output), $"{tokenizer} produced an invalid document: {output}");
            }
        Assert.True(finished > 0, "no sample finished");
    }

    [Theory]
    [MemberData(nameof(Tokenizers))]
    public void Valid_documents_are_never_forbidden(string tokenizerName)
    {
        var tokenizer = GrammarTestKit.Get(tokenizerName);
        int spelled = 0, total = 0;
        foreach (var c in SchemaSuite.All)
        {
            var grammar = Compile(c);
            foreach (string document in c.Valid)
            {
                total++;
                if (!GrammarTestKit.Force(grammar, tokenizer, document, out string failure)) continue;
                Assert.True(failure.Length == 0, $"{c.Name}: {failure}");
                spelled++;
            }
        }
        // WordPiece vocabularies cannot spell most JSON (their pieces carry word-boundary spaces); every other kind can.
        if (!tokenizerName.Contains("WordPiece")) Assert.Equal(total, spelled);
    }

    [Theory]
    [InlineData("""{"type":"string","pattern":"^a+$"}""", "'pattern'", "$.pattern")]
    [InlineData("""{"type":"object","properties":{"zip":{"type":"string","pattern":"[0-9]{5}"}}}""", "'pattern'", "$.properties.zip.pattern")]
    [InlineData("""{"type":"integer","minimum":0}""", "'minimum'", "$.minimum")]
    [InlineData("""{"type":"number","exclusiveMaximum":1}""", "'exclusiveMaximum'", "$.exclusiveMaximum")]
    [InlineData("""{"type":"number","multipleOf":2}""", "'multipleOf'", "$.multipleOf")]
    [InlineData("""{"oneOf":[{"type":"string"}]}""", "'oneOf'", "$.oneOf")]
    [InlineData("""{"not":{"type":"string"}}""", "'not'", "$.not")]
    [InlineData("""{"type":"object","patternProperties":{"^x":{}}}""", "'patternProperties'", "$.patternProperties")]
    [InlineData("""{"type":"object","minProperties":1}""", "'minProperties'", "$.minProperties")]
    [InlineData("""{"type":"array","contains":{"type":"integer"}}""", "'contains'", "$.contains")]
    [InlineData("""{"type":"array","items":{"type":"array","uniqueItems":true}}""", "'uniqueItems'", "$.items.uniqueItems")]
    [InlineData("""{"type":"string","format":"email"}""", "'email'", "$.format")]
    [InlineData("""{"$ref":"https://example.com/schema.json"}""", "only references inside the schema", "$.$ref")]
    [InlineData("""{"$ref":"#/$defs/missing"}""", "points at nothing", "$.$ref")]
    [InlineData("""{"type":"strin"}""", "unknown type 'strin'", "$.type")]
    [InlineData("""{"type":"string","minLength":5,"maxLength":2}""", "'maxLength' is below 'minLength'", "at $")]
    [InlineData("""{"type":"object","properties":{"a":false},"required":["a"]}""", "accepts no value", "$.properties.a")]
    [InlineData("""{"type":"object","properties":{},"required":["b"],"additionalProperties":false}""", "'b' is not in 'properties'", "$.required")]
    [InlineData("""{"if":{"type":"string"}}""", "'if'", "$.if")]
    [InlineData("""{"type":"string","minLength":-1}""", "non-negative", "$.minLength")]
    [InlineData("""{"enum":[1,2],"type":"string"}""", "no 'enum' value", "$.enum")]
    public void Unsupported_or_invalid_schemas_are_refused_by_name_and_path(string schema, string names, string path)
    {
        using var document = JsonDocument.Parse(schema);
        var error = Assert.Throws<GrammarException>(() => Grammar.FromJsonSchema(document.RootElement));
        Assert.Contains(names, error.Message);
        Assert.Contains(path, error.Message);
    }

    [Fact]
    public void Schema_nesting_is_bounded()
    {
        string schema = string.Concat(Enumerable.Repeat("""{"type":"array","items":""", 200)) + "{}" + new string('}', 200);
        using var document = JsonDocument.Parse(schema, new JsonDocumentOptions { MaxDepth = 1000 });
        var error = Assert.Throws<GrammarException>(() => Grammar.FromJsonSchema(document.RootElement));
        Assert.Contains("deeper than", error.Message);
    }

    [Fact]
    public void Self_reference_that_must_recurse_forever_compiles_and_never_completes()
    {
        using var document = JsonDocument.Parse("""{"type":"object","properties":{"next":{"$ref":"#"}},"required":["next"],"additionalProperties":false}""");
        var grammar = Grammar.FromJsonSchema(document.RootElement);
        Assert.Null(GrammarTestKit.Sample(grammar, GrammarTestKit.Small, new Random(1), maxTokens: 200));
    }

    private static bool IsValid(JsonSchema schema, string document)
    {
        using var parsed = JsonDocument.Parse(document);
        return schema.Evaluate(parsed.RootElement, new EvaluationOptions { RequireFormatValidation = true }).IsValid;
    }
}
