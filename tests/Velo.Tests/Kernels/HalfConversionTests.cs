using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using Velo.Kernels;

namespace Velo.Tests.Kernels;

public unsafe class HalfConversionTests
{
    /// <summary>Every half, zeros and subnormals included, must widen exactly on every path (the non-finite ones to fixed finite values).</summary>
    [Fact]
    public void EveryFiniteHalfWidensExactly()
    {
        if (!Avx2.IsSupported) return; // these are the AVX2 kernels' conversions; other machines never run them
        var halves = new ushort[65536];
        for (int i = 0; i < halves.Length; i++) halves[i] = (ushort)i;
        fixed (ushort* p = halves)
        {
            for (int i = 0; i < halves.Length; i += 8)
            {
                var fromRow = F16Row.Load8((byte*)p, i);
                var fromLow = F16Row.LowHalvesToSingle(Vector256.Create(
                    p[i] | 0x5A5A0000, p[i + 1], p[i + 2], p[i + 3], p[i + 4], p[i + 5], p[i + 6], p[i + 7] | unchecked((int)0xFFFF0000)));
                var fromHigh = F16Row.HighHalvesToSingle(Vector256.Create(
                    p[i] << 16 | 0x5A5A, p[i + 1] << 16, p[i + 2] << 16, p[i + 3] << 16,
                    p[i + 4] << 16, p[i + 5] << 16, p[i + 6] << 16, p[i + 7] << 16 | 0xFFFF));
                for (int k = 0; k < 8; k++)
                {
                    Half half = BitConverter.UInt16BitsToHalf(p[i + k]);
                    // Infinities and NaNs come out finite, as exponent 31 read like any other: 2^16 · (1 + m/1024).
                    float expected = Half.IsFinite(half) ? (float)half
                        : (p[i + k] >> 15 == 1 ? -1 : 1) * 65536f * (1 + (p[i + k] & 0x3FF) / 1024f);
                    Assert.Equal(BitConverter.SingleToInt32Bits(expected), BitConverter.SingleToInt32Bits(fromRow[k]));
                    Assert.Equal(BitConverter.SingleToInt32Bits(expected), BitConverter.SingleToInt32Bits(fromLow[k]));
                    Assert.Equal(BitConverter.SingleToInt32Bits(expected), BitConverter.SingleToInt32Bits(fromHigh[k]));
                    Assert.Equal(BitConverter.SingleToInt32Bits(expected), BitConverter.SingleToInt32Bits(F16Row.ToSingle(p[i + k])));
                }
            }
        }
    }
}
