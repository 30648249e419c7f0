namespace Velo.Tensors;

/// <summary>
/// Sizes computed from numbers Velo does not control: a file's shapes and offsets, a model's hyperparameters, a
/// user's context length. Every product and sum goes through here, checked, because a value that wraps turns into a
/// small or negative size that passes the bounds checks after it and then undersizes a native buffer.
/// Sizes are never negative: a negative operand fails like an overflow.
/// </summary>
public static class SizeMath
{
    /// <summary><paramref name="a"/> × <paramref name="b"/>; false when an operand is negative or the product exceeds <see cref="long.MaxValue"/>.</summary>
    public static bool TryMultiply(long a, long b, out long product)
    {
        product = 0;
        if (a < 0 || b < 0) return false;
        if (a != 0 && b > long.MaxValue / a) return false;
        product = a * b;
        return true;
    }

    /// <summary><paramref name="a"/> + <paramref name="b"/>; false when an operand is negative or the sum exceeds <see cref="long.MaxValue"/>.</summary>
    public static bool TryAdd(long a, long b, out long sum)
    {
        sum = 0;
        if (a < 0 || b < 0 || a > long.MaxValue - b) return false;
        sum = a + b;
        return true;
    }

    /// <summary>Elements of a tensor of this shape; false when a dimension is not positive or the product overflows.</summary>
    public static bool TryElementCount(IReadOnlyList<long> shape, out long elements)
    {
        elements = 1;
        foreach (long dimension in shape)
            if (dimension <= 0 || !TryMultiply(elements, dimension, out elements))
                return false;
        return true;
    }

    /// <summary>
    /// Bytes taken by <paramref name="elements"/> elements of <paramref name="type"/>; false when the type is unknown,
    /// the elements are not a whole number of its blocks, or the size overflows.
    /// </summary>
    public static bool TryByteSize(GgmlType type, long elements, out long bytes)
    {
        bytes = 0;
        return GgmlTypeInfo.TryGetLayout(type, out int blockSize, out int blockBytes)
               && elements >= 0 && elements % blockSize == 0
               && TryMultiply(elements / blockSize, blockBytes, out bytes);
    }

    /// <summary>
    /// The product of <paramref name="factors"/>, for a buffer Velo is about to allocate; a product that cannot be
    /// represented (or a negative factor) throws an <see cref="ArgumentOutOfRangeException"/> naming <paramref name="what"/>.
    /// </summary>
    public static long Product(string what, params ReadOnlySpan<long> factors)
    {
        long product = 1;
        foreach (long factor in factors)
            if (!TryMultiply(product, factor, out product))
                throw new ArgumentOutOfRangeException(nameof(factors),
                    $"{what}: {string.Join(" × ", factors.ToArray())} is negative or too large to allocate");
        return product;
    }
}
