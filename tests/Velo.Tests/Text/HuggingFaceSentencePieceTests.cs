using System.Text.Json;
using Velo.Text;

namespace Velo.Tests.Text;

public class HuggingFaceSentencePieceTests
{
    /// <summary>
    /// Writes the Llama 2 GGUF vocabulary as a Llama 2 style tokenizer.json, deriving merges from piece scores the
    /// way Hugging Face's SentencePiece converter does: every split of a piece into two pieces, best piece first.
    /// </summary>
    private static string WriteLlama2TokenizerJson(TokenizerData spm)
    {
        var ids = spm.Tokens.Select((t, i) => (t, i)).ToDictionary(p => p.t, p => p.i);
        bool IsPiece(int id) => spm.TokenTypes![id] == TokenType.Normal;
        var merges = new List<(float Score, int Id, int Left, string L, string R)>();
        for (int id = 0; id < spm.Tokens.Length; id++)
        {
            string token = spm.Tokens[id];
            if (!IsPiece(id)) continue;
            for (int i = 1; i < token.Length; i++)
            {
                if (char.IsLowSurrogate(token[i])) continue;
                if (ids.TryGetValue(token[..i], out int left) && ids.TryGetValue(token[i..], out int right) && IsPiece(left) && IsPiece(right))
                    merges.Add((spm.Scores![id], id, left, token[..i], token[i..]));
            }
        }
        merges.Sort((a, b) => a.Score != b.Score ? b.Score.CompareTo(a.Score) : a.Id != b.Id ? a.Id.CompareTo(b.Id) : a.Left.CompareTo(b.Left));

        string folder = Path.Combine(Path.GetTempPath(), $"velo-llama2-json-{Guid.NewGuid():N}");
        Directory.CreateDirectory(folder);
        using var stream = File.Create(Path.Combine(folder, "tokenizer.json"));
        using var json = new Utf8JsonWriter(stream);
        json.WriteStartObject();
        json.WriteStartArray("added_tokens");
        foreach (int id in (int[])[0, 1, 2])
        {
            json.WriteStartObject();
            json.WriteNumber("id", id);
            json.WriteString("content", spm.Tokens[id]);
            json.WriteBoolean("special", true);
            json.WriteEndObject();
        }
        json.WriteEndArray();
        json.WritePropertyName("normalizer");
        using (var normalizer = JsonDocument.Parse("""
            { "type": "Sequence", "normalizers": [
                { "type": "Prepend", "prepend": "▁" },
                { "type": "Replace", "pattern": { "String": " " }, "content": "▁" } ] }
            """))
            normalizer.WriteTo(json);
        json.WriteNull("pre_tokenizer");
        json.WritePropertyName("post_processor");
        using (var post = JsonDocument.Parse("""
            { "type": "TemplateProcessing", "single": [ { "SpecialToken": { "id": "<s>", "type_id": 0 } }, { "Sequence": { "id": "A", "type_id": 0 } } ] }
            """))
            post.WriteTo(json);
        json.WriteStartObject("model");
        json.WriteString("type", "BPE");
        json.WriteBoolean("byte_fallback", true);
        json.WriteString("unk_token", "<unk>");
        json.WriteStartObject("vocab");
        for (int id = 0; id < spm.Tokens.Length; id++) json.WriteNumber(spm.Tokens[id], id);
        json.WriteEndObject();
        json.WriteStartArray("merges");
        foreach (var merge in merges) json.WriteStringValue(merge.L + " " + merge.R);
        json.WriteEndArray();
        json.WriteEndObject();
        json.WriteEndObject();
        return folder;
    }

    [Fact]
    public void Llama2StyleTokenizerJsonMatchesLlamaCppVectors()
    {
        TokenizerData spm;
        using (var gguf = Velo.Formats.GgufFile.Open(VocabTestVectors.VocabFile("llama-spm")))
            spm = GgufTokenizerMetadata.Read(gguf.Metadata);
        string folder = WriteLlama2TokenizerJson(spm);
        try
        {
            var tokenizer = Tokenizer.FromHuggingFace(folder);
            Assert.IsType<SentencePieceTokenizer>(tokenizer);
            Assert.True(tokenizer.AddBos);
            Assert.Equal(1, tokenizer.BosId);
            var vectors = VocabTestVectors.Load("llama-spm");
            Assert.Equal("", VocabTestVectors.Mismatches(text => tokenizer.Encode(text, addSpecial: false), vectors));
            foreach (var (text, _) in vectors) Assert.Equal(text, tokenizer.Decode(tokenizer.Encode(text), skipSpecial: true));
        }
        finally
        {
            Directory.Delete(folder, recursive: true);
        }
    }
}
