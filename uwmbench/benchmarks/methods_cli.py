"""``uwmbench methods [--size paper|small|tiny] [--speed]``: every registered method, its capabilities and its
trainable / frozen parameter counts (``--speed``: plus train steps/s and policy latency measured
now, on this machine's CPU or GPU, with synthetic batches of 128 px frames and cached latents) (models are built on the meta device: no memory, no
weights; ``Method.offline_overrides``: a model-hub VAE is replaced by a randomly initialised
copy of its architecture and ImageNet encoders are not downloaded)."""
from __future__ import annotations

import argparse

import torch

from uwmbench.methods.base import ALL_CAPABILITIES, OFFLINE_VAE_ARCH, human_count, make_config, registered_methods  # noqa: F401


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


def add_speed(rows: list[dict], batch: int = 32, steps: int = 5, warmup: int = 2) -> list[dict]:
    """Measure each method's train step (forward + backward + AdamW, fp32, latent cache on) and
    its policy latency (one observation) on this machine; adds ``train_steps_per_s``,
    ``policy_ms`` and ``speed_batch``/``speed_device``."""
    from .perf_train import measure

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    for r in rows:
        m = measure(r["method"], r["size"], batch, steps, warmup, device, "fp32", cached=True)
        r.update(train_steps_per_s=round(1.0 / m["step_s"], 2), policy_ms=m["policy_latency_ms"],
                 speed_batch=batch, speed_device=f"{device.type} x{torch.get_num_threads()} threads"
                 if device.type == "cpu" else torch.cuda.get_device_name(device))
    return rows


def format_table(rows: list[dict]) -> str:
    speed = all("train_steps_per_s" in r for r in rows) and bool(rows)
    head = "| method | trainable | frozen | ratio to UWM | capabilities |"
    if speed:
        head += f" train steps/s (batch {rows[0]['speed_batch']}, {rows[0]['speed_device']}) | policy ms |"
    lines = [head, "|---" * head.count(" | ") + "|---|"]
    for r in rows:
        line = (f"| {r['method']} | {human_count(r['trainable'])} | {human_count(r['frozen'])} | "
                f"{r['ratio_to_uwm']:.2f} | {', '.join(r['capabilities'])} |")
        if speed:
            line += f" {r['train_steps_per_s']} | {r['policy_ms']} |"
        lines.append(line)
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="uwmbench methods", description=__doc__)
    p.add_argument("--size", default="paper", help="size preset to count (paper | small | tiny)")
    p.add_argument("--speed", action="store_true", help="also measure train steps/s and policy latency here")
    p.add_argument("--batch", type=int, default=32, help="batch size of the --speed measurement")
    a = p.parse_args(argv)
    rows = method_table(a.size)
    if a.speed:
        rows = add_speed(rows, batch=a.batch)
    print(format_table(rows))
    return 0
