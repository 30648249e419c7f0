using Velo.Formats;
using Velo.Text;

namespace Velo.Tests.Text;

public class GgufTokenizerMetadataTests
{
    private static readonly string[] SpecialTexts =
    [
        "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi there<|eot_id|>",
        "<|im_start|>user\nHi <think>hmm</think> there<|im_end|>\n<|endoftext|>",
    ];

    [Theory]
    [InlineData("llama3", "llama-bpe")]
    [InlineData("qwen3", "qwen2")]
    public void GgufWrittenFromTokenizerJsonEncodesIdentically(string folder, string vectors)
    {
        var data = HuggingFaceTokenizerReader.Read(ByteLevelBpeTokenizerTests.HfFolder(folder));
        Assert.Equal(vectors, data.PreTokenizer);
        string path = Path.Combine(Path.GetTempPath(), $"velo-tokenizer-{Guid.NewGuid():N}.gguf");
        try
        {
            var writer = new GgufWriter();
            GgufTokenizerMetadata.Write(data, writer);
            writer.Write(path);
            var fromGguf = Tokenizer.FromGguf(path);
            var fromJson = Tokenizer.FromData(data);

            Assert.Equal(fromJson.VocabSize, fromGguf.VocabSize);
            Assert.Equal((fromJson.BosId, fromJson.EosId, fromJson.EotId, fromJson.PadId, fromJson.AddBos, fromJson.AddEos),
                (fromGguf.BosId, fromGguf.EosId, fromGguf.EotId, fromGguf.PadId, fromGguf.AddBos, fromGguf.AddEos));
            var texts = VocabTestVectors.Load(vectors).Select(v => v.Text).Concat(SpecialTexts);
            foreach (string text in texts)
                foreach (bool addSpecial in (bool[])[false, true])
                    foreach (bool parseSpecial in (bool[])[false, true])
                    {
                        int[] expected = fromJson.Encode(text, addSpecial, parseSpecial);
                        Assert.Equal(expected, fromGguf.Encode(text, addSpecial, parseSpecial));
                        Assert.Equal(fromJson.Decode(expected), fromGguf.Decode(expected));
                    }
        }
        finally
        {
            File.Delete(path);
        }
    }
}
