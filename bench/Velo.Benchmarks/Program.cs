using BenchmarkDotNet.Running;
using Velo.Benchmarks.Encoders;

// dotnet run -c Release --project bench/Velo.Benchmarks -- --filter '*'
// dotnet run -c Release --project bench/Velo.Benchmarks -- encoder [--threads 2] [--rounds 7] [--types f32,f16,q8_0]: Velo against ONNX Runtime on all-MiniLM-L6-v2
if (args is ["encoder", .. var rest]) return EncoderBench.Run(rest);
BenchmarkSwitcher.FromAssembly(typeof(Program).Assembly).Run(args);
return 0;
