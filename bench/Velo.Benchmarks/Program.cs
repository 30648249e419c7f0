using BenchmarkDotNet.Running;

// dotnet run -c Release --project bench/Velo.Benchmarks -- --filter '*'
BenchmarkSwitcher.FromAssembly(typeof(Program).Assembly).Run(args);
