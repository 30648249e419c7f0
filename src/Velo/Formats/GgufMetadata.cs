using System.Collections;
using System.Diagnostics.CodeAnalysis;
using System.Globalization;

namespace Velo.Formats;

/// <summary>
/// The key/value metadata of a GGUF file, in file order. Values are CLR scalars (<c>byte</c> … <c>double</c>,
/// <c>bool</c>, <c>string</c>) or <see cref="GgufArray"/>.
/// </summary>
public sealed class GgufMetadata : IReadOnlyDictionary<string, object>
{
    private readonly Dictionary<string, object> _values = new(StringComparer.Ordinal);
    private readonly List<string> _order = [];

    internal void Add(string key, object value)
    {
        if (!_values.TryAdd(key, value))
            throw new GgufFormatException($"metadata key '{key}' appears twice");
        _order.Add(key);
    }

    public object this[string key] => _values[key];
    public IEnumerable<string> Keys => _order;
    public IEnumerable<object> Values => _order.Select(k => _values[k]);
    public int Count => _order.Count;
    public bool ContainsKey(string key) => _values.ContainsKey(key);
    public bool TryGetValue(string key, [MaybeNullWhen(false)] out object value) => _values.TryGetValue(key, out value);

    public IEnumerator<KeyValuePair<string, object>> GetEnumerator() =>
        _order.Select(k => new KeyValuePair<string, object>(k, _values[k])).GetEnumerator();

    IEnumerator IEnumerable.GetEnumerator() => GetEnumerator();

    public string? GetString(string key) => _values.TryGetValue(key, out var v) ? v as string ?? throw WrongType(key, v, "string") : null;

    public string RequireString(string key) => GetString(key) ?? throw Missing(key);

    /// <summary>Reads an integer of any GGUF integer type that fits in a uint.</summary>
    public bool TryGetUInt32(string key, out uint value)
    {
        value = 0;
        if (!_values.TryGetValue(key, out var v)) return false;
        long n = ToInt64(key, v);
        if (n < 0 || n > uint.MaxValue) throw new GgufFormatException($"metadata '{key}' = {n} is out of range for an unsigned 32-bit value");
        value = (uint)n;
        return true;
    }

    public uint GetUInt32(string key, uint defaultValue) => TryGetUInt32(key, out uint v) ? v : defaultValue;

    public uint RequireUInt32(string key) => TryGetUInt32(key, out uint v) ? v : throw Missing(key);

    public bool TryGetFloat32(string key, out float value)
    {
        value = 0;
        if (!_values.TryGetValue(key, out var v)) return false;
        value = v switch
        {
            float f => f,
            double d => (float)d,
            _ => ToInt64(key, v),
        };
        return true;
    }

    public float GetFloat32(string key, float defaultValue) => TryGetFloat32(key, out float v) ? v : defaultValue;

    public bool TryGetBool(string key, out bool value)
    {
        value = false;
        if (!_values.TryGetValue(key, out var v)) return false;
        value = v is bool b ? b : throw WrongType(key, v, "bool");
        return true;
    }

    public string[]? GetStringArray(string key) => GetArray<string>(key);
    public float[]? GetFloat32Array(string key) => GetArray<float>(key);

    /// <summary>An integer array of any GGUF integer element type, as int.</summary>
    public int[]? GetInt32Array(string key)
    {
        if (!_values.TryGetValue(key, out var v)) return null;
        if (v is not GgufArray array) throw WrongType(key, v, "array");
        if (array.Items is int[] ints) return ints;
        var result = new int[array.Count];
        for (int i = 0; i < result.Length; i++)
        {
            long n = ToInt64(key, array.Items.GetValue(i)!);
            if (n < int.MinValue || n > int.MaxValue) throw new GgufFormatException($"metadata '{key}'[{i}] = {n} does not fit in 32 bits");
            result[i] = (int)n;
        }
        return result;
    }

    private T[]? GetArray<T>(string key)
    {
        if (!_values.TryGetValue(key, out var v)) return null;
        if (v is GgufArray { Items: T[] items }) return items;
        throw WrongType(key, v, typeof(T).Name + " array");
    }

    private static long ToInt64(string key, object v) => v switch
    {
        byte n => n,
        sbyte n => n,
        ushort n => n,
        short n => n,
        uint n => n,
        int n => n,
        ulong n when n <= long.MaxValue => (long)n,
        long n => n,
        _ => throw WrongType(key, v, "integer"),
    };

    private static GgufFormatException WrongType(string key, object v, string expected) =>
        new($"metadata '{key}' should be {expected} but is {Describe(v)}");

    private static GgufFormatException Missing(string key) => new($"required metadata key '{key}' is missing");

    public static string Describe(object v) => v switch
    {
        string s => s.Length > 60 ? $"\"{s[..60]}…\"" : $"\"{s}\"",
        GgufArray a => a.ToString(),
        IFormattable f => f.ToString(null, CultureInfo.InvariantCulture),
        _ => v.ToString() ?? "",
    };
}
