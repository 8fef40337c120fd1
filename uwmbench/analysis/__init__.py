"""uwmbench analysis."""

