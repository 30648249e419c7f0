using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Text;

namespace Velo.Text.ChatTemplates;

/// <summary>Safety caps for rendering a template that may come from an untrusted model file.</summary>
/// <param name="MaxNesting">
/// How deep statements and expressions may nest while rendering, macro bodies included: the renderer recurses once
/// per level. The parser keeps a template's own nesting within <see cref="Parser.MaxNesting"/>; this bounds what
/// macros calling macros add to it. A level takes up to about 1.3 KB of stack (measured before the JIT optimizes,
/// as on a server's first request), so the default needs about 520 KB: half of a 1 MB thread stack, a third of an
/// ASP.NET request thread's 1.5 MB.
/// </param>
internal sealed record RenderLimits(int MaxStringLength, long MaxLoopIterations, int MaxCallDepth, int MaxNesting, TimeSpan MaxDuration)
{
    public static readonly RenderLimits Default = new(16 << 20, 1_000_000, 64, 400, TimeSpan.FromSeconds(10));
}

internal sealed class TemplateRaisedException(string message) : TemplateRuntimeException(message);

internal sealed class TemplateLimitException(string message) : TemplateRuntimeException(message);

/// <summary>Variables visible at one level: the globals, the template's top level, a loop iteration or a macro call.</summary>
internal sealed class Scope(Scope? parent)
{
    private readonly Dictionary<string, object?> _variables = new(StringComparer.Ordinal);

    public bool TryGet(string name, out object? value)
    {
        for (var scope = this; scope != null; scope = scope.Parent)
            if (scope._variables.TryGetValue(name, out value))
                return true;
        value = null;
        return false;
    }

    public void Set(string name, object? value) => _variables[name] = value;

    public Scope? Parent { get; } = parent;
}

/// <summary>Walks the AST of one template for one set of variables, with Jinja's semantics.</summary>
internal sealed class Renderer(RenderLimits limits)
{
    private enum Flow { Normal, Break, Continue }

    private readonly long _deadline = Stopwatch.GetTimestamp() + (long)(limits.MaxDuration.TotalSeconds * Stopwatch.Frequency);
    private long _iterations;
    private int _callDepth;
    private int _nesting;

    public RenderLimits Limits => limits;

    public string Render(IReadOnlyList<Node> body, Scope scope)
    {
        var output = new StringBuilder();
        Execute(body, scope, output);
        return output.ToString();
    }

    /// <summary>Counts one unit of loop work against the iteration and time caps.</summary>
    public void Tick()
    {
        if (++_iterations > limits.MaxLoopIterations)
            throw new TemplateLimitException($"template ran more than {limits.MaxLoopIterations} loop iterations");
        if (Stopwatch.GetTimestamp() > _deadline)
            throw new TemplateLimitException($"template took longer than {limits.MaxDuration.TotalSeconds} s to render");
    }

    public string CheckLength(string text) =>
        text.Length > limits.MaxStringLength
            ? throw new TemplateLimitException($"template built a string longer than {limits.MaxStringLength} characters")
            : text;

    public List<object?> CheckLength(List<object?> list) =>
        list.Count > limits.MaxLoopIterations
            ? throw new TemplateLimitException($"template built a list longer than {limits.MaxLoopIterations} items")
            : list;

    private void Append(StringBuilder output, string text)
    {
        if (output.Length + (long)text.Length > limits.MaxStringLength)
            throw new TemplateLimitException($"template output exceeds {limits.MaxStringLength} characters");
        output.Append(text);
    }

    /// <summary>
    /// Counts one level of recursion against <see cref="RenderLimits.MaxNesting"/>. The stack probe is a second line
    /// of defence for a caller on a thread with an unusually small stack: a stack overflow cannot be caught.
    /// </summary>
    private void Descend()
    {
        if (++_nesting > limits.MaxNesting)
            throw new TemplateLimitException($"rendering nests deeper than {limits.MaxNesting} levels");
        if (!RuntimeHelpers.TryEnsureSufficientExecutionStack())
            throw new TemplateLimitException($"rendering nests too deep for this thread's stack ({_nesting} levels)");
    }

    private static ChatTemplateException Located(TemplateRuntimeException e, SourcePosition at) => new(
        e switch
        {
            TemplateRaisedException => ChatTemplateErrorKind.Raised,
            TemplateLimitException => ChatTemplateErrorKind.LimitExceeded,
            _ => ChatTemplateErrorKind.Runtime,
        },
        e.Message, at.Line, at.Column);

    // ---- statements ----

    private Flow Execute(IReadOnlyList<Node> nodes, Scope scope, StringBuilder output)
    {
        foreach (var node in nodes)
        {
            var flow = ExecuteOne(node, scope, output);
            if (flow != Flow.Normal)
                return flow;
        }
        return Flow.Normal;
    }

