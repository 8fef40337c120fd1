"""uwmbench benchmarks."""

