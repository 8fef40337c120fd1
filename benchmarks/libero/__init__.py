"""uwmbench benchmarks/libero."""