    private Flow ExecuteOne(Node node, Scope scope, StringBuilder output)
    {
        try
        {
            Descend();
            switch (node)
            {
                case TextNode text:
                    Append(output, text.Text);
                    return Flow.Normal;
                case OutputNode print:
                    Append(output, Py.ToStr(Evaluate(print.Value, scope)));
                    return Flow.Normal;
                case IfNode branch:
                    foreach (var (condition, body) in branch.Branches)
                        if (Py.IsTruthy(Evaluate(condition, scope)))
                            return Execute(body, scope, output);
                    return Execute(branch.ElseBody, scope, output);
                case ForNode loop:
                    ExecuteFor(loop, scope, output);
                    return Flow.Normal;
                case SetNode set:
                    ExecuteSet(set, scope);
                    return Flow.Normal;
                case SetBlockNode setBlock:
                    var captured = new StringBuilder();
                    Execute(setBlock.Body, scope, captured);
                    scope.Set(setBlock.Target, captured.ToString());
                    return Flow.Normal;
                case MacroNode macro:
                    scope.Set(macro.Name, new MacroValue(macro, scope));
                    return Flow.Normal;
                case LoopControlNode control:
                    return control.IsBreak ? Flow.Break : Flow.Continue;
                default:
                    throw new UnreachableException(node.GetType().Name);
            }
        }
        catch (TemplateRuntimeException e)
        {
            throw Located(e, node.Position);
        }
        finally
        {
            _nesting--;
        }
    }

    private void ExecuteFor(ForNode loop, Scope scope, StringBuilder output)
    {
        var items = Py.Iterate(Evaluate(loop.Iterable, scope));
        if (loop.Filter != null)
        {
            var kept = new List<object?>();
            foreach (var item in items)
            {
                Tick();
                var probe = new Scope(scope);
                Bind(loop.Targets, item, probe);
                if (Py.IsTruthy(Evaluate(loop.Filter, probe)))
                    kept.Add(item);
            }
            items = kept;
        }
        if (items.Count == 0)
        {
            Execute(loop.ElseBody, scope, output);
            return;
        }
        var context = new LoopContext(items);
        for (var i = 0; i < items.Count; i++)
        {
            Tick();
            // Each iteration gets fresh variables: a set inside the body does not outlive it, as in Jinja.
            var iteration = new Scope(scope);
            Bind(loop.Targets, items[i], iteration);
            context.Index0 = i;
            iteration.Set("loop", context);
            if (Execute(loop.Body, iteration, output) == Flow.Break)
                break;
        }
    }

    private static void Bind(IReadOnlyList<string> targets, object? value, Scope scope)
    {
        if (targets.Count == 1)
        {
            scope.Set(targets[0], value);
            return;
        }
        var parts = value is List<object?> or string ? Py.Iterate(value) : throw new TemplateRuntimeException($"cannot unpack {Py.TypeName(value)} into {targets.Count} names");
        if (parts.Count != targets.Count)
            throw new TemplateRuntimeException($"cannot unpack {parts.Count} values into {targets.Count} names");
        for (var i = 0; i < targets.Count; i++)
            scope.Set(targets[i], parts[i]);
    }

    private void ExecuteSet(SetNode set, Scope scope)
    {
        var value = Evaluate(set.Value, scope);
        if (set.Attribute == null)
        {
            Bind(set.Targets, value, scope);
            return;
        }
        if (!scope.TryGet(set.Targets[0], out var target) || target is not Namespace ns)
            throw new TemplateRuntimeException($"cannot assign attribute '{set.Attribute}' on '{set.Targets[0]}': only a namespace() takes attribute assignments");
        ns.Attributes[set.Attribute] = value;
    }

    // ---- expressions ----

    public object? Evaluate(Expr expr, Scope scope)
    {
        try
        {
            Descend();
            return EvaluateCore(expr, scope);
        }
        catch (TemplateRuntimeException e)
        {
            throw Located(e, expr.Position);
        }
        catch (OverflowException)
        {
            // Python's integers are unbounded; ours are 64-bit, so a result beyond that is an error, not a wrap.
            throw Located(new TemplateRuntimeException("integer overflow"), expr.Position);
        }
        finally
        {
            _nesting--;
        }
    }

