using System.Text.Json.Nodes;

namespace Velo.Tools;

/// <summary>
/// Qwen 2.5/3, Hermes 2 Pro/3 and Velo's fallback prompt: each call is
/// <c>&lt;tool_call&gt;{"name": ..., "arguments": {...}}&lt;/tool_call&gt;</c>; several may follow one another.
/// </summary>
internal sealed class HermesToolCallFormat(bool bareJson) : ToolCallFormat
{
    public const string Open = "<tool_call>";
    public const string Close = "</tool_call>";

    public override string Name => bareJson ? "fallback" : "hermes";
    public override IReadOnlyList<string> Markers { get; } = [Open, Close];
    public override IReadOnlyList<string> StartMarkers { get; } = [Open];
    public override bool BareJsonAtStart => bareJson;

    public override CallRead TryReadCall(string text, bool final)
    {
        if (!text.StartsWith(Open, StringComparison.Ordinal))
        {
            // A bare call object at the start of the output.
            if (!TryReadJson(text, 0, final, out int end, out var value, out bool incomplete))
                return incomplete ? CallRead.NeedMore : CallRead.Plain(text.Length);
            return TryReadCallObject(value, out var call) ? CallRead.Read(end, [call]) : CallRead.Plain(end);
        }
        int close = text.IndexOf(Close, Open.Length, StringComparison.Ordinal);
        if (close < 0)
        {
            if (!final) return CallRead.NeedMore;
            // The output ended inside the tag: a complete call object there still counts (models often stop at the
            // end-of-turn token instead of closing the tag).
            if (TryReadJson(text, Open.Length, true, out int end, out var value, out _) && text.AsSpan(end).IsWhiteSpace()
                && TryReadCallObject(value, out var call))
                return CallRead.Read(text.Length, [call]);
            return CallRead.Plain(text.Length);
        }
        int after = close + Close.Length;
        if (TryReadJson(text[..close], Open.Length, true, out int bodyEnd, out var body, out _) && text.AsSpan(bodyEnd, close - bodyEnd).IsWhiteSpace()
            && TryReadCallObject(body, out var tagged))
            return CallRead.Read(after, [tagged]);
        return CallRead.Plain(after);
    }

    public override ToolCallConstraint ConstraintSchema(ToolRequest request) =>
        new(Open + "\n", ToElement(AnyCallSchema(request, "arguments")), "\n" + Close);
}

/// <summary>
/// Llama 3.1, 3.2 and 3.3 with their own templates: the whole answer is a call object
/// <c>{"name": ..., "parameters": {...}}</c>, optionally after <c>&lt;|python_tag|&gt;</c>; several calls are
/// separated by <c>;</c>. Built-in tools' Python calls (<c>brave_search.call(...)</c>) are not read as calls.
/// </summary>
internal sealed class Llama3ToolCallFormat : ToolCallFormat
{
    public const string PythonTag = "<|python_tag|>";

    public override string Name => "llama3";
    public override bool CallEndsWithOutput => true;
    public override IReadOnlyList<string> Markers { get; } = [PythonTag];
    public override IReadOnlyList<string> StartMarkers { get; } = [PythonTag];
    public override bool BareJsonAtStart => true;

    public override CallRead TryReadCall(string text, bool final)
    {
        if (!final) return CallRead.NeedMore;
        int at = text.StartsWith(PythonTag, StringComparison.Ordinal) ? PythonTag.Length : 0;
        var calls = new List<(string, string)>();
        while (true)
        {
            if (!TryReadJson(text, at, true, out int end, out var value, out _) || !TryReadCallObject(value, out var call))
                return CallRead.Plain(text.Length);
            calls.Add(call);
            at = end;
            while (at < text.Length && char.IsWhiteSpace(text[at])) at++;
            if (at == text.Length) return CallRead.Read(text.Length, calls);
            if (text[at] != ';') return CallRead.Plain(text.Length);
            at++;
            while (at < text.Length && char.IsWhiteSpace(text[at])) at++;
            if (at == text.Length) return CallRead.Read(text.Length, calls);
        }
    }

    public override ToolCallConstraint ConstraintSchema(ToolRequest request) =>
        new("", ToElement(AnyCallSchema(request, "parameters")), "");
}

/// <summary>
/// Mistral: <c>[TOOL_CALLS]</c> then a JSON list of call objects (v3 tokenizers, Mistral 7B v0.3, Nemo), or
/// <c>[TOOL_CALLS]name[ARGS]{...}</c> per call (v11+, Mistral Small 3.2 and later). Its templates accept back only
/// call ids of nine letters and digits, so calls get such ids.
/// </summary>
internal sealed class MistralToolCallFormat : ToolCallFormat
{
    public const string ToolCalls = "[TOOL_CALLS]";
    public const string Args = "[ARGS]";

    public override string Name => "mistral";
    public override bool CallEndsWithOutput => true;
    public override IReadOnlyList<string> Markers { get; } = [ToolCalls, Args];
    public override IReadOnlyList<string> StartMarkers { get; } = [ToolCalls];
    public override string NewCallId() => ToolCall.NewMistralId();

    public override CallRead TryReadCall(string text, bool final)
    {
        if (!final) return CallRead.NeedMore;
        int at = ToolCalls.Length;
        while (at < text.Length && char.IsWhiteSpace(text[at])) at++;
        if (at < text.Length && text[at] == '[')
        {
            if (!TryReadJson(text, at, true, out int end, out var list, out _) || list.ValueKind != System.Text.Json.JsonValueKind.Array
                || !text.AsSpan(end).IsWhiteSpace())
                return CallRead.Plain(text.Length);
            var calls = new List<(string, string)>();
            foreach (var item in list.EnumerateArray())
            {
                if (!TryReadCallObject(item, out var call)) return CallRead.Plain(text.Length);
                calls.Add(call);
            }
            return calls.Count > 0 ? CallRead.Read(text.Length, calls) : CallRead.Plain(text.Length);
        }
        // name[ARGS]{...}, repeated after further [TOOL_CALLS] markers.
        var named = new List<(string, string)>();
        at = 0;
        while (at < text.Length)
        {
            if (!text.AsSpan(at).StartsWith(ToolCalls, StringComparison.Ordinal)) return CallRead.Plain(text.Length);
            int args = text.IndexOf(Args, at, StringComparison.Ordinal);
            if (args < 0) return CallRead.Plain(text.Length);
            string name = text[(at + ToolCalls.Length)..args].Trim();
            if (name.Length == 0 || !TryReadJson(text, args + Args.Length, true, out int end, out var arguments, out _)
                || arguments.ValueKind != System.Text.Json.JsonValueKind.Object)
                return CallRead.Plain(text.Length);
            named.Add((name, arguments.GetRawText()));
            at = end;
            while (at < text.Length && char.IsWhiteSpace(text[at])) at++;
        }
        return CallRead.Read(text.Length, named);
    }

    public override ToolCallConstraint ConstraintSchema(ToolRequest request)
    {
        var list = new JsonObject
        {
            ["type"] = "array",
            ["items"] = AnyCallSchema(request, "arguments"),
            ["minItems"] = 1,
        };
        if (!request.ParallelCalls) list["maxItems"] = 1;
        return new ToolCallConstraint(ToolCalls, ToElement(list), "");
    }
}
