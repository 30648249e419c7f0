namespace Velo.Text.ChatTemplates;

internal abstract record Node(SourcePosition Position);

// ---- statements ----

internal sealed record TextNode(string Text, SourcePosition Position) : Node(Position);

internal sealed record OutputNode(Expr Value, SourcePosition Position) : Node(Position);

internal sealed record IfNode(IReadOnlyList<(Expr Condition, IReadOnlyList<Node> Body)> Branches, IReadOnlyList<Node> ElseBody, SourcePosition Position) : Node(Position);

internal sealed record ForNode(IReadOnlyList<string> Targets, Expr Iterable, Expr? Filter, IReadOnlyList<Node> Body, IReadOnlyList<Node> ElseBody, SourcePosition Position) : Node(Position);

/// <summary><c>{% set a = x %}</c>, <c>{% set a, b = x %}</c> or, with <see cref="Attribute"/>, <c>{% set ns.attr = x %}</c>.</summary>
internal sealed record SetNode(IReadOnlyList<string> Targets, string? Attribute, Expr Value, SourcePosition Position) : Node(Position);

internal sealed record SetBlockNode(string Target, IReadOnlyList<Node> Body, SourcePosition Position) : Node(Position);

internal sealed record MacroNode(string Name, IReadOnlyList<string> Parameters, IReadOnlyList<Expr?> Defaults, IReadOnlyList<Node> Body, SourcePosition Position) : Node(Position);

internal sealed record LoopControlNode(bool IsBreak, SourcePosition Position) : Node(Position);

// ---- expressions ----

/// <remarks>
/// <see cref="Depth"/> is the height of the expression's tree, computed as each node is built: the renderer recurses
/// once per level, so the parser rejects a tree too deep for the stack (a long chain like <c>1 + 1 + ...</c> is built
/// by a loop, not by recursion, so the parser's own call depth does not bound it).
/// </remarks>
internal abstract record Expr(SourcePosition Position) : Node(Position)
{
    public abstract int Depth { get; }

    protected static int DepthOf(IEnumerable<Expr?> children) => 1 + children.Select(child => child?.Depth ?? 0).DefaultIfEmpty(0).Max();
}

internal sealed record LiteralExpr(object? Value, SourcePosition Position) : Expr(Position)
{
    public override int Depth => 1;
}

internal sealed record NameExpr(string Name, SourcePosition Position) : Expr(Position)
{
    public override int Depth => 1;
}

internal sealed record ListExpr(IReadOnlyList<Expr> Items, bool IsTuple, SourcePosition Position) : Expr(Position)
{
    public override int Depth { get; } = DepthOf(Items);
}

internal sealed record DictExpr(IReadOnlyList<(Expr Key, Expr Value)> Pairs, SourcePosition Position) : Expr(Position)
{
    public override int Depth { get; } = DepthOf(Pairs.SelectMany(pair => new[] { pair.Key, pair.Value }));
}

internal sealed record AttributeExpr(Expr Target, string Name, SourcePosition Position) : Expr(Position)
{
    public override int Depth { get; } = 1 + Target.Depth;
}

internal sealed record IndexExpr(Expr Target, Expr Index, SourcePosition Position) : Expr(Position)
{
    public override int Depth { get; } = DepthOf([Target, Index]);
}

internal sealed record SliceExpr(Expr Target, Expr? Start, Expr? Stop, Expr? Step, SourcePosition Position) : Expr(Position)
{
    public override int Depth { get; } = DepthOf([Target, Start, Stop, Step]);
}

internal sealed record Arguments(IReadOnlyList<Expr> Positional, IReadOnlyList<(string Name, Expr Value)> Named)
{
    public static readonly Arguments None = new([], []);

    /// <summary>The deepest argument's <see cref="Expr.Depth"/>; 0 when there are none.</summary>
    public int Depth { get; } = Positional.Concat(Named.Select(pair => pair.Value)).Select(arg => arg.Depth).DefaultIfEmpty(0).Max();
}

internal sealed record CallExpr(Expr Callee, Arguments Args, SourcePosition Position) : Expr(Position)
{
    public override int Depth { get; } = 1 + Math.Max(Callee.Depth, Args.Depth);
}

internal sealed record FilterExpr(Expr Target, string Name, Arguments Args, SourcePosition Position) : Expr(Position)
{
    public override int Depth { get; } = 1 + Math.Max(Target.Depth, Args.Depth);
}

internal sealed record TestExpr(Expr Target, string Name, Arguments Args, bool Negated, SourcePosition Position) : Expr(Position)
{
    public override int Depth { get; } = 1 + Math.Max(Target.Depth, Args.Depth);
}

internal sealed record UnaryExpr(string Operator, Expr Operand, SourcePosition Position) : Expr(Position)
{
    public override int Depth { get; } = 1 + Operand.Depth;
}

internal sealed record BinaryExpr(string Operator, Expr Left, Expr Right, SourcePosition Position) : Expr(Position)
{
    public override int Depth { get; } = DepthOf([Left, Right]);
}

/// <summary>Python-style chained comparison: <c>a &lt; b &lt;= c</c> means <c>a &lt; b and b &lt;= c</c>.</summary>
internal sealed record CompareExpr(Expr First, IReadOnlyList<(string Operator, Expr Operand)> Rest, SourcePosition Position) : Expr(Position)
{
    public override int Depth { get; } = DepthOf([First, .. Rest.Select(link => link.Operand)]);
}

internal sealed record ConditionalExpr(Expr Condition, Expr Then, Expr? Else, SourcePosition Position) : Expr(Position)
{
    public override int Depth { get; } = DepthOf([Condition, Then, Else]);
}
