namespace Velo.Text.ChatTemplates;

/// <summary>Recursive-descent parser from tokens to an AST, following Jinja's grammar and operator precedence.</summary>
internal sealed class Parser
{
    /// <summary>
    /// How deep blocks plus the expressions inside them may nest, and how deep the parser itself may recurse. Real
    /// templates nest a few dozen levels at most; the renderer takes up to about 1.3 KB of stack per level, so a
    /// template at this limit renders in about 260 KB (the tests run it on a 512 KB thread), well below the 1.5 MB
    /// of an ASP.NET request thread.
    /// </summary>
    internal const int MaxNesting = 200;

    private static readonly HashSet<string> CompareOperators = ["==", "!=", "<", ">", "<=", ">="];

    private readonly List<Token> _tokens;
    private int _index;
    private int _depth;
    private int _blockDepth;
    private int _loopDepth;

    private Parser(List<Token> tokens) => _tokens = tokens;

    public static IReadOnlyList<Node> Parse(string source)
    {
        var parser = new Parser(Lexer.Tokenize(source));
        var (body, _) = parser.ParseBody([], null);
        return body;
    }

    private Token Current => _tokens[_index];

    private Token Next() => _tokens[_index++];

    private Token Peek() => _tokens[Math.Min(_index + 1, _tokens.Count - 1)];

    private static ChatTemplateException Error(string message, SourcePosition at) =>
        new(ChatTemplateErrorKind.Syntax, message, at.Line, at.Column);

    private void Expect(TokenKind kind, string what)
    {
        if (Current.Kind != kind)
            throw Error($"expected {what}, found {Current}", Current.Position);
        _index++;
    }

    private void ExpectOperator(string op)
    {
        if (!Current.IsOperator(op))
            throw Error($"expected '{op}', found {Current}", Current.Position);
        _index++;
    }

    private string ExpectName()
    {
        if (Current.Kind != TokenKind.Name)
            throw Error($"expected a name, found {Current}", Current.Position);
        return Next().Text;
    }

    private void Enter(SourcePosition at)
    {
        if (++_depth > MaxNesting)
            throw Error($"template nests deeper than {MaxNesting} levels", at);
    }

    /// <summary>
    /// Rejects an expression whose tree, with the blocks around it, is deeper than <see cref="MaxNesting"/>: the renderer
    /// recurses once per level of both.
    /// </summary>
    private Expr Bounded(Expr expr, SourcePosition start)
    {
        if (_blockDepth + expr.Depth > MaxNesting)
            throw Error($"template nests deeper than {MaxNesting} levels: an expression {expr.Depth} levels deep inside {_blockDepth} blocks", start);
        return expr;
    }

    // ---- statements ----

    /// <summary>
    /// Parses nodes until a block tag named in <paramref name="endTags"/>; returns with the tag's name consumed and the
    /// rest of that tag (e.g. an elif condition) unread.
    /// </summary>
    private (List<Node> Body, string? EndTag) ParseBody(string[] endTags, Token? opener)
    {
        var body = new List<Node>();
        while (true)
        {
            var token = Current;
            switch (token.Kind)
            {
                case TokenKind.Text:
                    body.Add(new TextNode(token.Text, token.Position));
                    _index++;
                    break;
                case TokenKind.VariableBegin:
                    _index++;
                    body.Add(new OutputNode(ParseTuple(), token.Position));
                    Expect(TokenKind.VariableEnd, "'}}'");
                    break;
                case TokenKind.BlockBegin:
                    var keyword = Peek();
                    if (keyword.Kind == TokenKind.Name && endTags.Contains(keyword.Text))
                    {
                        _index += 2;
                        return (body, keyword.Text);
                    }
                    _index++;
                    body.Add(ParseStatement());
                    break;
                case TokenKind.End:
                    if (opener is { } open)
                        throw Error($"'{{% {open.Text} %}}' is never closed: expected '{{% {endTags[^1]} %}}' before the end of the template", open.Position);
                    return (body, null);
                default:
                    throw Error($"unexpected {token}", token.Position);
            }
        }
    }

