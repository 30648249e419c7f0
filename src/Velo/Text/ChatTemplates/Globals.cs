namespace Velo.Text.ChatTemplates;

/// <summary>Functions every template can call: Jinja's own globals and the ones transformers adds.</summary>
internal static class Globals
{
    public static Scope Create(TimeProvider clock)
    {
        var scope = new Scope(null);
        void Add(string name, Func<CallArguments, Renderer, object?> body) => scope.Set(name, new BuiltinFunction(body));

        Add("raise_exception", (args, _) => throw new TemplateRaisedException(Py.ToStr(args.Get(0, "message"))));
        Add("strftime_now", (args, _) => Strftime.Format(clock.GetLocalNow(), Members.RequireString(args.Get(0, "format"), "strftime_now")));
        Add("namespace", (args, _) =>
        {
            var ns = new Namespace();
            if (args.Positional.Count > 0 && args.Positional[0] is OrderedDictionary<object, object?> initial)
                foreach (var (key, value) in initial)
                    ns.Attributes[Py.ToStr(key)] = value;
            foreach (var (key, value) in args.Named)
                ns.Attributes[key] = value;
            return ns;
        });
        Add("dict", (args, _) =>
        {
            var dict = Py.NewDict();
            foreach (var (key, value) in args.Named)
                dict[key] = value;
            return dict;
        });
        Add("range", Range);
        return scope;
    }

    private static object? Range(CallArguments args, Renderer renderer)
    {
        long Bound(int i) => args.Positional[i] switch
        {
            long l => l,
            bool b => b ? 1 : 0,
            var other => throw new TemplateRuntimeException($"range() needs integers, got {Py.TypeName(other)}"),
        };
        var (start, stop, step) = args.Positional.Count switch
        {
            1 => (0L, Bound(0), 1L),
            2 => (Bound(0), Bound(1), 1L),
            3 => (Bound(0), Bound(1), Bound(2)),
            _ => throw new TemplateRuntimeException("range() takes 1 to 3 integer arguments"),
        };
        if (step == 0)
            throw new TemplateRuntimeException("range() step cannot be zero");
        var count = step > 0
            ? (stop > start ? ((decimal)stop - start + step - 1) / step : 0)
            : (start > stop ? ((decimal)start - stop - step - 1) / -step : 0);
        if (Math.Floor(count) > renderer.Limits.MaxLoopIterations)
            throw new TemplateLimitException($"range() of {Math.Floor(count)} items exceeds the cap of {renderer.Limits.MaxLoopIterations}");
        var items = new List<object?>((int)count);
        for (var i = 0L; i < (long)count; i++)
            items.Add(start + i * step);
        return items;
    }
}
