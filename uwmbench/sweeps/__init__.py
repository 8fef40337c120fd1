"""uwmbench sweeps."""