    private object? EvaluateCore(Expr expr, Scope scope)
    {
        switch (expr)
        {
            case LiteralExpr literal:
                return literal.Value;
            case NameExpr name:
                return scope.TryGet(name.Name, out var value) ? value : new Undefined($"'{name.Name}' is undefined");
            case ListExpr list:
                var items = list.Items.Select(item => Evaluate(item, scope));
                return list.IsTuple ? new PyTuple(items) : items.ToList();
            case DictExpr dict:
                var result = Py.NewDict();
                foreach (var (key, item) in dict.Pairs)
                    result[RequireKey(Evaluate(key, scope))] = Evaluate(item, scope);
                return result;
            case AttributeExpr attribute:
                return Members.GetAttribute(Evaluate(attribute.Target, scope), attribute.Name);
            case IndexExpr index:
                return Members.GetItem(Evaluate(index.Target, scope), Evaluate(index.Index, scope));
            case SliceExpr slice:
                return Members.Slice(Evaluate(slice.Target, scope), EvaluateOptional(slice.Start, scope), EvaluateOptional(slice.Stop, scope), EvaluateOptional(slice.Step, scope));
            case CallExpr call:
                return Call(Evaluate(call.Callee, scope), EvaluateArguments(call.Args, scope));
            case FilterExpr filter:
                return Filters.Apply(filter.Name, Evaluate(filter.Target, scope), EvaluateArguments(filter.Args, scope), this);
            case TestExpr test:
                return Tests.Apply(test.Name, Evaluate(test.Target, scope), EvaluateArguments(test.Args, scope)) != test.Negated;
            case UnaryExpr unary:
                var operand = Evaluate(unary.Operand, scope);
                return unary.Operator switch
                {
                    "not" => !Py.IsTruthy(operand),
                    "-" => Operators.Negate(operand),
                    _ => Operators.Plus(operand),
                };
            case BinaryExpr { Operator: "and" } and:
                var left = Evaluate(and.Left, scope);
                return Py.IsTruthy(left) ? Evaluate(and.Right, scope) : left;
            case BinaryExpr { Operator: "or" } or:
                var first = Evaluate(or.Left, scope);
                return Py.IsTruthy(first) ? first : Evaluate(or.Right, scope);
            case BinaryExpr binary:
                return Operators.Binary(binary.Operator, Evaluate(binary.Left, scope), Evaluate(binary.Right, scope), this);
            case CompareExpr compare:
                var current = Evaluate(compare.First, scope);
                foreach (var (op, operandExpr) in compare.Rest)
                {
                    var next = Evaluate(operandExpr, scope);
                    if (!Operators.Compare(op, current, next))
                        return false;
                    current = next;
                }
                return true;
            case ConditionalExpr conditional:
                if (Py.IsTruthy(Evaluate(conditional.Condition, scope)))
                    return Evaluate(conditional.Then, scope);
                return conditional.Else != null
                    ? Evaluate(conditional.Else, scope)
                    : new Undefined("the inline if-expression evaluated to false and has no else");
            default:
                throw new UnreachableException(expr.GetType().Name);
        }
    }

    private object? EvaluateOptional(Expr? expr, Scope scope) => expr == null ? null : Evaluate(expr, scope);

    private static object RequireKey(object? key) => key switch
    {
        string or long or double or bool => key,
        _ => throw new TemplateRuntimeException($"a dict key cannot be {Py.TypeName(key)}"),
    };

    private CallArguments EvaluateArguments(Arguments args, Scope scope)
    {
        if (args.Positional.Count == 0 && args.Named.Count == 0)
            return CallArguments.Empty;
        var named = new Dictionary<string, object?>(StringComparer.Ordinal);
        foreach (var (name, value) in args.Named)
            named[name] = Evaluate(value, scope);
        return new CallArguments(args.Positional.Select(a => Evaluate(a, scope)).ToList(), named);
    }

    public object? Call(object? callee, CallArguments args) => callee switch
    {
        BuiltinFunction function => function.Invoke(args, this),
        BoundMethod method => Members.CallMethod(method, args, this),
        MacroValue macro => CallMacro(macro, args),
        Undefined undefined => throw new TemplateRuntimeException(undefined.Description),
        _ => throw new TemplateRuntimeException($"'{Py.TypeName(callee)}' object is not callable"),
    };

    private string CallMacro(MacroValue macro, CallArguments args)
    {
        var definition = macro.Definition;
        if (_callDepth >= limits.MaxCallDepth)
            throw new TemplateLimitException($"macro calls nest deeper than {limits.MaxCallDepth}");
        if (args.Positional.Count > definition.Parameters.Count)
            throw new TemplateRuntimeException($"macro '{definition.Name}' takes {definition.Parameters.Count} arguments, got {args.Positional.Count}");
        foreach (var name in args.Named.Keys)
            if (!definition.Parameters.Contains(name))
                throw new TemplateRuntimeException($"macro '{definition.Name}' has no parameter '{name}'");
        var scope = new Scope(macro.Closure);
        for (var i = 0; i < definition.Parameters.Count; i++)
        {
            var name = definition.Parameters[i];
            if (args.Has(i, name))
                scope.Set(name, args.Get(i, name));
            else if (definition.Defaults[i] is { } fallback)
                scope.Set(name, Evaluate(fallback, scope));
            else
                scope.Set(name, new Undefined($"missing argument '{name}' to macro '{definition.Name}'"));
        }
        _callDepth++;
        try
        {
            var output = new StringBuilder();
            Execute(definition.Body, scope, output);
            return output.ToString();
        }
        finally
        {
            _callDepth--;
        }
    }
}
