using Velo.Sampling.Grammars;
using Velo.Tools;

namespace Velo.Generation;

/// <summary>A generation with tools: its options, and for a forced call the constraint decoding must meet.</summary>
/// <param name="Constraint">For <c>tool_choice: required</c> or a named function, what a valid output is; null otherwise.</param>
public sealed record ToolGeneration(GenerationOptions Options, ToolCallConstraint? Constraint);

/// <summary>The model did not call a tool although the request's <c>tool_choice</c> required one.</summary>
public sealed class ToolChoiceNotMetException(string message) : Exception(message);

/// <summary>
/// What the server and <see cref="VeloChatClient"/> share about tool calling: the generation options a request with
/// tools needs, the parser of its output, and the check that a forced choice was met.
/// </summary>
public static class ToolCalling
{
    /// <summary>The options for generating with <paramref name="tools"/> in <paramref name="format"/>; unchanged without active tools.</summary>
    public static ToolGeneration Prepare(GenerationOptions options, ToolRequest? tools, ToolCallFormat format)
    {
        if (tools is not { IsActive: true }) return new ToolGeneration(options, null);
        options = options with { ShownControlTokens = [.. options.ShownControlTokens, .. format.Markers] };
        if (!tools.Choice.ForcesCall) return new ToolGeneration(options, null);
        var constraint = format.ConstraintSchema(tools);
        if (options.Grammar != null)
            throw new ArgumentException("a forced tool choice constrains the output to the call: it cannot be combined with another grammar or JSON output");
        // Decoding is constrained to the call itself: the format's opening marker, JSON valid against the call schema
        // (the function's name and its parameters' schema), then the closing marker; CheckChoice stays as a safeguard.
        options = options with { Grammar = Grammar.FromJsonSchema(constraint.Schema, constraint.Prefix, constraint.Suffix) };
        return new ToolGeneration(options, constraint);
    }

    /// <summary>A parser of the output, or null when the request has no active tools (then the output is plain text).</summary>
    public static ToolCallParser? Parser(ToolRequest? tools, ToolCallFormat format) =>
        tools is { IsActive: true } ? new ToolCallParser(format, tools.ParallelCalls) : null;

    /// <summary>Refuses an output that does not meet a forced <c>tool_choice</c>: no call for <c>required</c>, or a
    /// call of another function than the named one.</summary>
    /// <exception cref="ToolChoiceNotMetException">The choice was not met.</exception>
    public static void CheckChoice(ToolRequest? tools, IReadOnlyList<ToolCall> calls)
    {
        if (tools is not { IsActive: true } || !tools.Choice.ForcesCall) return;
        const string why = " (the output did not finish the constrained call)";
        if (calls.Count == 0)
            throw new ToolChoiceNotMetException($"tool_choice requires a tool call, but the model answered without one{why}");
        if (tools.Choice.Mode == ToolChoiceMode.Function && calls.FirstOrDefault(call => call.Name != tools.Choice.FunctionName) is { } other)
            throw new ToolChoiceNotMetException($"tool_choice requires a call of '{tools.Choice.FunctionName}', but the model called '{other.Name}'{why}");
    }
}
