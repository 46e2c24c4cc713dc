using BenchmarkDotNet.Running;

// Micro-benchmarks of Emunet's per-packet paths, with the allocations of each (MemoryDiagnoser: every hot path must
// show 0 B allocated). Run all: dotnet run -c Release --project tests/Emunet.Micro -- --filter '*'
// One class: --filter '*Checksum*'. A quick look (not statistics): add --job short. Results: BenchmarkDotNet.Artifacts/.
BenchmarkSwitcher.FromAssembly(typeof(Emunet.Micro.ChecksumBench).Assembly).Run(args);