    private Node ParseStatement()
    {
        var keyword = Current;
        if (keyword.Kind != TokenKind.Name)
            throw Error($"expected a tag name, found {keyword}", keyword.Position);
        Enter(keyword.Position);
        _blockDepth++;
        _index++;
        Node node = keyword.Text switch
        {
            "if" => ParseIf(keyword),
            "for" => ParseFor(keyword),
            "set" => ParseSet(keyword),
            "macro" => ParseMacro(keyword),
            "break" or "continue" => ParseLoopControl(keyword),
            "generation" => ParseGeneration(keyword),
            _ => throw Error($"unknown tag '{keyword.Text}'", keyword.Position),
        };
        _blockDepth--;
        _depth--;
        return node;
    }

    private IfNode ParseIf(Token keyword)
    {
        var branches = new List<(Expr, IReadOnlyList<Node>)>();
        var condition = ParseTuple();
        while (true)
        {
            Expect(TokenKind.BlockEnd, "'%}'");
            var (body, end) = ParseBody(["elif", "else", "endif"], keyword);
            branches.Add((condition, body));
            if (end == "elif")
            {
                condition = ParseTuple();
                continue;
            }
            IReadOnlyList<Node> elseBody = [];
            if (end == "else")
            {
                Expect(TokenKind.BlockEnd, "'%}'");
                (elseBody, _) = ParseBody(["endif"], keyword);
            }
            Expect(TokenKind.BlockEnd, "'%}'");
            return new IfNode(branches, elseBody, keyword.Position);
        }
    }

    private ForNode ParseFor(Token keyword)
    {
        var targets = ParseAssignTargets();
        if (!Current.IsName("in"))
            throw Error($"expected 'in', found {Current}", Current.Position);
        _index++;
        var iterable = ParseTuple(withConditional: false);
        Expr? filter = null;
        if (Current.IsName("if"))
        {
            _index++;
            filter = ParseExpression();
        }
        if (Current.IsName("recursive"))
            throw Error("recursive loops are not supported", Current.Position);
        Expect(TokenKind.BlockEnd, "'%}'");
        _loopDepth++;
        var (body, end) = ParseBody(["else", "endfor"], keyword);
        _loopDepth--;
        IReadOnlyList<Node> elseBody = [];
        if (end == "else")
        {
            Expect(TokenKind.BlockEnd, "'%}'");
            (elseBody, _) = ParseBody(["endfor"], keyword);
        }
        Expect(TokenKind.BlockEnd, "'%}'");
        return new ForNode(targets, iterable, filter, body, elseBody, keyword.Position);
    }

    private List<string> ParseAssignTargets()
    {
        var parenthesized = Current.IsOperator("(");
        if (parenthesized)
            _index++;
        var names = new List<string> { ExpectName() };
        while (Current.IsOperator(","))
        {
            _index++;
            if (Current.Kind != TokenKind.Name)
                break;
            names.Add(ExpectName());
        }
        if (parenthesized)
            ExpectOperator(")");
        return names;
    }

    private Node ParseSet(Token keyword)
    {
        var firstName = Current;
        var targets = ParseAssignTargets();
        string? attribute = null;
        if (targets.Count == 1 && Current.IsOperator("."))
        {
            _index++;
            attribute = ExpectName();
        }
        if (Current.Kind == TokenKind.BlockEnd && targets.Count == 1 && attribute == null)
        {
            _index++;
            var (body, _) = ParseBody(["endset"], keyword);
            Expect(TokenKind.BlockEnd, "'%}'");
            return new SetBlockNode(targets[0], body, keyword.Position);
        }
        if (!Current.IsOperator("="))
            throw Error($"expected '=' after the name in set, found {Current}", Current.Position);
        _index++;
        var value = ParseTuple();
        Expect(TokenKind.BlockEnd, "'%}'");
        return new SetNode(targets, attribute, value, firstName.Position);
    }

