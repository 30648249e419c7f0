using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Velo.Tests.Kernels;

/// <summary>
/// CI runs the kernel tests a second time with <c>DOTNET_EnableAVX512F=0</c> (<c>.ci/run</c>) so that the AVX2 paths are
/// checked on a machine with AVX-512 too. This checks that the switch reached the JIT: otherwise that run would test the
/// AVX-512 paths again and pass without covering anything new.
/// </summary>
public class InstructionSetTests
{
    [Fact]
    public void AvxFiveTwelveSwitchedOffInTheEnvironmentIsOffInTheJit()
    {
        if (Environment.GetEnvironmentVariable("DOTNET_EnableAVX512F") != "0") return;
        Assert.False(Avx512F.IsSupported, "DOTNET_EnableAVX512F=0 is set but Avx512F.IsSupported is true");
        Assert.False(Vector512.IsHardwareAccelerated, "DOTNET_EnableAVX512F=0 is set but Vector512 is accelerated");
    }
}
