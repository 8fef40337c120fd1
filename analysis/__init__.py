"""uwmbench analysis."""
