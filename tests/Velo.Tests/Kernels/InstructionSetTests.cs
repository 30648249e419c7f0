using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Velo.Tests.Kernels;

/// <summary>
/// CI runs the kernel tests a second time with AVX-512 switched off (<c>.ci/run</c>) so that the AVX2 paths are checked
/// on a machine with AVX-512 too. This checks that the switch reached the JIT: otherwise that run would test the
/// AVX-512 paths again and pass without covering anything new. .NET 10 reads <c>DOTNET_EnableAVX512</c> and ignores
/// <c>DOTNET_EnableAVX512F</c>, which older runtimes read.
/// </summary>
public class InstructionSetTests
{
    [Fact]
    public void Avx512_switched_off_in_the_environment_is_off_in_the_jit()
    {
        string? current = Environment.GetEnvironmentVariable("DOTNET_EnableAVX512"), legacy = Environment.GetEnvironmentVariable("DOTNET_EnableAVX512F");
        if (current != "0" && legacy != "0") return;
        string set = current == "0" ? "DOTNET_EnableAVX512=0" : "only DOTNET_EnableAVX512F=0, which .NET 10 ignores (set DOTNET_EnableAVX512=0)";
        Assert.False(Avx512F.IsSupported, $"{set}, but Avx512F.IsSupported is true");
        Assert.False(Vector512.IsHardwareAccelerated, $"{set}, but Vector512 is accelerated");
    }
}
