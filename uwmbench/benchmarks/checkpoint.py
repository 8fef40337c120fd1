"""Checkpoints: ``<run_dir>/checkpoints/step_00001000/`` holding

- ``model.safetensors``   the method's state dict (action-normaliser statistics included)
- ``ema.safetensors``     EMA weights (when EMA is on)
- ``trainer_state.pt``    optimizer, LR scheduler, RNG states, step
- ``method.json``         the method's typed config (enough to rebuild it)
- ``config.yaml``         the whole resolved run config
- ``vae_config.json``     architecture of the frozen VAE (rebuild offline; weights are in the model file)
- ``meta.json``           what the evaluator checks: ``frame_size`` [H, W] of the training frames

Each checkpoint is written to a temporary folder and renamed into place, and
``checkpoints/latest`` (a text file) is replaced atomically after it, so a crash at any moment
leaves the previous checkpoint intact.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from uwmbench.config import ConfigPathError
from uwmbench.fileio import atomic_write_text
from uwmbench.methods.base import Method, config_to_dict, make_config, get_method_class
from uwmbench.run_dir import CheckpointDir, RunDir
from .data_sources import DataError

META_FILE = CheckpointDir.META


def checkpoint_root(run_dir: str | os.PathLike) -> Path:
    return RunDir(run_dir).checkpoints


def latest_checkpoint(run_dir: str | os.PathLike) -> Path | None:
    """The newest checkpoint of a trainer's folder (see :meth:`RunDir.latest_checkpoint`)."""
    return RunDir(run_dir).latest_checkpoint()


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """A checkpoint folder, or a run folder (its latest checkpoint)."""
    p = Path(path).expanduser()
    if not p.exists():
        raise ConfigPathError(f"checkpoint {str(path)!r}: no such file or folder ({p.absolute()})")
    if CheckpointDir(p).is_checkpoint:
        return p
    latest = latest_checkpoint(p)
    if latest is None:
        raise ConfigPathError(f"no checkpoint at {p} (expected a checkpoint folder with model.safetensors, "
                              "or a run folder with checkpoints/latest)")
    return latest


def save_checkpoint(run_dir: str | os.PathLike, step: int, method: Method, trainer_state: dict[str, Any],
                    config_yaml: str, ema_state: dict[str, torch.Tensor] | None = None, keep: int = 2,
                    meta: dict[str, Any] | None = None) -> Path:
    """``meta``: written to ``meta.json`` (the trainer stores ``frame_size: [H, W]``)."""
    from safetensors.torch import save_file, save_model

    rd = RunDir(run_dir)
    root = rd.checkpoints
    root.mkdir(parents=True, exist_ok=True)
    name = rd.step_name(step)
    final = root / name
    tmp = CheckpointDir(tempfile.mkdtemp(dir=root, prefix=f".{name}."))
    try:
        save_model(method, str(tmp.model))
        if ema_state is not None:
            save_file({k: v.detach().contiguous().cpu() for k, v in ema_state.items()}, str(tmp.ema))
        torch.save(trainer_state, tmp.trainer_state)
        tmp.method.write_text(json.dumps(config_to_dict(method.cfg), indent=2))
        tmp.config.write_text(config_yaml)
        if meta is not None:
            tmp.meta.write_text(json.dumps(meta, indent=2, default=list))
        vae = getattr(method.latent_encoder, "vae", None)
        if vae is not None:
            tmp.vae_config.write_text(json.dumps(dict(vae.config), default=list, indent=2))
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp.path, final)
    except BaseException:
        shutil.rmtree(tmp.path, ignore_errors=True)
        raise
    atomic_write_text(rd.latest_marker, name + "\n")
    old = [p for p in rd.step_checkpoints() if p.name != name]
    for p in old[: max(0, len(old) - (keep - 1))] if keep > 0 else []:
        shutil.rmtree(p, ignore_errors=True)
    return final


def read_checkpoint_meta(path: str | os.PathLike) -> dict[str, Any]:
    """``meta.json`` of a checkpoint (or run) folder; ``{}`` for checkpoints written before it
    existed. A malformed file raises :class:`DataError` naming it."""

    f = CheckpointDir(resolve_checkpoint(path)).meta
    if not f.is_file():
        return {}
    try:
        meta = json.loads(f.read_text())
    except (OSError, ValueError) as e:
        raise DataError(f"{f}: unreadable checkpoint metadata ({e})") from None
    if not isinstance(meta, dict):
        raise DataError(f"{f}: checkpoint metadata is not a JSON object")
    return meta


def load_method(path: str | os.PathLike, device: str | torch.device = "cpu", ema: bool = False) -> Method:
    """Rebuild a method from a checkpoint (or run) folder, offline: the VAE is rebuilt from
    its saved architecture and its weights come from the checkpoint."""
    from safetensors.torch import load_file, load_model

    ckpt = resolve_checkpoint(path)
    files = CheckpointDir(ckpt)
    cfg_dict = json.loads(files.method.read_text())
    name = cfg_dict.pop("name")
    size = cfg_dict.pop("size", None)
    if files.vae_config.is_file() and "vae" in cfg_dict:
        cfg_dict["vae"] = f"config:{files.vae_config}"
    get_method_class(name)  # clear error for unknown methods (e.g. a plugin not imported)
    if "pretrained_encoder" in cfg_dict:
        cfg_dict["pretrained_encoder"] = "none"  # the checkpoint's weights replace any initial encoder weights
    cfg = make_config(name, size, cfg_dict)
    method = get_method_class(name)(cfg)
    missing, unexpected = load_model(method, str(files.model), strict=False)
    if missing or unexpected:
        raise RuntimeError(f"{files.model}: state dict mismatch; missing={missing[:5]} unexpected={unexpected[:5]}")
    if ema:
        f = files.ema
        if not f.is_file():
            raise ConfigPathError(f"{f}: this checkpoint has no EMA weights (trainer.ema was 0)")
        state = load_file(str(f))
        params = dict(method.named_parameters())
        with torch.no_grad():
            for k, v in state.items():
                params[k].copy_(v)
    return method.to(device).eval()


def load_weights_into(method: Method, path: str | os.PathLike) -> Path:
    """Initialise ``method`` from another checkpoint (pretrain -> finetune): matching keys and
    shapes are copied; the list of skipped keys is returned in the log."""

    from safetensors.torch import load_file
    ckpt = resolve_checkpoint(path)
    state = load_file(str(CheckpointDir(ckpt).model))
    own = method.state_dict()
    skipped = [k for k, v in state.items() if k not in own or own[k].shape != v.shape]
    own.update({k: v for k, v in state.items() if k in own and own[k].shape == v.shape})
    method.load_state_dict(own)
    logging.getLogger(__name__).info("initialised from %s (%d tensors, %d skipped%s)", ckpt, len(state) - len(skipped),
                                     len(skipped), f": {skipped[:5]}" if skipped else "")
    return ckpt
