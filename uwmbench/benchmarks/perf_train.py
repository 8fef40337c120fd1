"""``uwmbench perf train``: training throughput and policy latency of every method on synthetic
LIBERO-shaped batches (the setup the public UWM code was timed with on an H100: batch 36, 2 views x 2 frames of
128x128 stored frames, 16 x 7 actions), in fp32 and bf16 autocast (CUDA), with and without
the latent cache (UWM/PAD: cached latents skip the frozen VAE encode of the next frames).

Prints a Markdown table and writes it (CSV + Markdown) to ``--out``. Measured numbers, never
asserted by tests.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd
import torch

from uwmbench.fileio import atomic_write_text, markdown_table
from uwmbench.methods.base import build_method, human_count, registered_methods


def synthetic_batch(method, batch: int, raw: int, device, with_latents: bool):
    cfg = method.cfg
    v = len(cfg.views)
    b = {
        "obs": torch.randint(0, 256, (batch, v, cfg.obs_frames, 3, raw, raw), dtype=torch.uint8, device=device),
        "next_obs": torch.randint(0, 256, (batch, v, cfg.next_frames, 3, raw, raw), dtype=torch.uint8, device=device),
        "action": torch.rand(batch, cfg.action_horizon, cfg.action_dim, device=device) * 2 - 1,
        "action_mask": torch.ones(batch, dtype=torch.bool, device=device),
    }
    enc = method.latent_encoder
    if with_latents and enc is not None:
        keys = method.batch_keys()
        with torch.no_grad():
            if "next_obs_latent" in keys:
                b["next_obs_latent"] = enc.encode(b["next_obs"])
            if "obs_latent" in keys:
                b["obs_latent"] = enc.encode(b["obs"])
    return b


def matmul_peak_gflops(device, n: int = 2048, reps: int = 10, dtype=torch.float32) -> float:
    """Achieved GFLOP/s of a plain ``n x n`` matmul on ``device`` (the median of ``reps``): the
    machine's practical limit that a training step's achieved GFLOP/s is measured against."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(2):
        a @ b
    times = []
    for _ in range(reps):
        _sync(device)
        t = time.perf_counter()
        a @ b
        _sync(device)
        times.append(time.perf_counter() - t)
    return 2 * n ** 3 / sorted(times)[len(times) // 2] / 1e9


def step_flops(m, batch_d) -> float:
    """FLOPs of one training step (forward + backward of ``compute_loss``), counted by torch's
    ``FlopCounterMode`` (matmuls, convolutions, attention; elementwise work is not counted)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as fc:
        loss, _ = m.compute_loss(batch_d)
        loss.backward()
    m.zero_grad(set_to_none=True)
    return float(fc.get_total_flops())


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


# today: the trainer's defaults; fast: the levers that keep the model and its loss exactly (fused AdamW,
# trainer.fused_optimizer=true); compiled: fast + torch.compile of the loss (trainer.compile=true), whose
# one-off compilation is reported apart (compile_s) and never enters the step time
PATHS = ("today", "fast", "compiled")


def measure(name: str, size: str, batch: int, steps: int, warmup: int, device, precision: str, cached: bool,
            raw: int = 128, path: str = "today") -> dict:
    # random weights for speed: no hub VAE, no ImageNet download
    over = registered_methods()[name].offline_overrides(size)
    torch.manual_seed(0)
    m = build_method(name, size, **over).to(device)
    m.train()
    opt = torch.optim.AdamW(m.trainable_parameters(), lr=1e-4, fused=True if path != "today" else None)
    loss_fn = _loss_fn(m, path)
    bf16 = precision == "bf16"
    batch_d = synthetic_batch(m, batch, raw, device, cached)
    times, compile_s = [], 0.0
    for i in range(warmup + steps):
        _sync(device)
        t = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss, _ = loss_fn(batch_d)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        _sync(device)
        if i >= warmup:
            times.append(time.perf_counter() - t)
        elif i == 0 and path == "compiled":
            compile_s = time.perf_counter() - t
    step_s = sorted(times)[len(times) // 2]
    flops = step_flops(m, batch_d)
    m.eval()
    obs = {"obs": batch_d["obs"][:1]}
    lat = []
    for i in range(warmup + max(3, steps // 2)):
        _sync(device)
        t = time.perf_counter()
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            m.predict_action(obs)
        _sync(device)
        if i >= warmup:
            lat.append(time.perf_counter() - t)
    trainable, frozen = m.parameter_counts()
    del m, opt
    return dict(method=name, path=path, size=size, device=str(device), precision=precision, latent_cache=cached, batch=batch,
                trainable=human_count(trainable), frozen=human_count(frozen), step_s=round(step_s, 4),
                samples_per_s=round(batch / step_s, 1), gflop_per_step=round(flops / 1e9, 2),
                achieved_gflops=round(flops / step_s / 1e9, 1),
                policy_latency_ms=round(1000 * sorted(lat)[len(lat) // 2], 1), compile_s=round(compile_s, 1))


def _loss_fn(m, path: str):
    """What a training step calls: the method's loss, compiled on the ``compiled`` path as the trainer
    compiles it (``trainer.compile=true``)."""
    if path != "compiled":
        return m.compute_loss
    from uwmbench.benchmarks.train import compiled_loss
    return compiled_loss(m)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="uwmbench perf train", description=__doc__.split("\n\n")[0])
    p.add_argument("--methods", default="uwm,dp,pad,gr1,bc")
    p.add_argument("--size", default="paper")
    p.add_argument("--batch", type=int, default=36)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--precision", default="auto", help="fp32 | bf16 | both | auto (both on CUDA, fp32 on CPU)")
    p.add_argument("--raw", type=int, default=128, help="stored frame size")
    p.add_argument("--device", default="auto")
    p.add_argument("--paths", default="today,fast", help="today (the trainer's defaults), fast "
                   "(trainer.fused_optimizer=true) and/or compiled (fast + trainer.compile=true), side by side")
    p.add_argument("--out", default="runs/perf")
    a = p.parse_args(argv)
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if a.device == "auto" else a.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    precs = {"both": ["fp32", "bf16"], "auto": ["fp32", "bf16"] if device.type == "cuda" else ["fp32"]}.get(
        a.precision, [a.precision])
    peak = matmul_peak_gflops(device)
    print(f"matmul peak ({device}, fp32 2048x2048, {torch.get_num_threads()} threads): {peak:.1f} GFLOP/s", flush=True)
    rows = []
    for name in a.methods.split(","):
        for prec in precs:
            cached_opts = [False, True] if name in ("uwm", "pad") else [False]
            for cached in cached_opts:
                for path in a.paths.split(","):
                    if path not in PATHS:
                        raise SystemExit(f"perf train: --paths {path!r} is not one of {PATHS}")
                    r = measure(name, a.size, a.batch, a.steps, a.warmup, device, prec, cached, a.raw, path)
                    rows.append(r)
                    print(r, flush=True)
    df = pd.DataFrame(rows)
    df["peak_fraction"] = (df["achieved_gflops"] / peak).round(3)
    df.attrs["matmul_peak_gflops"] = peak
    out = Path(a.out)
    atomic_write_text(out / "perf_train.csv", df.to_csv(index=False))
    md = (f"matmul peak: {peak:.1f} GFLOP/s (fp32 2048x2048 on {device}, {torch.get_num_threads()} threads); "
          "achieved = counted FLOPs of a step (matmuls, convolutions, attention) / step time\n\n"
          + markdown_table(df, None))
    atomic_write_text(out / "perf_train.md", md + "\n")
    print(md)
    return 0