    private MacroNode ParseMacro(Token keyword)
    {
        var name = ExpectName();
        ExpectOperator("(");
        var parameters = new List<string>();
        var defaults = new List<Expr?>();
        while (!Current.IsOperator(")"))
        {
            if (parameters.Count > 0)
                ExpectOperator(",");
            if (Current.IsOperator(")"))
                break;
            parameters.Add(ExpectName());
            if (Current.IsOperator("="))
            {
                _index++;
                defaults.Add(ParseExpression());
            }
            else
            {
                if (defaults.Count > 0 && defaults[^1] != null)
                    throw Error("a macro parameter without a default cannot follow one with a default", Current.Position);
                defaults.Add(null);
            }
        }
        _index++;
        Expect(TokenKind.BlockEnd, "'%}'");
        var savedLoopDepth = _loopDepth;
        _loopDepth = 0;
        var (body, _) = ParseBody(["endmacro"], keyword);
        _loopDepth = savedLoopDepth;
        if (Current.Kind == TokenKind.Name)
            _index++;
        Expect(TokenKind.BlockEnd, "'%}'");
        return new MacroNode(name, parameters, defaults, body, keyword.Position);
    }

    private LoopControlNode ParseLoopControl(Token keyword)
    {
        if (_loopDepth == 0)
            throw Error($"'{keyword.Text}' outside a for loop", keyword.Position);
        Expect(TokenKind.BlockEnd, "'%}'");
        return new LoopControlNode(keyword.Text == "break", keyword.Position);
    }

    /// <summary>transformers' <c>{% generation %}</c> marks assistant text for training masks; rendering just emits its body.</summary>
    private IfNode ParseGeneration(Token keyword)
    {
        Expect(TokenKind.BlockEnd, "'%}'");
        var (body, _) = ParseBody(["endgeneration"], keyword);
        Expect(TokenKind.BlockEnd, "'%}'");
        return new IfNode([(new LiteralExpr(true, keyword.Position), body)], [], keyword.Position);
    }

    // ---- expressions, loosest binding first ----

    /// <summary>An expression, or a comma-separated tuple of them as Jinja allows in <c>{{ }}</c>, <c>set</c> and <c>for</c>.</summary>
    private Expr ParseTuple(bool withConditional = true)
    {
        var start = Current.Position;
        var first = withConditional ? ParseExpression() : Bounded(ParseOr(), start);
        if (!Current.IsOperator(","))
            return first;
        var items = new List<Expr> { first };
        while (Current.IsOperator(","))
        {
            _index++;
            if (Current.Kind is TokenKind.BlockEnd or TokenKind.VariableEnd || Current.IsName("if"))
                break;
            items.Add(withConditional ? ParseExpression() : ParseOr());
        }
        return Bounded(new ListExpr(items, IsTuple: true, start), start);
    }

    private Expr ParseExpression()
    {
        var start = Current.Position;
        Enter(start);
        var expr = ParseOr();
        while (Current.IsName("if"))
        {
            var at = Next().Position;
            var condition = ParseOr();
            Expr? otherwise = null;
            if (Current.IsName("else"))
            {
                _index++;
                otherwise = ParseExpression();
            }
            expr = new ConditionalExpr(condition, expr, otherwise, at);
        }
        _depth--;
        return Bounded(expr, start);
    }

    private Expr ParseOr()
    {
        var left = ParseAnd();
        while (Current.IsName("or"))
        {
            var at = Next().Position;
            left = new BinaryExpr("or", left, ParseAnd(), at);
        }
        return left;
    }

    private Expr ParseAnd()
    {
        var left = ParseNot();
        while (Current.IsName("and"))
        {
            var at = Next().Position;
            left = new BinaryExpr("and", left, ParseNot(), at);
        }
        return left;
    }

    private Expr ParseNot()
    {
        if (!Current.IsName("not"))
            return ParseCompare();
        var at = Next().Position;
        Enter(at);
        var operand = ParseNot();
        _depth--;
        return new UnaryExpr("not", operand, at);
    }

    private Expr ParseCompare()
    {
        var first = ParseAdditive();
        var rest = new List<(string, Expr)>();
        while (true)
        {
            if (Current.Kind == TokenKind.Operator && CompareOperators.Contains(Current.Text))
                rest.Add((Next().Text, ParseAdditive()));
            else if (Current.IsName("in"))
            {
                _index++;
                rest.Add(("in", ParseAdditive()));
            }
            else if (Current.IsName("not") && Peek().IsName("in"))
            {
                _index += 2;
                rest.Add(("not in", ParseAdditive()));
            }
            else
                break;
        }
        return rest.Count == 0 ? first : new CompareExpr(first, rest, first.Position);
    }

