"""Every inference mode of a trained method, measured on held-out windows against a baseline.

``uwmbench modes <run or checkpoint> [--data FILE ...] [--out DIR]`` (and :func:`measure_modes`):
the run's validation episodes (its own ``data.val_fraction`` split, or every episode of ``--data``
files it never trained on) are cut into windows as in training, and each mode the method declares
gets a number beside a baseline that needs no learning:

- **policy** (``predict_action``): open-loop action error, position dims, relative to the action
  magnitude (as ``val/open_loop_rel_err_pos``), beside the *mean-action* baseline (the training
  mean action every step; predicting no motion scores 1.0 by definition);
- **forward dynamics** (``predict_next_obs(obs, action)``): the first predicted next frame against
  the true one, decoded PSNR (dB) and, for latent methods, latent MSE, beside the
  *copy-last-frame* baseline (predict that the next frame equals the last observed one);
- **video prediction** (``predict_next_obs(obs)``, no action): the same numbers and baseline;
- **inverse dynamics** (``infer_action(obs, next_obs)``): relative action error beside the
  mean-action baseline.

Frames are compared in the method's own image space: latent methods (UWM, PAD) against the
VAE round trip of the true frame (the VAE's own error is counted against neither side), pixel
methods against the true frame resized to the prediction. Writes ``modes.json`` (the numbers),
``forward_dynamics.npz`` / ``video_prediction.npz`` (``pred`` / ``true`` frames, which the report
shows as grids) and ``video_prediction.gif``: one held-out episode, each frame the model's
prediction ``action_horizon`` steps ahead from the true frames at that time, beside the truth.
"""
from __future__ import annotations

import argparse
import io
import json
import logging
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from uwmbench.fileio import atomic_write_bytes, atomic_write_text
from uwmbench.methods.base import FORWARD_DYNAMICS, INVERSE_DYNAMICS, POLICY, VIDEO_PREDICTION
from uwmbench.run_dir import CheckpointDir
from .checkpoint import load_method, resolve_checkpoint
from .data import build_datasets, collate, data_config_from
from .diagnose import action_error_summary

log = logging.getLogger(__name__)

MODES_FILE = "modes.json"


def _psnr(pred: torch.Tensor, true: torch.Tensor) -> float:
    """PSNR (dB) of uint8 frames."""
    mse = F.mse_loss(pred.float(), true.float()).item()
    return float("inf") if mse == 0 else 10.0 * math.log10(255.0 ** 2 / mse)


def _rel_err_pos(pred: torch.Tensor, true: torch.Tensor) -> float:
    """The project's one definition of the relative position error (``uwmbench diagnose``)."""
    return action_error_summary(pred, true)["rel_err_pos"]


