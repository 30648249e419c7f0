using Velo.Text;

namespace Velo.Tests.Text;

public class SpecialTokenTests
{
    private static readonly Lazy<ITokenizer> Llama3 = new(() => Tokenizer.FromHuggingFace(ByteLevelBpeTokenizerTests.HfFolder("llama3")));
    private static readonly Lazy<ITokenizer> Qwen3 = new(() => Tokenizer.FromHuggingFace(ByteLevelBpeTokenizerTests.HfFolder("qwen3")));

    [Fact]
    public void Llama3SpecialIds()
    {
        var tokenizer = Llama3.Value;
        Assert.Equal(128000, tokenizer.BosId);
        Assert.Equal(128001, tokenizer.EosId);
        Assert.Equal(128009, tokenizer.EotId);
        Assert.True(tokenizer.AddBos);
        Assert.False(tokenizer.AddEos);
        Assert.True(tokenizer.IsEndOfGeneration(128001));
        Assert.True(tokenizer.IsEndOfGeneration(128009));
        Assert.False(tokenizer.IsEndOfGeneration(128000));
        Assert.Equal(128000, tokenizer.Encode("Hi")[0]);
        Assert.Equal(tokenizer.Encode("Hi", addSpecial: false), tokenizer.Encode("Hi")[1..]);
    }

    [Fact]
    public void ControlTokensAreParsedOnlyWhenAsked()
    {
        var tokenizer = Llama3.Value;
        const string text = "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>";
        int[] parsed = tokenizer.Encode(text, addSpecial: false, parseSpecial: true);
        Assert.Equal(128006, parsed[0]);
        Assert.Equal(128009, parsed[^1]);
        Assert.Contains(128007, parsed);
        Assert.Equal(text, tokenizer.Decode(parsed));
        Assert.Equal("user\n\nHi", tokenizer.Decode(parsed, skipSpecial: true));

        int[] plain = tokenizer.Encode(text, addSpecial: false);
        Assert.DoesNotContain(plain, id => id >= 128000);
        Assert.Equal(text, tokenizer.Decode(plain));
    }

    [Fact]
    public void QwenUserDefinedTokensAreAlwaysWholeTokens()
    {
        var tokenizer = Qwen3.Value;
        int think = 151667, endThink = 151668;
        Assert.Equal("<think>", tokenizer.TokenText(think));
        int[] ids = tokenizer.Encode("<think>why</think> because", addSpecial: false);
        Assert.Equal(think, ids[0]);
        Assert.Contains(endThink, ids);
        Assert.Equal("<think>why</think> because", tokenizer.Decode(ids, skipSpecial: true));
        // A control token stays text without parseSpecial.
        Assert.DoesNotContain(151644, tokenizer.Encode("<|im_start|>", addSpecial: false));
        Assert.Equal([151644], tokenizer.Encode("<|im_start|>", addSpecial: false, parseSpecial: true));
    }

    [Fact]
    public void QwenSpecialIds()
    {
        var tokenizer = Qwen3.Value;
        Assert.Equal(-1, tokenizer.BosId);
        Assert.False(tokenizer.AddBos);
        Assert.Equal(151645, tokenizer.EosId); // <|im_end|>, from tokenizer_config.json
        Assert.Equal(151643, tokenizer.PadId);
        Assert.True(tokenizer.IsEndOfGeneration(151645));
        Assert.True(tokenizer.IsEndOfGeneration(151643));
        Assert.False(tokenizer.IsEndOfGeneration(151644));
        Assert.Equal(tokenizer.Encode("Hi", addSpecial: false), tokenizer.Encode("Hi"));
    }
}