    private Expr ParseAdditive()
    {
        var left = ParseConcat();
        while (Current.IsOperator("+") || Current.IsOperator("-"))
        {
            var op = Next();
            left = new BinaryExpr(op.Text, left, ParseConcat(), op.Position);
        }
        return left;
    }

    private Expr ParseConcat()
    {
        var left = ParseMultiplicative();
        while (Current.IsOperator("~"))
        {
            var op = Next();
            left = new BinaryExpr("~", left, ParseMultiplicative(), op.Position);
        }
        return left;
    }

    private Expr ParseMultiplicative()
    {
        var left = ParsePower();
        while (Current.Kind == TokenKind.Operator && Current.Text is "*" or "/" or "//" or "%")
        {
            var op = Next();
            left = new BinaryExpr(op.Text, left, ParsePower(), op.Position);
        }
        return left;
    }

    private Expr ParsePower()
    {
        var left = ParseUnary(withFilters: true);
        while (Current.IsOperator("**"))
        {
            var op = Next();
            left = new BinaryExpr("**", left, ParseUnary(withFilters: true), op.Position);
        }
        return left;
    }

    private Expr ParseUnary(bool withFilters)
    {
        Enter(Current.Position);
        Expr node;
        if (Current.IsOperator("-") || Current.IsOperator("+"))
        {
            var op = Next();
            node = new UnaryExpr(op.Text, ParseUnary(withFilters: false), op.Position);
        }
        else
        {
            node = ParsePrimary();
        }
        node = ParsePostfix(node);
        if (withFilters)
            node = ParseFiltersAndTests(node);
        _depth--;
        return node;
    }

    private Expr ParsePrimary()
    {
        var token = Next();
        switch (token.Kind)
        {
            case TokenKind.Name:
                return token.Text switch
                {
                    "true" or "True" => new LiteralExpr(true, token.Position),
                    "false" or "False" => new LiteralExpr(false, token.Position),
                    "none" or "None" => new LiteralExpr(null, token.Position),
                    _ => new NameExpr(token.Text, token.Position),
                };
            case TokenKind.String:
                // Adjacent string literals concatenate, as in Python.
                var text = token.Text;
                while (Current.Kind == TokenKind.String)
                    text += Next().Text;
                return new LiteralExpr(text, token.Position);
            case TokenKind.Integer:
            case TokenKind.Float:
                return new LiteralExpr(token.Value, token.Position);
            case TokenKind.Operator when token.Text == "(":
                if (Current.IsOperator(")"))
                {
                    _index++;
                    return new ListExpr([], IsTuple: true, token.Position);
                }
                var inner = ParseTuple();
                ExpectOperator(")");
                return inner;
            case TokenKind.Operator when token.Text == "[":
                var items = new List<Expr>();
                while (!Current.IsOperator("]"))
                {
                    if (items.Count > 0)
                        ExpectOperator(",");
                    if (Current.IsOperator("]"))
                        break;
                    items.Add(ParseExpression());
                }
                _index++;
                return new ListExpr(items, IsTuple: false, token.Position);
            case TokenKind.Operator when token.Text == "{":
                var pairs = new List<(Expr, Expr)>();
                while (!Current.IsOperator("}"))
                {
                    if (pairs.Count > 0)
                        ExpectOperator(",");
                    if (Current.IsOperator("}"))
                        break;
                    var key = ParseExpression();
                    ExpectOperator(":");
                    pairs.Add((key, ParseExpression()));
                }
                _index++;
                return new DictExpr(pairs, token.Position);
            default:
                throw Error($"unexpected {token}", token.Position);
        }
    }

