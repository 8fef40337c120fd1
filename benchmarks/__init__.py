"""uwmbench benchmarks."""
