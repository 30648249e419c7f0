using System.Text.Json;
using Velo.Text.ChatTemplates;

namespace Velo.Tests.Text.ChatTemplates;

/// <summary>Real chat templates against prompts worked out by hand from each template's text.</summary>
public class ModelTemplateTests
{
    private static readonly ChatMessage System = new("system", "You are a helpful assistant.");
    private static readonly ChatMessage User = new("user", "What is 2+2?");
    private static readonly ChatMessage Assistant = new("assistant", "2+2 is 4.");

    private static (ChatTemplate Template, string Bos, string Eos) LoadShared(string model)
    {
        using var config = JsonDocument.Parse(File.ReadAllText(TestPaths.SharedFile("tokenizers", "hf", model, "tokenizer_config.json")));
        var root = config.RootElement;
        static string TokenText(JsonElement token) => token.ValueKind switch
        {
            JsonValueKind.String => token.GetString()!,
            JsonValueKind.Object => token.GetProperty("content").GetString()!,
            _ => "",
        };
        return (ChatTemplate.Parse(root.GetProperty("chat_template").GetString()!), TokenText(root.GetProperty("bos_token")), TokenText(root.GetProperty("eos_token")));
    }

    [Fact]
    public void Llama3_SystemUserAssistant()
    {
        var (template, bos, eos) = LoadShared("llama3");
        Assert.Equal("<|begin_of_text|>", bos);

        // The content is trimmed by '| trim', which binds tighter than '+'.
        var prompt = template.Render([System, new("user", "  What is 2+2?\n"), Assistant], addGenerationPrompt: false, bos, eos);

        // This is the base model's template: it appends the assistant header whether or not a prompt is asked for.
        Assert.Equal(
            "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nYou are a helpful assistant.<|eot_id|>" +
            "<|start_header_id|>user<|end_header_id|>\n\nWhat is 2+2?<|eot_id|>" +
            "<|start_header_id|>assistant<|end_header_id|>\n\n2+2 is 4.<|eot_id|>" +
            "<|start_header_id|>assistant<|end_header_id|>\n\n",
            prompt);
    }

    [Fact]
    public void Llama3_GenerationPrompt()
    {
        var (template, bos, eos) = LoadShared("llama3");

        var prompt = template.Render([System, User], addGenerationPrompt: true, bos, eos);

        Assert.Equal(
            "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nYou are a helpful assistant.<|eot_id|>" +
            "<|start_header_id|>user<|end_header_id|>\n\nWhat is 2+2?<|eot_id|>" +
            "<|start_header_id|>assistant<|end_header_id|>\n\n",
            prompt);
    }

    [Fact]
    public void Qwen3_SystemUserAssistant_LastAssistantTurnGetsAnEmptyThinkBlock()
    {
        var (template, bos, eos) = LoadShared("qwen3");
        Assert.Equal("<|im_end|>", eos);

        var prompt = template.Render([System, User, Assistant], addGenerationPrompt: false, bos, eos);

        Assert.Equal(
            "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n" +
            "<|im_start|>user\nWhat is 2+2?<|im_end|>\n" +
            "<|im_start|>assistant\n<think>\n\n</think>\n\n2+2 is 4.<|im_end|>\n",
            prompt);
    }

    [Fact]
    public void Qwen3_GenerationPrompt()
    {
        var (template, bos, eos) = LoadShared("qwen3");

        var prompt = template.Render([System, User], addGenerationPrompt: true, bos, eos);

        Assert.Equal(
            "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n" +
            "<|im_start|>user\nWhat is 2+2?<|im_end|>\n" +
            "<|im_start|>assistant\n",
            prompt);
    }

    [Fact]
    public void Qwen3_EarlierReasoningIsDropped_AndThinkingCanBeSwitchedOff()
    {
        var (template, bos, eos) = LoadShared("qwen3");
        ChatMessage[] messages =
        [
            System, User,
            new("assistant", "<think>\nAdding two and two.\n</think>\n\n4."),
            new("user", "And 3+3?"),
        ];

        var prompt = template.Render(messages, addGenerationPrompt: true, bos, eos, new Dictionary<string, object?> { ["enable_thinking"] = false });

        Assert.Equal(
            "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n" +
            "<|im_start|>user\nWhat is 2+2?<|im_end|>\n" +
            "<|im_start|>assistant\n4.<|im_end|>\n" +
            "<|im_start|>user\nAnd 3+3?<|im_end|>\n" +
            "<|im_start|>assistant\n<think>\n\n</think>\n\n",
            prompt);
    }