    private Expr ParsePostfix(Expr node)
    {
        while (true)
        {
            if (Current.IsOperator("."))
            {
                var at = Next().Position;
                if (Current.Kind == TokenKind.Integer)
                    node = new IndexExpr(node, new LiteralExpr(Next().Value, at), at);
                else
                    node = new AttributeExpr(node, ExpectName(), at);
            }
            else if (Current.IsOperator("["))
            {
                node = ParseSubscript(node);
            }
            else if (Current.IsOperator("("))
            {
                var at = Current.Position;
                node = new CallExpr(node, ParseCallArguments(), at);
            }
            else
            {
                return node;
            }
        }
    }

    private Expr ParseSubscript(Expr target)
    {
        var at = Next().Position;
        Expr?[] parts = [null, null, null];
        var part = 0;
        var isSlice = false;
        while (!Current.IsOperator("]"))
        {
            if (Current.IsOperator(":"))
            {
                _index++;
                isSlice = true;
                if (++part > 2)
                    throw Error("a slice takes at most three parts", at);
                continue;
            }
            if (parts[part] != null)
                throw Error($"expected ']' or ':', found {Current}", Current.Position);
            parts[part] = ParseExpression();
        }
        _index++;
        if (isSlice)
            return new SliceExpr(target, parts[0], parts[1], parts[2], at);
        return new IndexExpr(target, parts[0] ?? throw Error("empty subscript", at), at);
    }

    private Arguments ParseCallArguments()
    {
        ExpectOperator("(");
        var positional = new List<Expr>();
        var named = new List<(string, Expr)>();
        while (!Current.IsOperator(")"))
        {
            if (positional.Count + named.Count > 0)
                ExpectOperator(",");
            if (Current.IsOperator(")"))
                break;
            if (Current.Kind == TokenKind.Name && Peek().IsOperator("="))
            {
                var name = Next().Text;
                _index++;
                named.Add((name, ParseExpression()));
            }
            else
            {
                if (named.Count > 0)
                    throw Error("a positional argument cannot follow a keyword argument", Current.Position);
                positional.Add(ParseExpression());
            }
        }
        _index++;
        return new Arguments(positional, named);
    }

    private Expr ParseFiltersAndTests(Expr node)
    {
        while (true)
        {
            if (Current.IsOperator("|"))
            {
                var at = Next().Position;
                var name = ExpectName();
                if (!Filters.IsKnown(name))
                    throw Error($"unknown filter '{name}'", at);
                var args = Current.IsOperator("(") ? ParseCallArguments() : Arguments.None;
                node = new FilterExpr(node, name, args, at);
            }
            else if (Current.IsName("is"))
            {
                var at = Next().Position;
                var negated = false;
                if (Current.IsName("not"))
                {
                    _index++;
                    negated = true;
                }
                var nameToken = Current;
                string name;
                if (nameToken.Kind == TokenKind.Name)
                    name = Next().Text;
                else if (nameToken.Kind == TokenKind.Operator && CompareOperators.Contains(nameToken.Text))
                    name = Next().Text;
                else
                    throw Error($"expected a test name after 'is', found {nameToken}", nameToken.Position);
                if (!Tests.IsKnown(name))
                    throw Error($"unknown test '{name}'", nameToken.Position);
                var args = Arguments.None;
                if (Current.IsOperator("("))
                {
                    args = ParseCallArguments();
                }
                else if (StartsTestArgument(Current))
                {
                    if (Current.IsName("is"))
                        throw Error("tests cannot be chained with 'is'", Current.Position);
                    args = new Arguments([ParsePostfix(ParsePrimary())], []);
                }
                node = new TestExpr(node, name, args, negated, at);
            }
            else if (Current.IsOperator("("))
            {
                var at = Current.Position;
                node = new CallExpr(node, ParseCallArguments(), at);
            }
            else
            {
                return node;
            }
        }
    }

    /// <summary>Jinja lets a test take one bare argument, as in <c>x is divisibleby 3</c> or <c>x is sameas false</c>.</summary>
    private static bool StartsTestArgument(Token token) => token.Kind switch
    {
        TokenKind.Name => token.Text is not ("else" or "or" or "and"),
        TokenKind.String or TokenKind.Integer or TokenKind.Float => true,
        TokenKind.Operator => token.Text is "(" or "[" or "{",
        _ => false,
    };
}
