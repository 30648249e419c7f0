namespace Velo.Formats;

/// <summary>Metadata value types as numbered by the GGUF specification.</summary>
public enum GgufValueType : uint
{
    UInt8 = 0,
    Int8 = 1,
    UInt16 = 2,
    Int16 = 3,
    UInt32 = 4,
    Int32 = 5,
    Float32 = 6,
    Bool = 7,
    String = 8,
    Array = 9,
    UInt64 = 10,
    Int64 = 11,
    Float64 = 12,
}

/// <summary>
/// A GGUF metadata array. <see cref="Items"/> is a typed CLR array: <c>byte[]</c>, <c>sbyte[]</c>, <c>ushort[]</c>,
/// <c>short[]</c>, <c>uint[]</c>, <c>int[]</c>, <c>float[]</c>, <c>bool[]</c>, <c>string[]</c>, <c>ulong[]</c>,
/// <c>long[]</c>, <c>double[]</c>, or <c>GgufArray[]</c> for nested arrays.
/// </summary>
public sealed class GgufArray
{
    public GgufArray(GgufValueType elementType, Array items)
    {
        if (items.GetType().GetElementType() != GgufValues.ClrType(elementType))
            throw new ArgumentException($"A {elementType} array needs {GgufValues.ClrType(elementType).Name}[] items, not {items.GetType().Name}.");
        ElementType = elementType;
        Items = items;
    }

    public GgufValueType ElementType { get; }
    public Array Items { get; }
    public int Count => Items.Length;

    public static GgufArray Of(string[] items) => new(GgufValueType.String, items);
    public static GgufArray Of(float[] items) => new(GgufValueType.Float32, items);
    public static GgufArray Of(int[] items) => new(GgufValueType.Int32, items);
    public static GgufArray Of(uint[] items) => new(GgufValueType.UInt32, items);

    public override string ToString() => $"[{ElementType} × {Count}]";
}

internal static class GgufValues
{
    public static Type ClrType(GgufValueType type) => type switch
    {
        GgufValueType.UInt8 => typeof(byte),
        GgufValueType.Int8 => typeof(sbyte),
        GgufValueType.UInt16 => typeof(ushort),
        GgufValueType.Int16 => typeof(short),
        GgufValueType.UInt32 => typeof(uint),
        GgufValueType.Int32 => typeof(int),
        GgufValueType.Float32 => typeof(float),
        GgufValueType.Bool => typeof(bool),
        GgufValueType.String => typeof(string),
        GgufValueType.Array => typeof(GgufArray),
        GgufValueType.UInt64 => typeof(ulong),
        GgufValueType.Int64 => typeof(long),
        GgufValueType.Float64 => typeof(double),
        _ => throw new ArgumentOutOfRangeException(nameof(type), type, "unknown GGUF value type"),
    };

    public static GgufValueType TypeOf(object value) => value switch
    {
        byte => GgufValueType.UInt8,
        sbyte => GgufValueType.Int8,
        ushort => GgufValueType.UInt16,
        short => GgufValueType.Int16,
        uint => GgufValueType.UInt32,
        int => GgufValueType.Int32,
        float => GgufValueType.Float32,
        bool => GgufValueType.Bool,
        string => GgufValueType.String,
        GgufArray => GgufValueType.Array,
        ulong => GgufValueType.UInt64,
        long => GgufValueType.Int64,
        double => GgufValueType.Float64,
        _ => throw new ArgumentException($"{value.GetType().Name} is not a GGUF metadata value type."),
    };

    /// <summary>Fixed encoded size of a scalar type, or the minimum size of a string/array header.</summary>
    public static int MinEncodedSize(GgufValueType type) => type switch
    {
        GgufValueType.UInt8 or GgufValueType.Int8 or GgufValueType.Bool => 1,
        GgufValueType.UInt16 or GgufValueType.Int16 => 2,
        GgufValueType.UInt32 or GgufValueType.Int32 or GgufValueType.Float32 => 4,
        GgufValueType.UInt64 or GgufValueType.Int64 or GgufValueType.Float64 or GgufValueType.String => 8,
        GgufValueType.Array => 12,
        _ => throw new ArgumentOutOfRangeException(nameof(type)),
    };
}