    [Fact]
    public void Qwen3_ToolsAreListedAsCompactJson_AndToolCallsRendered()
    {
        var (template, bos, eos) = LoadShared("qwen3");
        var tools = JsonDocument.Parse("""[{"type": "function", "function": {"name": "weather", "parameters": {"city": "string"}}}]""").RootElement;
        var messages = JsonDocument.Parse("""
            [
              {"role": "user", "content": "Weather in Paris?"},
              {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "weather", "arguments": {"city": "Paris"}}}]},
              {"role": "tool", "content": "sunny"}
            ]
            """).RootElement;

        var prompt = template.Render([], addGenerationPrompt: true, bos, eos,
            new Dictionary<string, object?> { ["tools"] = tools, ["messages"] = messages });

        Assert.Equal(
            "<|im_start|>system\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\n" +
            "You are provided with function signatures within <tools></tools> XML tags:\n<tools>\n" +
            "{\"type\": \"function\", \"function\": {\"name\": \"weather\", \"parameters\": {\"city\": \"string\"}}}\n</tools>\n\n" +
            "For each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n" +
            "<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n" +
            "<|im_start|>user\nWeather in Paris?<|im_end|>\n" +
            "<|im_start|>assistant\n<tool_call>\n{\"name\": \"weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call><|im_end|>\n" +
            "<|im_start|>user\n<tool_response>\nsunny\n</tool_response><|im_end|>\n" +
            "<|im_start|>assistant\n",
            prompt);
    }

    /// <summary>Qwen2.5 Instruct's template as published in its tokenizer_config.json.</summary>
    private const string Qwen25Template = """
        {%- if tools %}
            {{- '<|im_start|>system\n' }}
            {%- if messages[0]['role'] == 'system' %}
                {{- messages[0]['content'] }}
            {%- else %}
                {{- 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}
            {%- endif %}
            {{- "\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>" }}
            {%- for tool in tools %}
                {{- "\n" }}
                {{- tool | tojson }}
            {%- endfor %}
            {{- "\n</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n" }}
        {%- else %}
            {%- if messages[0]['role'] == 'system' %}
                {{- '<|im_start|>system\n' + messages[0]['content'] + '<|im_end|>\n' }}
            {%- else %}
                {{- '<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n' }}
            {%- endif %}
        {%- endif %}
        {%- for message in messages %}
            {%- if (message.role == "user") or (message.role == "system" and not loop.first) or (message.role == "assistant" and not message.tool_calls) %}
                {{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>' + '\n' }}
            {%- elif message.role == "assistant" %}
                {{- '<|im_start|>' + message.role }}
                {%- if message.content %}
                    {{- '\n' + message.content }}
                {%- endif %}
                {%- for tool_call in message.tool_calls %}
                    {%- if tool_call.function is defined %}
                        {%- set tool_call = tool_call.function %}
                    {%- endif %}
                    {{- '\n<tool_call>\n{"name": "' }}
                    {{- tool_call.name }}
                    {{- '", "arguments": ' }}
                    {{- tool_call.arguments | tojson }}
                    {{- '}\n</tool_call>' }}
                {%- endfor %}
                {{- '<|im_end|>\n' }}
            {%- elif message.role == "tool" %}
                {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != "tool") %}
                    {{- '<|im_start|>user' }}
                {%- endif %}
                {{- '\n<tool_response>\n' }}
                {{- message.content }}
                {{- '\n</tool_response>' }}
                {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
                    {{- '<|im_end|>\n' }}
                {%- endif %}
            {%- endif %}
        {%- endfor %}
        {%- if add_generation_prompt %}
            {{- '<|im_start|>assistant\n' }}
        {%- endif %}
        """;

    [Fact]
    public void Qwen25_AddsItsDefaultSystemPromptWhenThereIsNone()
    {
        var prompt = ChatTemplate.Parse(Qwen25Template).Render([User, Assistant, new("user", "And 3+3?")], addGenerationPrompt: true, "", "<|im_end|>");

        Assert.Equal(
            "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n" +
            "<|im_start|>user\nWhat is 2+2?<|im_end|>\n" +
            "<|im_start|>assistant\n2+2 is 4.<|im_end|>\n" +
            "<|im_start|>user\nAnd 3+3?<|im_end|>\n" +
            "<|im_start|>assistant\n",
            prompt);
    }

