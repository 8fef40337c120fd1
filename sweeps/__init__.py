"""uwmbench sweeps."""