def _same_space(method, frames: torch.Tensor, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """uint8 frames (B, V, T, 3, H, W) in the space of the method's predictions ``like``: the VAE
    round trip (centre crop) for latent methods, with the latents; else resized pixels."""
    enc = method.latent_encoder
    if enc is not None:
        z = enc.encode(frames.to(method.device)).float()
        return enc.decode(z).cpu(), z.cpu()
    b, v, t = frames.shape[:3]
    x = F.interpolate(frames.reshape(-1, *frames.shape[-3:]).float(), size=like.shape[-2:], mode="bilinear",
                      antialias=True, align_corners=False)
    return x.round().clamp(0, 255).to(torch.uint8).reshape(b, v, t, *x.shape[-3:]), None


def held_out_windows(run: str | Path, data: Sequence[str] = (), n: int = 64):
    """(method, batches, description): up to ``n`` held-out windows of the run's validation split
    (or of ``data`` files, every episode), in episode order, centre crop, images (no latent cache).
    The method carries the weights the evaluator would roll out: EMA when the checkpoint has them."""
    ckpt = resolve_checkpoint(run)
    method = load_method(ckpt, ema=CheckpointDir(ckpt).has_ema)   # the weights the evaluator rolls out ("auto")
    method.eval()
    cfg = _run_data_section(Path(ckpt))
    if data:
        section = {**cfg, "sources": [{"path": str(p)} for p in data], "val_fraction": 0.0, "latent_cache": False}
        where = f"every episode of {', '.join(Path(p).name for p in data)}"
    else:
        if not cfg.get("sources") or float(cfg.get("val_fraction", 0.0)) <= 0:
            raise ValueError(f"{ckpt}: the run has no validation split (data.val_fraction=0); pass held-out demos "
                             "with --data")
        section = {**cfg, "latent_cache": False}
        where = "the run's validation episodes"
    bundle = build_datasets(data_config_from(section), method)
    ds = bundle.train if data else bundle.val
    if ds is None or len(ds) == 0:
        raise ValueError(f"{ckpt}: no held-out windows ({where})")
    idx = sorted(set(np.linspace(0, len(ds) - 1, num=min(n, len(ds))).round().astype(int).tolist()))
    batches = [collate([ds[i] for i in idx[j:j + 16]]) for j in range(0, len(idx), 16)]
    return method, batches, f"{len(idx)} windows of {where}"


def _run_data_section(ckpt: Path) -> dict[str, Any]:
    """The data section the checkpoint was trained with (its run's config.yaml)."""
    import yaml

    for d in (ckpt, *ckpt.parents):
        f = d / "config.yaml"
        if f.is_file():
            cfg = yaml.safe_load(f.read_text()) or {}
            return dict(cfg.get("data") or {})
    return {}


def _mean_action(batches) -> torch.Tensor:
    a = torch.cat([b["action"][b["action_mask"].bool()] if "action_mask" in b else b["action"] for b in batches])
    return a.reshape(-1, a.shape[-1]).mean(0)


@torch.no_grad()
def measure_modes(run: str | Path, out: str | Path, data: Sequence[str] = (), n_windows: int = 64,
                  seed: int = 0) -> dict[str, Any]:
    """Measure every declared mode (see the module docstring); writes ``<out>/modes.json`` and
    the frame arrays; returns the numbers."""
    method, batches, where = held_out_windows(run, data, n_windows)
    return measure_loaded(method, batches, out, where, checkpoint=str(resolve_checkpoint(run)), seed=seed)


@torch.no_grad()
def measure_loaded(method, batches: list[dict[str, torch.Tensor]], out: str | Path, where: str = "",
                   checkpoint: str = "", seed: int = 0) -> dict[str, Any]:
    """:func:`measure_modes` on a built method and its held-out batches (the window format of
    ``uwmbench/benchmarks/data.py``, images, no latents)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    caps = set(method.capabilities)
    mean_a = _mean_action(batches)
    torch.manual_seed(seed)
    acc: dict[str, list[tuple[float, int]]] = {}

    def add(key: str, value: float, n: int) -> None:
        acc.setdefault(key, []).append((value, n))

    grids: dict[str, tuple[list, list]] = {"forward_dynamics": ([], []), "video_prediction": ([], [])}
    for batch in batches:
        obs = {"obs": batch["obs"]}
        true_a = batch["action"]
        b = true_a.shape[0]
        base_a = mean_a.expand_as(true_a)
        if POLICY in caps:
            add("policy/rel_err_pos", _rel_err_pos(method.predict_action(obs).cpu(), true_a), b)
            add("policy/mean_action_rel_err_pos", _rel_err_pos(base_a, true_a), b)
        if INVERSE_DYNAMICS in caps and "next_obs" in batch:
            add("inverse_dynamics/rel_err_pos", _rel_err_pos(method.infer_action(obs, batch["next_obs"]).cpu(), true_a), b)
            add("inverse_dynamics/mean_action_rel_err_pos", _rel_err_pos(base_a, true_a), b)
        for mode, cap, action in (("forward_dynamics", FORWARD_DYNAMICS, true_a),
                                  ("video_prediction", VIDEO_PREDICTION, None)):
            if cap not in caps or "next_obs" not in batch:
                continue
            raw = method.predict_next_obs(obs, action)
            pred = method.predict_next_frames(obs, action).cpu()[:, :, :1]          # first next frame
            true, z_true = _same_space(method, batch["next_obs"][:, :, :1], pred)
            last, z_last = _same_space(method, batch["obs"][:, :, -1:], pred)
            add(f"{mode}/psnr", _psnr(pred, true), b)
            add(f"{mode}/copy_last_psnr", _psnr(last, true), b)
            if z_true is not None and raw.dim() == z_true.dim():
                add(f"{mode}/latent_mse", float(F.mse_loss(raw.float().cpu()[:, :, :1], z_true)), b)
                add(f"{mode}/copy_last_latent_mse", float(F.mse_loss(z_last, z_true)), b)
            grids[mode][0].append(pred[:, 0, 0])
            grids[mode][1].append(true[:, 0, 0])
    numbers = {k: sum(v * n for v, n in xs) / sum(n for _, n in xs) for k, xs in acc.items()}
    files = {}
    for mode, (p, t) in grids.items():
        if p:
            pred = torch.cat(p)[:8].permute(0, 2, 3, 1).numpy()
            true = torch.cat(t)[:8].permute(0, 2, 3, 1).numpy()
            files[mode] = _save_npz(out / f"{mode}.npz", pred=pred, true=true)
    if VIDEO_PREDICTION in caps and batches and "next_obs" in batches[0]:
        files["clip"] = _video_clip(method, batches, out / "video_prediction.gif")
    res = {"method": method.name, "checkpoint": checkpoint, "windows": where,
           "modes": sorted(m for m in ("policy", "forward_dynamics", "video_prediction", "inverse_dynamics")
                           if any(k.startswith(m + "/") for k in numbers)),
           "numbers": numbers, "files": {k: Path(v).name for k, v in files.items()}}
    atomic_write_text(out / MODES_FILE, json.dumps(res, indent=1))
    return res


def _save_npz(path: Path, **arrays) -> Path:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue())
    return path


def _video_clip(method, batches, path: Path, frames: int = 12) -> Path:
    """One held-out stretch: true next frame | predicted (video mode, no action), per window."""
    import imageio.v2 as imageio

    obs = torch.cat([b["obs"] for b in batches])[:frames]
    nxt = torch.cat([b["next_obs"] for b in batches])[:frames]
    pred = method.predict_next_frames({"obs": obs}, None).cpu()[:, 0, 0]
    true, _ = _same_space(method, nxt[:, :1, :1], pred[:, None, None])
    true = true[:, 0, 0]
    pad = torch.full((pred.shape[0], 3, pred.shape[2], 2), 255, dtype=torch.uint8)
    strip = torch.cat([true, pad, pred], dim=3).permute(0, 2, 3, 1).numpy()
    scale = max(1, 128 // strip.shape[1])
    strip = strip.repeat(scale, axis=1).repeat(scale, axis=2)
    buf = io.BytesIO()
    imageio.mimsave(buf, list(strip), format="GIF", duration=0.4, loop=0)
    atomic_write_bytes(path, buf.getvalue())
    return path


def format_modes(res: dict[str, Any]) -> list[str]:
    """One line per mode: the model's number beside its baseline."""
    n = res["numbers"]
    lines = []
    if "policy/rel_err_pos" in n:
        lines.append(f"policy: open-loop action error {n['policy/rel_err_pos']:.3f} (relative; mean-action baseline "
                     f"{n['policy/mean_action_rel_err_pos']:.3f}, no-motion baseline 1.000)")
    for mode, label in (("forward_dynamics", "forward dynamics"), ("video_prediction", "video prediction")):
        if f"{mode}/psnr" in n:
            s = (f"{label}: next-frame PSNR {n[f'{mode}/psnr']:.1f} dB (copy-last-frame baseline "
                 f"{n[f'{mode}/copy_last_psnr']:.1f} dB)")
            if f"{mode}/latent_mse" in n:
                s += (f", latent MSE {n[f'{mode}/latent_mse']:.4f} (baseline "
                      f"{n[f'{mode}/copy_last_latent_mse']:.4f})")
            lines.append(s)
    if "inverse_dynamics/rel_err_pos" in n:
        lines.append(f"inverse dynamics: action error {n['inverse_dynamics/rel_err_pos']:.3f} (relative; mean-action "
                     f"baseline {n['inverse_dynamics/mean_action_rel_err_pos']:.3f}, no-motion baseline 1.000)")
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="uwmbench modes", description=__doc__.split("\n\n")[0],
                                 epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", help="run or checkpoint folder")
    ap.add_argument("--data", nargs="*", default=[], help="held-out LIBERO-layout HDF5 demos (default: the run's "
                                                           "validation split)")
    ap.add_argument("--out", default=None, help="output folder (default: <run>/modes)")
    ap.add_argument("--windows", type=int, default=64, help="held-out windows (default 64)")
    a = ap.parse_args(argv)
    try:
        res = measure_modes(a.run, a.out or Path(a.run) / "modes", a.data, a.windows)
    except (FileNotFoundError, ValueError) as e:
        print(f"uwmbench modes: {e}")
        return 2
    print(f"{res['method']} on {res['windows']}:")
    print("\n".join(f"  {x}" for x in format_modes(res)))
    return 0
