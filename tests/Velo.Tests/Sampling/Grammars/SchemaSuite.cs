namespace Velo.Tests.Sampling.Grammars;

/// <summary>A JSON Schema, documents valid against it (written in the property order the grammar generates: required
/// properties as 'required' lists them, then optional ones as declared) and documents that are not.</summary>
public sealed record SchemaCase(string Name, string Schema, string[] Valid, string[] Invalid)
{
    public override string ToString() => Name;
}

internal static class SchemaSuite
{
    private static string Nested(int depth) => depth == 0
        ? """{"type":"integer"}"""
        : $$"""{"type":"object","properties":{"a":{{Nested(depth - 1)}}},"required":["a"],"additionalProperties":false}""";

    private static string NestedDocument(int depth) => depth == 0 ? "7" : $$"""{"a": {{NestedDocument(depth - 1)}}}""";

    public static readonly SchemaCase[] All =
    [
        new("string", """{"type":"string"}""", ["\"hello\"", "\"\"", "\"esc \\\" \\\\ \\n \\/ \\u00e9 é 😀\""], ["hello", "\"a\nb\"", "\"\\ud800\""]),
        new("integer", """{"type":"integer"}""", ["0", "-42", "1234567890123456"], ["01", "1.5", "+1"]),
        new("number", """{"type":"number"}""", ["3.14", "-0.5e10", "7", "1E-5"], ["1.", ".5", "NaN"]),
        new("boolean", """{"type":"boolean"}""", ["true", "false"], ["True", "1"]),
        new("null", """{"type":"null"}""", ["null"], ["nil"]),
        new("nullable string", """{"type":["string","null"]}""", ["null", "\"x\""], ["1"]),
        new("enum of strings", """{"enum":["red","green","blue"]}""", ["\"green\""], ["\"yellow\"", "green"]),
        new("enum of mixed values", """{"enum":["a",1,null,true,{"k":[1,2]}]}""", ["1", "null", "{\"k\":[1,2]}"], ["2", "{\"k\":[1]}"]),
        new("const string", """{"const":"fixed"}""", ["\"fixed\""], ["\"other\""]),
        new("const object", """{"const":{"a":1,"b":[true]}}""", ["{\"a\":1,\"b\":[true]}"], ["{\"a\":1}"]),
        new("string length 2..4", """{"type":"string","minLength":2,"maxLength":4}""", ["\"ab\"", "\"abcd\"", "\"éé\"", "\"\\n\\t\""], ["\"a\"", "\"abcde\""]),
        new("string maxLength 0", """{"type":"string","maxLength":0}""", ["\"\""], ["\"a\""]),
        new("string minLength 3", """{"type":"string","minLength":3}""", ["\"abc\"", "\"abcdefgh\""], ["\"ab\""]),
        new("object, all required", """{"type":"object","properties":{"name":{"type":"string"},"age":{"type":"integer"}},"required":["name","age"],"additionalProperties":false}""",
            ["{\"name\": \"Ann\", \"age\": 30}", "{\n  \"name\": \"Ann\",\n  \"age\": 30\n}", "{\"name\":\"\",\"age\":-1}"], ["{\"name\": \"Ann\"}", "{\"name\": \"Ann\", \"age\": 30, \"x\": 1}"]),
        new("object, all optional", """{"type":"object","properties":{"a":{"type":"integer"},"b":{"type":"integer"},"c":{"type":"integer"}},"additionalProperties":false}""",
            ["{}", "{\"b\": 1}", "{\"a\": 1, \"c\": 3}", "{\"a\":1,\"b\":2,\"c\":3}", "{\"c\": 3}"], ["{,}", "{\"a\": 1,}", "{\"d\": 1}"]),
        new("object, required and optional", """{"type":"object","properties":{"id":{"type":"integer"},"tag":{"type":"string"},"on":{"type":"boolean"}},"required":["id"],"additionalProperties":false}""",
            ["{\"id\": 1}", "{\"id\": 1, \"tag\": \"x\"}", "{\"id\": 1, \"on\": true}", "{\"id\": 1, \"tag\": \"x\", \"on\": false}"], ["{\"tag\": \"x\"}"]),
        new("required listed in another order", """{"type":"object","properties":{"a":{"type":"integer"},"b":{"type":"integer"}},"required":["b","a"],"additionalProperties":false}""",
            ["{\"b\": 2, \"a\": 1}"], ["{\"b\": 2}"]),
        new("empty closed object", """{"type":"object","additionalProperties":false}""", ["{}", "{ }"], ["{\"a\":1}"]),
        new("any object", """{"type":"object"}""", ["{\"x\": [1, {\"y\": null}], \"z\": \"w\"}", "{}"], ["[]"]),
        new("map of integers", """{"type":"object","additionalProperties":{"type":"integer"}}""", ["{\"a\": 1, \"b\": 2}", "{}"], ["{\"a\": \"1\"}"]),
        new("array of integers", """{"type":"array","items":{"type":"integer"}}""", ["[]", "[1, 2, 3]", "[ 1 ]"], ["[1,]", "[\"1\"]"]),
        new("array 2..3 strings", """{"type":"array","items":{"type":"string"},"minItems":2,"maxItems":3}""", ["[\"a\", \"b\"]", "[\"a\",\"b\",\"c\"]"], ["[\"a\"]", "[\"a\",\"b\",\"c\",\"d\"]"]),
        new("array maxItems 0", """{"type":"array","maxItems":0}""", ["[]"], ["[1]"]),
        new("array minItems 1", """{"type":"array","items":{"type":"number"},"minItems":1}""", ["[1]", "[1, 2.5]"], ["[]"]),
        new("tuple, no more items", """{"type":"array","prefixItems":[{"type":"string"},{"type":"integer"}],"items":false}""", ["[\"a\", 1]"], ["[\"a\", 1, 2]", "[1, \"a\"]"]),
        new("tuple with extra items", """{"type":"array","prefixItems":[{"type":"boolean"}],"items":{"type":"null"}}""", ["[true]", "[true, null, null]"], ["[true, 1]"]),
        new("tuple with item bounds", """{"type":"array","prefixItems":[{"type":"integer"}],"items":{"type":"integer"},"minItems":3,"maxItems":4}""", ["[1, 2, 3]", "[1,2,3,4]"], ["[1, 2]", "[1,2,3,4,5]"]),
        new("array of objects", """{"type":"array","items":{"type":"object","properties":{"x":{"type":"integer"}},"required":["x"],"additionalProperties":false}}""",
            ["[{\"x\": 1}, {\"x\": 2}]", "[]"], ["[{}]"]),
        new("nested objects", """{"type":"object","properties":{"name":{"type":"string"},"address":{"type":"object","properties":{"street":{"type":"string"},"city":{"type":"string"},"zip":{"type":["string","null"]}},"required":["street","city","zip"],"additionalProperties":false}},"required":["name","address"],"additionalProperties":false}""",
            ["{\"name\": \"Bo\", \"address\": {\"street\": \"Main 1\", \"city\": \"Oslo\", \"zip\": null}}"], ["{\"name\": \"Bo\", \"address\": {\"street\": \"Main 1\"}}"]),
        new("anyOf string or integer", """{"anyOf":[{"type":"string"},{"type":"integer"}]}""", ["\"s\"", "5"], ["true"]),
        new("anyOf objects", """{"anyOf":[{"type":"object","properties":{"kind":{"const":"a"},"x":{"type":"integer"}},"required":["kind","x"],"additionalProperties":false},{"type":"object","properties":{"kind":{"const":"b"},"y":{"type":"string"}},"required":["kind","y"],"additionalProperties":false}]}""",
            ["{\"kind\": \"a\", \"x\": 1}", "{\"kind\": \"b\", \"y\": \"z\"}"], ["{\"kind\": \"a\", \"y\": \"z\"}"]),
        new("$ref to $defs", """{"$defs":{"pt":{"type":"object","properties":{"x":{"type":"number"},"y":{"type":"number"}},"required":["x","y"],"additionalProperties":false}},"type":"object","properties":{"from":{"$ref":"#/$defs/pt"},"to":{"$ref":"#/$defs/pt"}},"required":["from","to"],"additionalProperties":false}""",
            ["{\"from\": {\"x\": 0, \"y\": 1}, \"to\": {\"x\": 2.5, \"y\": -3}}"], ["{\"from\": {\"x\": 0}, \"to\": {\"x\": 2.5, \"y\": -3}}"]),
        new("$ref to definitions", """{"$schema":"http://json-schema.org/draft-07/schema#","definitions":{"color":{"enum":["r","g"]}},"type":"array","items":{"$ref":"#/definitions/color"}}""", ["[\"r\", \"g\", \"r\"]"], ["[\"b\"]"]),
        new("recursive tree", """{"$defs":{"node":{"type":"object","properties":{"value":{"type":"integer"},"children":{"type":"array","items":{"$ref":"#/$defs/node"},"maxItems":3}},"required":["value","children"],"additionalProperties":false}},"$ref":"#/$defs/node"}""",
            ["{\"value\": 1, \"children\": [{\"value\": 2, \"children\": []}, {\"value\": 3, \"children\": [{\"value\": 4, \"children\": []}]}]}"], ["{\"value\": 1}"]),
        new("recursion through the root", """{"type":"object","properties":{"next":{"anyOf":[{"$ref":"#"},{"type":"null"}]}},"required":["next"],"additionalProperties":false}""",
            ["{\"next\": {\"next\": null}}", "{\"next\": null}"], ["{\"next\": 1}"]),
        new("allOf of one", """{"allOf":[{"type":"integer"}]}""", ["3"], ["\"3\""]),
        new("true schema", "true", ["[1, \"a\"]", "null", "{\"a\": {}}"], []),
        new("empty schema", "{}", ["{\"a\":1}", "2", "\"x\""], []),
        new("date", """{"type":"string","format":"date"}""", ["\"2024-02-28\"", "\"1999-12-01\""], ["\"2024-13-01\"", "\"2024-1-01\""]),
        new("date-time", """{"type":"string","format":"date-time"}""", ["\"2024-01-15T10:30:00Z\"", "\"2024-01-15T10:30:00.123+02:00\""], ["\"2024-01-15 10:30:00Z\""]),
        new("time", """{"type":"string","format":"time"}""", ["\"23:59:59Z\"", "\"00:00:00-05:30\""], ["\"24:00:00Z\""]),
        new("uuid", """{"type":"string","format":"uuid"}""", ["\"123e4567-e89b-12d3-a456-426614174000\""], ["\"123e4567\""]),
        new("enum with unicode and quotes", """{"type":"string","enum":["café","日本","a\"b","tab\there"]}""", ["\"日本\"", "\"a\\\"b\"", "\"café\"", "\"tab\\there\""], ["\"cafe\""]),
        new("unusual property names", """{"type":"object","properties":{"first name":{"type":"string"},"ключ":{"type":"integer"},"a\"b":{"type":"boolean"},"":{"type":"null"}},"required":["first name","ключ","a\"b",""],"additionalProperties":false}""",
            ["{\"first name\": \"x\", \"ключ\": 1, \"a\\\"b\": true, \"\": null}"], ["{\"first name\": \"x\"}"]),
        new("number or integer", """{"type":["number","integer"]}""", ["1", "1.5"], ["\"1\""]),
        new("array or object", """{"type":["array","object"]}""", ["[]", "{}", "[{\"a\": []}]"], ["1"]),
        new("nested arrays", """{"type":"array","items":{"type":"array","items":{"type":"integer"},"maxItems":2},"maxItems":2}""", ["[[1,2],[3]]", "[[]]"], ["[[1,2,3]]", "[[],[],[]]"]),
        new("annotations", """{"title":"T","description":"d","$schema":"https://json-schema.org/draft/2020-12/schema","$comment":"c","type":"object","properties":{"a":{"type":"string","description":"x","default":"y","examples":["e"]}},"required":["a"],"additionalProperties":false}""",
            ["{\"a\":\"z\"}"], ["{}"]),
        new("OpenAI strict reasoning", """{"type":"object","properties":{"steps":{"type":"array","items":{"type":"object","properties":{"explanation":{"type":"string"},"output":{"type":"string"}},"required":["explanation","output"],"additionalProperties":false}},"final_answer":{"type":"string"}},"required":["steps","final_answer"],"additionalProperties":false}""",
            ["{\"steps\": [{\"explanation\": \"add\", \"output\": \"2\"}], \"final_answer\": \"2\"}"], ["{\"steps\": []}"]),
        new("enum of integers", """{"type":"integer","enum":[1,2,3]}""", ["2"], ["4"]),
        new("nullable enum via anyOf", """{"anyOf":[{"type":"string","enum":["a","b"]},{"type":"null"}]}""", ["null", "\"a\""], ["\"c\""]),
        new("uniqueItems false", """{"type":"array","uniqueItems":false,"items":{"type":"boolean"}}""", ["[true,true]"], ["[1]"]),
        new("required but undeclared, open object", """{"type":"object","required":["x"]}""", ["{\"x\": [1]}"], ["{}"]),
        new("ten nested objects", Nested(10), [NestedDocument(10)], [NestedDocument(9)]),
        new("strings of bounded length in an array", """{"type":"array","items":{"type":"string","maxLength":3},"maxItems":4}""", ["[\"abc\", \"\", \"é\"]"], ["[\"abcd\"]"]),
        new("object with array and enum fields", """{"type":"object","properties":{"mood":{"type":"string","enum":["Happy","Sad"]},"tags":{"type":"array","items":{"type":"string","enum":["X","Y"]}},"score":{"type":"number"},"ok":{"type":"boolean"}},"required":["mood","tags","score","ok"],"additionalProperties":false}""",
            ["{\"mood\": \"Sad\", \"tags\": [\"X\", \"Y\"], \"score\": 0.5, \"ok\": true}"], ["{\"mood\": \"Glad\", \"tags\": [], \"score\": 0.5, \"ok\": true}"]),
    ];
}
