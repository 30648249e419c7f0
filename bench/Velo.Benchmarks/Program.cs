using BenchmarkDotNet.Running;
using Velo.Benchmarks.Encoders;
using Velo.Benchmarks.Kernels;
using Velo.Benchmarks.Serving;

// dotnet run -c Release --project bench/Velo.Benchmarks -- --filter '*'
// dotnet run -c Release --project bench/Velo.Benchmarks -- encoder [--threads 2] [--rounds 7] [--types f32,f16,q8_0]: Velo against ONNX Runtime on all-MiniLM-L6-v2
if (args is ["encoder", .. var rest]) return EncoderBench.Run(rest);
// dotnet run -c Release --project bench/Velo.Benchmarks -- encoder-gemm [--threads 1] [--tokens 4096] [--rounds 7] [--cpu-time] [--best]: MiniLM's matrices in Q8_0, integer kernels against F32 panels
if (args is ["encoder-gemm", .. var gemmArgs]) return EncoderGemmBench.Run(gemmArgs);
// dotnet run -c Release --project bench/Velo.Benchmarks -- fma-peak [--rounds 60]: one core's FMA throughput (best and median of short runs), and the packed GEMM's tile mix on L1 data
if (args is ["fma-peak", .. var peakArgs]) return FmaPeakBench.Run(peakArgs);
// dotnet run -c Release --project bench/Velo.Benchmarks -- scheduler -m MODEL [--prompt-file F] [--clients 8] [--requests 32] [-n 64] [--batch 512,256]:
// the server's load test in process (continuous batching without HTTP), batch sizes alternating round by round
if (args is ["scheduler", .. var schedulerArgs]) return SchedulerBench.Run(schedulerArgs);
BenchmarkSwitcher.FromAssembly(typeof(Program).Assembly).Run(args);
return 0;
