"""``uwmbench methods [--size paper|tiny]``: every registered method, its capabilities and its
trainable / frozen parameter counts (models are built on the meta device: no memory, no
weights; ``Method.offline_overrides``: a model-hub VAE is replaced by a randomly initialised
copy of its architecture and ImageNet encoders are not downloaded)."""
from __future__ import annotations

import argparse

import torch

from .base import ALL_CAPABILITIES, OFFLINE_VAE_ARCH, human_count, make_config, registered_methods  # noqa: F401


def method_table(size: str) -> list[dict]:
    rows = []
    for name, cls in registered_methods().items():
        cfg = make_config(name, size, cls.offline_overrides(size))
        with torch.device("meta"):
            m = cls(cfg)
        trainable, frozen = m.parameter_counts()
        rows.append(dict(method=name, size=size, trainable=trainable, frozen=frozen,
                         capabilities=[c for c in ALL_CAPABILITIES if c in cls.capabilities]))
    ref = next((r["trainable"] for r in rows if r["method"] == "uwm"), None)
    for r in rows:
        r["ratio_to_uwm"] = r["trainable"] / ref if ref else float("nan")
    return rows


def format_table(rows: list[dict]) -> str:
    lines = ["| method | trainable | frozen | ratio to UWM | capabilities |", "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['method']} | {human_count(r['trainable'])} | {human_count(r['frozen'])} | "
                     f"{r['ratio_to_uwm']:.2f} | {', '.join(r['capabilities'])} |")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="uwmbench methods", description=__doc__)
    p.add_argument("--size", default="paper", help="size preset to count (paper | tiny)")
    a = p.parse_args(argv)
    print(format_table(method_table(a.size)))
    return 0
