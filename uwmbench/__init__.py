"""uwmbench: Unified World Models vs Diffusion Policy, PAD and GR1 on LIBERO (ID and OOD)."""
__version__ = "0.1.0"
