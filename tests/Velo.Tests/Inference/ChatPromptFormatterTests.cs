using Velo.Formats;
using Velo.Inference;
using Velo.Models;
using Velo.Text.ChatTemplates;

namespace Velo.Tests.Inference;

public sealed class ChatPromptFormatterTests
{
    private static readonly ChatMessage[] Conversation = [new("system", "Be brief."), new("user", "Hi there")];

    [Fact]
    public void A_model_without_a_template_gets_ChatML_with_its_end_marker_as_a_stop_string()
    {
        using var model = LanguageModel.Load(TestPaths.Stories260K);
        var formatter = new ChatPromptFormatter(model);

        Assert.NotNull(formatter.FallbackReason);
        Assert.Equal(["<|im_end|>"], formatter.StopStrings);
        Assert.Equal("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n", formatter.Render(Conversation));
        int[] tokens = formatter.Format(Conversation);
        Assert.Equal(model.Tokenizer.BosId, tokens[0]);
        Assert.Equal(model.Tokenizer.Encode(formatter.Render(Conversation)), tokens);
    }

    [Fact]
    public void The_models_own_template_is_used_its_special_tokens_parsed_and_its_bos_not_doubled()
    {
        const string template = "{{ bos_token }}{% for m in messages %}[{{ m.role }}] {{ m.content }}{{ eos_token }}{% endfor %}" +
                                "{% if add_generation_prompt %}[assistant]{% endif %}";
        string path = WriteStoriesWithTemplate(template);
        try
        {
            using var model = LanguageModel.Load(path);
            var formatter = new ChatPromptFormatter(model);
            Assert.Null(formatter.FallbackReason);
            Assert.Empty(formatter.StopStrings);
            Assert.Equal("<s>[system] Be brief.</s>[user] Hi there</s>[assistant]", formatter.Render(Conversation));

            int[] tokens = formatter.Format(Conversation);
            Assert.Equal(model.Tokenizer.BosId, tokens[0]);
            Assert.Equal(1, tokens.Count(t => t == model.Tokenizer.BosId));
            Assert.Equal(2, tokens.Count(t => t == model.Tokenizer.EosId));
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Fact]
    public void A_template_this_engine_cannot_parse_falls_back_to_ChatML_and_says_why()
    {
        string path = WriteStoriesWithTemplate("{% for m in messages %}{{ m.content }");
        try
        {
            using var model = LanguageModel.Load(path);
            var formatter = new ChatPromptFormatter(model);
            Assert.Same(ChatTemplate.ChatMl, formatter.Template);
            Assert.Contains("cannot be used", formatter.FallbackReason);
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Fact]
    public void A_template_nesting_too_deep_to_render_safely_falls_back_to_ChatML_and_says_so()
    {
        // Parsed before the depth check, this chain overflowed the stack (killing the process) on the first render.
        string path = WriteStoriesWithTemplate("{{ 'x'" + string.Concat(Enumerable.Repeat("|upper", 60_000)) + " }}");
        try
        {
            using var model = LanguageModel.Load(path);
            var formatter = new ChatPromptFormatter(model);
            Assert.Same(ChatTemplate.ChatMl, formatter.Template);
            Assert.Contains("nests deeper than 200 levels", formatter.FallbackReason);
        }
        finally
        {
            File.Delete(path);
        }
    }

    /// <summary>A small random-weight model with stories260K's tokenizer and the given chat template.</summary>
    private static string WriteStoriesWithTemplate(string template)
    {
        using var stories = GgufFile.Open(TestPaths.Stories260K);
        var metadata = new GgufMetadata();
        foreach (var (key, value) in stories.Metadata) metadata.Add(key, value);
        metadata.Add("tokenizer.chat_template", template);
        string path = Path.Combine(Path.GetTempPath(), $"velo-template-{Guid.NewGuid():N}.gguf");
        ModelSynthesizer.Write(path, new SynthSpec { Dim = 64, Layers = 1, Heads = 2, FfnDim = 64, VocabSize = 512 }, SynthTokenizer.FromGguf(metadata));
        return path;
    }
}