    [Fact]
    public void Llama31_DefaultsTheDateAndSkipsToolBlocksWithoutTools()
    {
        var template = ChatTemplate.Parse(PublishedTemplates.Llama31);

        var prompt = template.Render([System, User, Assistant, new("user", "Thanks")], addGenerationPrompt: true, "<|begin_of_text|>", "<|eot_id|>");

        Assert.Equal(
            "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n" +
            "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n" +
            "You are a helpful assistant.<|eot_id|>" +
            "<|start_header_id|>user<|end_header_id|>\n\nWhat is 2+2?<|eot_id|>" +
            "<|start_header_id|>assistant<|end_header_id|>\n\n2+2 is 4.<|eot_id|>" +
            "<|start_header_id|>user<|end_header_id|>\n\nThanks<|eot_id|>" +
            "<|start_header_id|>assistant<|end_header_id|>\n\n",
            prompt);
    }

    [Fact]
    public void Llama31_ToolsGoIntoTheFirstUserMessageAsIndentedJson()
    {
        var template = ChatTemplate.Parse(PublishedTemplates.Llama31);
        var tools = new List<object?>
        {
            new Dictionary<string, object?> { ["name"] = "weather", ["parameters"] = new Dictionary<string, object?> { ["city"] = "string" }, ["tags"] = new List<object?>() },
        };

        var prompt = template.Render([User], addGenerationPrompt: true, "<s>", "</s>",
            new Dictionary<string, object?> { ["tools"] = tools, ["date_string"] = "01 Jan 2025" });

        Assert.Equal(
            "<s><|start_header_id|>system<|end_header_id|>\n\nEnvironment: ipython\n" +
            "Cutting Knowledge Date: December 2023\nToday Date: 01 Jan 2025\n\n<|eot_id|>" +
            "<|start_header_id|>user<|end_header_id|>\n\n" +
            "Given the following functions, please respond with a JSON for a function call with its proper arguments that best answers the given prompt.\n\n" +
            "Respond in the format {\"name\": function name, \"parameters\": dictionary of argument name and its value}.Do not use variables.\n\n" +
            "{\n    \"name\": \"weather\",\n    \"parameters\": {\n        \"city\": \"string\"\n    },\n    \"tags\": []\n}\n\n" +
            "What is 2+2?<|eot_id|>" +
            "<|start_header_id|>assistant<|end_header_id|>\n\n",
            prompt);
    }

    private sealed class FixedClock(DateTimeOffset now) : TimeProvider
    {
        public override DateTimeOffset GetUtcNow() => now.ToUniversalTime();

        public override TimeZoneInfo LocalTimeZone { get; } = TimeZoneInfo.CreateCustomTimeZone("fixed", now.Offset, "fixed", "fixed");
    }

    [Fact]
    public void Llama32_DateComesFromStrftimeNow()
    {
        // The date lines of the Llama 3.2 template.
        var template = ChatTemplate.Parse("""
            {%- if not date_string is defined %}
                {%- if strftime_now is defined %}
                    {%- set date_string = strftime_now("%d %b %Y") %}
                {%- else %}
                    {%- set date_string = "26 Jul 2024" %}
                {%- endif %}
            {%- endif %}
            {{- "Today Date: " + date_string + "\n\n" }}
            """);
        var clock = new FixedClock(new DateTimeOffset(2025, 3, 5, 23, 30, 0, TimeSpan.FromHours(-8)));

        var prompt = template.Render([], false, "", "", null, clock, RenderLimits.Default);

        Assert.Equal("Today Date: 05 Mar 2025\n\n", prompt);
    }

    private const string MistralTemplate =
        "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}" +
        "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}" +
        "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}" +
        "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token + ' ' }}" +
        "{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}";

    [Fact]
    public void Mistral_AlternatingTurns()
    {
        var prompt = ChatTemplate.Parse(MistralTemplate).Render(
            [User, Assistant, new("user", "And 3+3?")], addGenerationPrompt: true, "<s>", "</s>");

        Assert.Equal("<s>[INST] What is 2+2? [/INST]2+2 is 4.</s> [INST] And 3+3? [/INST]", prompt);
    }

