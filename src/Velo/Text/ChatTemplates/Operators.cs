namespace Velo.Text.ChatTemplates;

/// <summary>Python's arithmetic, concatenation and comparison on template values.</summary>
internal static class Operators
{
    public static object? Negate(object? value) => Defined(value) switch
    {
        long l => (object)checked(-l),
        double d => -d,
        bool b => b ? -1L : 0L,
        _ => throw Unsupported("unary -", value),
    };

    public static object? Plus(object? value) => Defined(value) switch
    {
        long or double => (object?)value,
        bool b => b ? 1L : 0L,
        _ => throw Unsupported("unary +", value),
    };

    public static object? Binary(string op, object? left, object? right, Renderer renderer)
    {
        if (op == "~")
            return renderer.CheckLength(Py.ToStr(left) + Py.ToStr(right));
        Defined(left);
        Defined(right);
        return op switch
        {
            "+" => Add(left, right, renderer),
            "*" => Multiply(left, right, renderer),
            "-" or "/" or "//" or "%" or "**" when Py.IsNumber(left) && Py.IsNumber(right) => Arithmetic(op, left!, right!),
            _ => throw Unsupported(op, left, right),
        };
    }

    private static object? Add(object? left, object? right, Renderer renderer) => (left, right) switch
    {
        (string a, string b) => renderer.CheckLength(a + b),
        (List<object?> a, List<object?> b) => renderer.CheckLength([.. a, .. b]),
        _ when Py.IsNumber(left) && Py.IsNumber(right) => Arithmetic("+", left!, right!),
        _ => throw Unsupported("+", left, right),
    };

    private static object? Multiply(object? left, object? right, Renderer renderer)
    {
        if (left is string or List<object?> && right is long or bool)
            return Repeat(left, ToLong(right!), renderer);
        if (right is string or List<object?> && left is long or bool)
            return Repeat(right, ToLong(left!), renderer);
        if (Py.IsNumber(left) && Py.IsNumber(right))
            return Arithmetic("*", left!, right!);
        throw Unsupported("*", left, right);
    }

    private static object Repeat(object sequence, long times, Renderer renderer)
    {
        times = Math.Max(times, 0);
        if (sequence is string s)
        {
            if (s.Length * (double)times > renderer.Limits.MaxStringLength)
                throw new TemplateLimitException($"template built a string longer than {renderer.Limits.MaxStringLength} characters");
            return string.Concat(Enumerable.Repeat(s, (int)times));
        }
        var list = (List<object?>)sequence;
        if (list.Count * (double)times > renderer.Limits.MaxLoopIterations)
            throw new TemplateLimitException($"template built a list longer than {renderer.Limits.MaxLoopIterations} items");
        return Enumerable.Repeat(list, (int)times).SelectMany(x => x).ToList();
    }

    private static long ToLong(object value) => value is bool b ? (b ? 1 : 0) : (long)value;

    private static object Arithmetic(string op, object left, object right)
    {
        if (left is not double && right is not double)
        {
            long a = ToLong(left), b = ToLong(right);
            switch (op)
            {
                case "+": return checked(a + b);
                case "-": return checked(a - b);
                case "*": return checked(a * b);
                case "/": return b == 0 ? throw DivisionByZero() : (double)a / b;
                case "//": return b == 0 ? throw DivisionByZero() : FloorDiv(a, b);
                case "%": return b == 0 ? throw DivisionByZero() : a - b * FloorDiv(a, b);
                case "**":
                    if (b >= 0)
                        return IntegerPower(a, b);
                    return Math.Pow(a, b);
            }
        }
        double x = Py.ToDouble(left), y = Py.ToDouble(right);
        return op switch
        {
            "+" => x + y,
            "-" => x - y,
            "*" => x * y,
            "/" => y == 0 ? throw DivisionByZero() : x / y,
            "//" => y == 0 ? throw DivisionByZero() : Math.Floor(x / y),
            "%" => y == 0 ? throw DivisionByZero() : x - y * Math.Floor(x / y),
            _ => Math.Pow(x, y),
        };
    }

    private static long FloorDiv(long a, long b)
    {
        var q = a / b;
        return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q;
    }

    private static long IntegerPower(long value, long exponent)
    {
        long result = 1;
        while (exponent > 0)
        {
            if ((exponent & 1) != 0)
                result = checked(result * value);
            exponent >>= 1;
            if (exponent > 0)
                value = checked(value * value);
        }
        return result;
    }

    public static bool Compare(string op, object? left, object? right) => op switch
    {
        "==" => Py.AreEqual(left, right),
        "!=" => !Py.AreEqual(left, right),
        "<" => Py.Compare(left, right) < 0,
        "<=" => Py.Compare(left, right) <= 0,
        ">" => Py.Compare(left, right) > 0,
        ">=" => Py.Compare(left, right) >= 0,
        "in" => Contains(right, left),
        _ => !Contains(right, left),
    };

    /// <summary>Python's <c>needle in container</c>.</summary>
    public static bool Contains(object? container, object? needle) => container switch
    {
        string s => needle is string n ? s.Contains(n, StringComparison.Ordinal) : throw new TemplateRuntimeException($"'in <string>' requires a string, not {Py.TypeName(needle)}"),
        List<object?> list => list.Any(item => Py.AreEqual(item, needle)),
        OrderedDictionary<object, object?> dict => needle != null && dict.ContainsKey(needle),
        Undefined => false,
        _ => throw new TemplateRuntimeException($"argument of type '{Py.TypeName(container)}' is not a container"),
    };

    public static object? Defined(object? value) =>
        value is Undefined undefined ? throw new TemplateRuntimeException(undefined.Description) : value;

    private static TemplateRuntimeException DivisionByZero() => new("division by zero");

    private static TemplateRuntimeException Unsupported(string op, object? value) =>
        new($"bad operand type for {op}: '{Py.TypeName(value)}'");

    private static TemplateRuntimeException Unsupported(string op, object? left, object? right) =>
        new($"unsupported operand types for {op}: '{Py.TypeName(left)}' and '{Py.TypeName(right)}'");
}
