using System.Text.Json.Nodes;
using Velo.Tests.Formats;
using Velo.Text;

namespace Velo.Tests.Text;

/// <summary>
/// Gemma's tokenizer.json splits at spaces after its normalizer has replaced every space by ▁, so the split never
/// matches: it reads as the same SentencePiece-style tokenizer without it (and without a space prefix, as llama.cpp
/// writes Gemma's). A space split without that normalizer stays refused.
/// </summary>
public sealed class GemmaTokenizerJsonTests : IDisposable
{
    private readonly string _folder = Directory.CreateTempSubdirectory("velo-gemma-tok-").FullName;

    public void Dispose() => Directory.Delete(_folder, recursive: true);

    private string Write(string name, Action<JsonObject> edit)
    {
        string dir = Path.Combine(_folder, name);
        Directory.CreateDirectory(dir);
        HuggingFaceFolder.WriteTokenizer(dir);
        string file = Path.Combine(dir, "tokenizer.json");
        var json = HuggingFaceFolder.ReadJson(file);
        edit(json);
        File.WriteAllText(file, json.ToJsonString());
        return dir;
    }

    private static JsonObject SpaceSplit() => new()
    {
        ["type"] = "Split", ["pattern"] = new JsonObject { ["String"] = " " }, ["behavior"] = "MergedWithPrevious", ["invert"] = false,
    };

    private static JsonObject ReplaceSpaces() => new()
    {
        ["type"] = "Replace", ["pattern"] = new JsonObject { ["String"] = " " }, ["content"] = "▁",
    };

    [Fact]
    public void GemmaSpaceSplitAfterReplaceChangesNothing()
    {
        var gemma = Tokenizer.FromHuggingFace(Write("gemma", json =>
        {
            json["normalizer"] = ReplaceSpaces();
            json["pre_tokenizer"] = SpaceSplit();
        }));
        var plain = Tokenizer.FromHuggingFace(Write("plain", json => json["normalizer"] = ReplaceSpaces()));
        foreach (string text in (string[])["ab ab", " a  b ", "a", "héllo wörld\n", ""])
            Assert.Equal(plain.Encode(text), gemma.Encode(text));
        Assert.Equal([1, 260, 264], gemma.Encode("a ab")); // <s> a ▁ab: no space prefix
    }

    [Fact]
    public void SpaceSplitWithoutTheReplaceIsRefused()
    {
        string dir = Write("split-only", json =>
        {
            json.Remove("normalizer");
            json["pre_tokenizer"] = SpaceSplit();
        });
        var e = Assert.Throws<NotSupportedException>(() => Tokenizer.FromHuggingFace(dir));
        Assert.Contains("Split", e.Message);
    }
}
