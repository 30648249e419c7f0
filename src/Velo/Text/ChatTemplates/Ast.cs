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

internal abstract record Expr(SourcePosition Position) : Node(Position);

internal sealed record LiteralExpr(object? Value, SourcePosition Position) : Expr(Position);

internal sealed record NameExpr(string Name, SourcePosition Position) : Expr(Position);

internal sealed record ListExpr(IReadOnlyList<Expr> Items, bool IsTuple, SourcePosition Position) : Expr(Position);

internal sealed record DictExpr(IReadOnlyList<(Expr Key, Expr Value)> Pairs, SourcePosition Position) : Expr(Position);

internal sealed record AttributeExpr(Expr Target, string Name, SourcePosition Position) : Expr(Position);

internal sealed record IndexExpr(Expr Target, Expr Index, SourcePosition Position) : Expr(Position);

internal sealed record SliceExpr(Expr Target, Expr? Start, Expr? Stop, Expr? Step, SourcePosition Position) : Expr(Position);

internal sealed record Arguments(IReadOnlyList<Expr> Positional, IReadOnlyList<(string Name, Expr Value)> Named)
{
    public static readonly Arguments None = new([], []);
}

internal sealed record CallExpr(Expr Callee, Arguments Args, SourcePosition Position) : Expr(Position);

internal sealed record FilterExpr(Expr Target, string Name, Arguments Args, SourcePosition Position) : Expr(Position);

internal sealed record TestExpr(Expr Target, string Name, Arguments Args, bool Negated, SourcePosition Position) : Expr(Position);

internal sealed record UnaryExpr(string Operator, Expr Operand, SourcePosition Position) : Expr(Position);

internal sealed record BinaryExpr(string Operator, Expr Left, Expr Right, SourcePosition Position) : Expr(Position);

/// <summary>Python-style chained comparison: <c>a &lt; b &lt;= c</c> means <c>a &lt; b and b &lt;= c</c>.</summary>
internal sealed record CompareExpr(Expr First, IReadOnlyList<(string Operator, Expr Operand)> Rest, SourcePosition Position) : Expr(Position);

internal sealed record ConditionalExpr(Expr Condition, Expr Then, Expr? Else, SourcePosition Position) : Expr(Position);
