"""``uwmbench diagnose checkpoint=DIR [data=FILE.hdf5] [windows=64] [first_obs=2] [out=DIR]``:
numbers that explain why a trained policy fails.

1. **Open-loop action error** per chunk step k (0 .. horizon-1): the policy's predicted chunk for
   a training window vs what the demo did next, in env units (LIBERO's OSC action: normalised
   delta position, delta rotation, gripper), on training windows and on held-out windows (the
   run's own validation episodes; or every window of ``data=`` files, e.g. demos the policy never
   saw). Columns: mean |error| of the position (x, y, z) and rotation dims, the gripper's sign
   agreement, and the mean |action| of the same dims for scale. A policy that cannot fit its own
   training windows is under-trained or fed the wrong data; one that fits training windows
   but not held-out ones over-fits; one that fits both but fails in the simulator suffers from
   compounding error or a train/evaluation mismatch, which (2) checks.
2. **First-observation check**: for the first ``first_obs`` demos of each HDF5 source, the
   environment is reset from the demo's stored scene and driven by the demo's actions, and the
   evaluator's observation of that state is compared with the training window the loader builds for
   the same state (pixel-identical for files collected here; the tolerance is the reader's to judge
   for files recorded elsewhere), together with the action the window says comes next.

Both tables are written to ``<out>`` (default ``<checkpoint run>/diagnostics``) as CSV and
Markdown, plus ``summary.json``; ``uwmbench run`` writes them per task
(``<run>/diagnostics/<task>/``) and ``uwmbench report`` shows them.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Sequence

import h5py
import numpy as np
import pandas as pd
import torch
import yaml

from uwmbench.config import ConfigError, typed
from uwmbench.fileio import atomic_write_text, markdown_table
from uwmbench.run_dir import CheckpointDir, RunDir
from uwmbench.schemas import DiagnoseConfig
from .checkpoint import load_method, resolve_checkpoint
from .data import build_datasets, collate, data_config_from
from .data_sources import DataError

log = logging.getLogger(__name__)

POS, ROT, GRIP = slice(0, 3), slice(3, 6), 6


def _windows(dataset, n: int, seed: int) -> list[int]:
    """Up to ``n`` window indices spread evenly over ``dataset`` (a seeded offset)."""
    total = len(dataset)
    if total == 0:
        return []
    if total <= n:
        return list(range(total))
    off = np.random.default_rng(seed).uniform(0, total / n)
    return sorted({int(off + i * total / n) for i in range(n)})


def action_error_summary(pred, true) -> dict:
    """Predicted vs demonstrated action chunks ((N, H, A) arrays or tensors, env units) in the
    numbers every diagnostic of this project reports: mean |error| of the position (x, y, z) and
    rotation dims, their relative errors (error / mean |action| of the same dims: 1.0 = no better
    than predicting zero motion), the gripper's sign agreement and the per-dim errors. The one
    definition used by ``uwmbench diagnose`` and by the trainer's validation
    (``val/open_loop_rel_err_pos``)."""
    pred = pred.detach().float().cpu().numpy() if hasattr(pred, "detach") else np.asarray(pred, dtype=np.float64)
    true = true.detach().float().cpu().numpy() if hasattr(true, "detach") else np.asarray(true, dtype=np.float64)
    h = min(pred.shape[1], true.shape[1])
    pred, true = pred[:, :h], true[:, :h]
    err = np.abs(pred - true)
    out = {"windows": int(len(pred)),
           "err_pos": float(err[..., POS].mean()), "err_rot": float(err[..., ROT].mean()),
           "grip_sign_agree": float((np.sign(pred[..., GRIP]) == np.sign(true[..., GRIP])).mean()),
           "abs_pos": float(np.abs(true[..., POS]).mean()), "abs_rot": float(np.abs(true[..., ROT]).mean()),
           "err_per_dim": [float(v) for v in err.reshape(-1, err.shape[-1]).mean(0)],
           "abs_per_dim": [float(v) for v in np.abs(true).reshape(-1, true.shape[-1]).mean(0)]}
    out["rel_err_pos"] = out["err_pos"] / max(out["abs_pos"], 1e-9)
    out["rel_err_rot"] = out["err_rot"] / max(out["abs_rot"], 1e-9)
    return out


def open_loop_error(method, dataset, n_windows: int = 64, batch_size: int = 16, seed: int = 0,
                    split: str = "train") -> tuple[list[dict], dict]:
    """Per chunk step rows and a summary of predicted vs demonstrated action chunks."""


    idx = _windows(dataset, n_windows, seed)
    if not idx:
        return [], {"split": split, "windows": 0}
    preds, trues = [], []
    torch.manual_seed(seed)
    method.eval()
    for i in range(0, len(idx), batch_size):
        samples = [dataset[j] for j in idx[i:i + batch_size]]
        samples = [s for s in samples if bool(s.get("action_mask", True))]
        if not samples:
            continue
        b = collate(samples)
        with torch.no_grad():
            p = method.predict_action({"obs": b["obs"]})
        preds.append(p.float().cpu().numpy())
        trues.append(b["action"].float().numpy())
    if not preds:
        return [], {"split": split, "windows": 0}
    pred, true = np.concatenate(preds), np.concatenate(trues)
    h = min(pred.shape[1], true.shape[1])
    pred, true = pred[:, :h], true[:, :h]
    err = np.abs(pred - true)
    grip_ok = np.sign(pred[..., GRIP]) == np.sign(true[..., GRIP])
    rows = []
    for k in range(h):
        rows.append({"split": split, "step": k, "windows": len(pred),
                     "err_pos": float(err[:, k, POS].mean()), "err_rot": float(err[:, k, ROT].mean()),
                     "grip_sign_agree": float(grip_ok[:, k].mean()),
                     "abs_pos": float(np.abs(true[:, k, POS]).mean()), "abs_rot": float(np.abs(true[:, k, ROT]).mean())})
    summary = {"split": split, **action_error_summary(pred, true)}
    return rows, summary


def window_vs_env(path: str, dataset, demo: str, s: int, flip_vertical: bool = True) -> dict:
    """The training window of ``dataset`` (a :class:`~.data.WindowDataset` over ``path``) whose
    first frame is frame ``s`` of ``demo``, vs the evaluator's observation of the same state:
    the env is reset from the demo's stored scene and driven by the demo's own actions."""

    from .libero.envs import LiberoEnv
    from .libero.replay_check import _task_of
    from .libero.scene import scene_from_demo
    from .libero.tasks import get_task

    idx = next((i for i in range(len(dataset)) if dataset.locate(i) == (demo, s)), None)
    if idx is None:
        raise ValueError(f"{path}: no training window starts at {demo} frame {s}")
    win = dataset[idx]
    views = list(dataset.obs_keys)
    to = int(win["obs"].shape[1])
    with h5py.File(path, "r") as f:
        task, cond = _task_of(f)
        g = f["data"][demo]
        actions = g["actions"][()]
        size = int(g[f"obs/{views[0]}"].shape[1])
        with LiberoEnv(get_task(task, cond), views=views, obs_frames=to, replan_every=1, max_steps=10 ** 6,
                       settle_steps=0, render="every_step", camera_size=size) as env:
            env.reset(init_state=scene_from_demo(g, env._rs, f"{path} data/{demo}"), seed=0, settle_steps=0)
            last = s + to - 1 + dataset.action_offset   # actions taken before the window's last frame
            for a in actions[:last]:
                env.step(a)
            obs = env.observation()
            if flip_vertical:
                obs = obs[..., ::-1, :]
            nxt = actions[last] if last < len(actions) else None
    d = np.abs(obs.astype(np.int16) - np.asarray(win["obs"]).astype(np.int16))
    return {"file": Path(path).name, "demo": demo, "frame": s, "identical_pixels": float((d == 0).mean()),
            "mean_abs_diff": float(d.mean()), "max_abs_diff": int(d.max()),
            "next_action_equal": bool(nxt is not None and "action" in win
                                      and np.array_equal(np.asarray(win["action"][0]), nxt.astype(np.float32)))}


def first_obs_rows(bundle, demos: int = 2, flip_vertical: bool = True) -> list[dict]:
    """:func:`window_vs_env` at frame 0 for the first ``demos`` training demos of every HDF5 file
    that stores scenes; files without them are listed with a reason."""

    rows = []
    for ds in bundle.train.datasets:
        path = getattr(ds.source, "path", None)
        if not path or not str(path).endswith((".hdf5", ".h5")):
            continue
        names = sorted(ds.demos, key=lambda k: int(k.split("_")[-1]) if k.split("_")[-1].isdigit() else 0)[:demos]
        with h5py.File(path, "r") as f:
            stored = [n for n in names if "uwmbench_scene" in f["data"][n].attrs or "model_file" in f["data"][n].attrs]
        if not stored:
            rows.append({"file": Path(path).name, "demo": "", "frame": 0, "note": "no stored scene (model_file)"})
            continue
        for n in stored:
            try:
                rows.append(window_vs_env(str(path), ds, n, 0, flip_vertical))
            except Exception as e:  # a diagnostic must not kill the run it explains
                log.warning("first-observation check of %s %s failed: %s", path, n, e)
                rows.append({"file": Path(path).name, "demo": n, "frame": 0, "note": f"failed: {e}"})
    return rows


def diagnose(checkpoint: str | os.PathLike, out: str | os.PathLike | None = None, data: Sequence[str] = (),
             windows: int = 64, first_obs: int = 2, seed: int = 0, device: str = "cpu") -> dict[str, Any]:
    """Write ``open_loop.{csv,md}``, ``first_obs.{csv,md}`` and ``summary.json`` to ``out``;
    returns the summary."""



    ckpt = resolve_checkpoint(checkpoint)
    cfg_file = CheckpointDir(ckpt).config
    if not cfg_file.is_file():
        raise DataError(f"{cfg_file}: missing (diagnose needs the training config saved with the checkpoint)")
    tcfg = yaml.safe_load(cfg_file.read_text()) or {}
    dcfg = dict(tcfg.get("data") or {})
    dcfg["num_workers"] = 0
    # a few windows are diagnosed: their latents are encoded on the fly (building the whole training
    # set's latent cache here would cost as much as training's did)
    dcfg["latent_cache"] = False
    method = load_method(ckpt, device=device)
    bundle = build_datasets(data_config_from(dcfg), method)
    held_name = "val"
    held = bundle.val
    if data:
        other = {**dcfg, "sources": [{"path": str(p)} for p in data], "val_fraction": 0.0}
        held = build_datasets(data_config_from(other), method).train
        held_name = "heldout"
    rows, summaries = [], []
    for split, ds in (("train", bundle.train), (held_name, held)):
        if ds is None:
            summaries.append({"split": split, "windows": 0, "note": "no held-out episodes (val_fraction=0)"})
            continue
        r, s = open_loop_error(method, ds, windows, seed=seed, split=split)
        rows += r
        summaries.append(s)
    first = first_obs_rows(bundle, first_obs, bool(dcfg.get("flip_vertical", True))) if first_obs > 0 else []
    out = Path(out) if out is not None else CheckpointDir(ckpt).run_dir.diagnostics()
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "open_loop.csv", pd.DataFrame(rows).to_csv(index=False))
    flat = [{k: v for k, v in s.items() if not isinstance(v, list)} for s in summaries]
    atomic_write_text(out / "open_loop.md",
                      f"# Open-loop action error: {ckpt}\n\nPer split (all chunk steps):\n\n{markdown_table(flat)}\n\n"
                      f"Per chunk step:\n\n{markdown_table(rows)}\n")
    if first:
        atomic_write_text(out / "first_obs.csv", pd.DataFrame(first).to_csv(index=False))
        atomic_write_text(out / "first_obs.md", f"# Evaluator observation vs training window (frame 0)\n\n{markdown_table(first)}\n")
    summary = {"checkpoint": str(ckpt), "method": method.name, "open_loop": summaries, "first_obs": first}
    atomic_write_text(out / RunDir.DIAGNOSTICS_SUMMARY, json.dumps(summary, indent=1, default=str))
    return summary


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    kv = {}
    for a in argv:
        if "=" not in a:
            raise ConfigError(f"diagnose: argument {a!r} is not of the form key=value")
        k, v = a.split("=", 1)
        kv[k] = v
    if "checkpoint" not in kv:
        raise ConfigError("diagnose: checkpoint=<checkpoint or run folder> is required")
    cfg = typed(kv, DiagnoseConfig, "diagnose")  # unknown keys and ill-typed values: one line naming them
    data = [p for p in (cfg.data or "").split(",") if p]
    s = diagnose(cfg.checkpoint, cfg.out, data, cfg.windows, cfg.first_obs, cfg.seed, cfg.device)
    for o in s["open_loop"]:
        if o.get("windows"):
            print(f"{o['split']:>8}: {o['windows']} windows  |err| pos {o['err_pos']:.3f} (|a| {o['abs_pos']:.3f}, "
                  f"rel {o['rel_err_pos']:.2f})  rot {o['err_rot']:.3f} (|a| {o['abs_rot']:.3f})  "
                  f"gripper sign {o['grip_sign_agree']:.0%}")
    for r in s["first_obs"]:
        if "identical_pixels" in r:
            print(f"first obs {r['file']} {r['demo']}: {r['identical_pixels']:.1%} identical pixels, "
                  f"mean |diff| {r['mean_abs_diff']:.2f}, next action equal: {r['next_action_equal']}")
        else:
            print(f"first obs {r['file']} {r['demo']}: {r.get('note')}")
    return 0