    [Fact]
    public void Mistral_RejectsASystemMessageThroughRaiseException()
    {
        var template = ChatTemplate.Parse(MistralTemplate);

        var error = Assert.Throws<ChatTemplateException>(() => template.Render([System, User], true, "<s>", "</s>"));

        Assert.Equal(ChatTemplateErrorKind.Raised, error.Kind);
        Assert.Equal("Conversation roles must alternate user/assistant/user/assistant/...", error.Detail);
        Assert.Equal(1, error.Line);
    }

    private const string Phi3Template =
        "{% for message in messages %}{% if message['role'] == 'system' %}{{'<|system|>\\n' + message['content'] + '<|end|>\\n'}}" +
        "{% elif message['role'] == 'user' %}{{'<|user|>\\n' + message['content'] + '<|end|>\\n'}}" +
        "{% elif message['role'] == 'assistant' %}{{'<|assistant|>\\n' + message['content'] + '<|end|>\\n'}}{% endif %}{% endfor %}" +
        "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% else %}{{ eos_token }}{% endif %}";

    [Fact]
    public void Phi3_GenerationPrompt()
    {
        var prompt = ChatTemplate.Parse(Phi3Template).Render([System, User], addGenerationPrompt: true, "<s>", "<|endoftext|>");

        Assert.Equal("<|system|>\nYou are a helpful assistant.<|end|>\n<|user|>\nWhat is 2+2?<|end|>\n<|assistant|>\n", prompt);
    }

    [Fact]
    public void Phi3_WithoutGenerationPromptEndsWithEos()
    {
        var prompt = ChatTemplate.Parse(Phi3Template).Render([User, Assistant], addGenerationPrompt: false, "<s>", "<|endoftext|>");

        Assert.Equal("<|user|>\nWhat is 2+2?<|end|>\n<|assistant|>\n2+2 is 4.<|end|>\n<|endoftext|>", prompt);
    }

    private const string GemmaTemplate =
        "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}" +
        "{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}" +
        "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}" +
        "{% if (message['role'] == 'assistant') %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}{% endif %}" +
        "{{ '<start_of_turn>' + role + '\\n' + message['content'] | trim + '<end_of_turn>\\n' }}{% endfor %}" +
        "{% if add_generation_prompt %}{{'<start_of_turn>model\\n'}}{% endif %}";

    [Fact]
    public void Gemma_AssistantBecomesModel_AndContentIsTrimmed()
    {
        var prompt = ChatTemplate.Parse(GemmaTemplate).Render(
            [User, new("assistant", "  2+2 is 4.\n"), new("user", "And 3+3?")], addGenerationPrompt: true, "<bos>", "<eos>");

        Assert.Equal(
            "<bos><start_of_turn>user\nWhat is 2+2?<end_of_turn>\n" +
            "<start_of_turn>model\n2+2 is 4.<end_of_turn>\n" +
            "<start_of_turn>user\nAnd 3+3?<end_of_turn>\n" +
            "<start_of_turn>model\n",
            prompt);
    }

    [Fact]
    public void Gemma_RejectsSystemRole()
    {
        var error = Assert.Throws<ChatTemplateException>(() => ChatTemplate.Parse(GemmaTemplate).Render([System, User], true, "<bos>", "<eos>"));

        Assert.Equal(ChatTemplateErrorKind.Raised, error.Kind);
        Assert.Equal("System role not supported", error.Detail);
    }

    [Fact]
    public void ChatMl_Fallback()
    {
        var prompt = ChatTemplate.ChatMl.Render([System, User, Assistant, new("user", "Thanks")], addGenerationPrompt: true, "", "");

        Assert.Equal(
            "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n" +
            "<|im_start|>user\nWhat is 2+2?<|im_end|>\n" +
            "<|im_start|>assistant\n2+2 is 4.<|im_end|>\n" +
            "<|im_start|>user\nThanks<|im_end|>\n" +
            "<|im_start|>assistant\n",
            prompt);
    }

    [Fact]
    public void ChatMl_WithoutGenerationPrompt()
    {
        var prompt = ChatTemplate.ChatMl.Render([User], addGenerationPrompt: false, "", "");

        Assert.Equal("<|im_start|>user\nWhat is 2+2?<|im_end|>\n", prompt);
    }
}
