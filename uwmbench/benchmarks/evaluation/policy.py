"""The policy side of an evaluation: which weights of which checkpoint (:func:`resolve_policy`),
and :class:`BatchedPolicy`, one call per batch of waiting environments. Runs in the main
process only (torch)."""
from __future__ import annotations

import inspect
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from uwmbench.config import ConfigError
from uwmbench.run_dir import CheckpointDir

WEIGHTS = ("auto", "ema", "raw")


class BatchedPolicy:
    """Wraps a Method (or anything with ``predict_action`` and a ``cfg``) for batched calls on
    uint8 observation histories (B, V, To, 3, H, W) in LIBERO's stored orientation.

    ``frame_size`` (H, W): frames of another size are resized to it (bilinear, antialiased, like
    :meth:`~.reference.DemoReference._resize`) before the method sees them (``evaluate(resize_frames=True)``)."""

    def __init__(self, method: Any, flip_vertical: bool, device: str | None,
                 frame_size: tuple[int, int] | None = None):
        import torch

        self.method = method
        self.flip_vertical = flip_vertical
        self.frame_size = None if frame_size is None else (int(frame_size[0]), int(frame_size[1]))
        if device and device != "auto" and hasattr(method, "to"):
            method.to(device)
        if hasattr(method, "eval"):
            method.eval()
        self.device = getattr(method, "device", torch.device("cpu"))
        cfg = getattr(method, "cfg", None)
        self.views = tuple(getattr(cfg, "views", ("agentview_rgb", "eye_in_hand_rgb")))
        self.obs_frames = int(getattr(cfg, "obs_frames", 2))
        self.horizon = int(getattr(cfg, "action_horizon", 16))
        self.next_frames = int(getattr(cfg, "next_frames", 2))
        self.name = getattr(method, "name", type(method).__name__)
        self.calls = 0
        self.batch_sizes: list[int] = []
        self.time_s = 0.0
        # methods whose sampling takes per-element generators (every built-in one; a user's method
        # without the parameter still works, drawing from torch's global RNG)
        self.seeded = {fn: _takes_generator(getattr(method, fn, None)) for fn in ("predict_action", "infer_action")}

    def __call__(self, obs: np.ndarray, next_obs: np.ndarray | None = None,
                 seeds: "list[int] | None" = None) -> np.ndarray:
        """Action chunks (B, H, 7): ``predict_action`` on ``obs``, or, with ``next_obs`` (uint8
        (B, V, Tn, 3, H, W), same orientation as ``obs``), ``infer_action(obs, next_obs)``.
        ``seeds`` (one per batch element, see :func:`policy_seed`): element i's sampling noise comes
        from a generator seeded with ``seeds[i]``, so its chunk does not depend on the rest of the batch."""
        import torch

        t0 = time.time()
        if self.flip_vertical:
            obs = obs[..., ::-1, :]
            if next_obs is not None:
                next_obs = next_obs[..., ::-1, :]
        x = self._resize(torch.from_numpy(np.ascontiguousarray(obs)).to(self.device))
        fn = "predict_action" if next_obs is None else "infer_action"
        kw = {}
        if seeds is not None and self.seeded[fn]:
            if len(seeds) != obs.shape[0]:
                raise RuntimeError(f"{len(seeds)} seeds for a batch of {obs.shape[0]}")
            kw["generator"] = [torch.Generator().manual_seed(int(s)) for s in seeds]
        with torch.no_grad():
            if next_obs is None:
                a = self.method.predict_action({"obs": x}, **kw)
            else:
                if next_obs.shape[0] != obs.shape[0]:
                    raise RuntimeError(f"next_obs batch {next_obs.shape[0]} != obs batch {obs.shape[0]}")
                nx = self._resize(torch.from_numpy(np.ascontiguousarray(next_obs)).to(self.device))
                a = self.method.infer_action({"obs": x}, nx, **kw)
        a = a.detach().float().cpu().numpy().astype(np.float64)
        if a.ndim != 3 or a.shape[0] != obs.shape[0] or a.shape[2] != 7:
            raise RuntimeError(f"{self.name}.{fn} returned shape {a.shape}; expected ({obs.shape[0]}, H, 7)")
        self.calls += 1
        self.batch_sizes.append(obs.shape[0])
        self.time_s += time.time() - t0
        return a

    def _resize(self, x):
        """uint8 (..., 3, H, W) -> (..., 3, *frame_size); unchanged without a frame size or when
        the sizes already agree."""
        if self.frame_size is None or tuple(x.shape[-2:]) == self.frame_size:
            return x
        import torch
        import torch.nn.functional as F

        lead = x.shape[:-3]
        y = F.interpolate(x.reshape(-1, *x.shape[-3:]).float(), size=self.frame_size, mode="bilinear",
                          align_corners=False, antialias=True)
        return y.round().clamp(0, 255).to(torch.uint8).reshape(*lead, x.shape[-3], *self.frame_size)


def policy_seed(rollout_seed: int, t: int) -> int:
    """The seed of the policy's sampling noise for the call at env step ``t`` of the rollout with
    ``rollout_seed``: a function of these two only (not of batching, workers or call order)."""
    return int(np.random.SeedSequence([int(rollout_seed) & 0xFFFFFFFFFFFFFFFF, int(t)]).generate_state(1, np.uint64)[0]
               & 0x7FFFFFFFFFFFFFFF)


def _takes_generator(fn: Any) -> bool:
    if fn is None:
        return False
    try:
        ps = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == "generator" or p.kind is inspect.Parameter.VAR_KEYWORD for p in ps)


def resolve_policy(policy: Any, device: str | None, weights: str = "auto") -> tuple[Any, str, bool | None, str]:
    """-> (method, checkpoint string, flip_vertical from the checkpoint's config or None, weights
    used: "ema" or "raw"). ``weights="auto"``: the EMA weights when the checkpoint has them."""
    if weights not in WEIGHTS:
        raise ConfigError(f"weights={weights!r} is not one of {WEIGHTS}")
    if isinstance(policy, (str, os.PathLike)):
        from uwmbench.benchmarks.checkpoint import load_method, resolve_checkpoint

        ckpt = resolve_checkpoint(policy)
        dev = device if device and device != "auto" else auto_device()
        use_ema = weights == "ema" or (weights == "auto" and CheckpointDir(ckpt).has_ema)
        method = load_method(ckpt, device=dev, ema=use_ema)
        return method, str(ckpt), checkpoint_flip(ckpt), "ema" if use_ema else "raw"
    if weights == "ema":
        raise ConfigError("weights=ema needs a checkpoint folder (a Method object carries only its current weights)")
    if hasattr(policy, "predict_action"):
        return policy, "", None, "raw"
    if callable(policy):
        method = policy()
        if not hasattr(method, "predict_action"):
            raise TypeError(f"policy factory {policy!r} returned {type(method).__name__}, which has no predict_action")
        return method, "", None, "raw"
    raise TypeError(f"policy must be a checkpoint path, a Method or a factory returning one; got {type(policy).__name__}")


def auto_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def checkpoint_flip(ckpt: Path) -> bool | None:
    """``data.flip_vertical`` of the run that produced the checkpoint (the loader's flip)."""
    f = CheckpointDir(ckpt).config
    if not f.is_file():
        return None
    try:
        from omegaconf import OmegaConf

        cfg = OmegaConf.load(f)
        v = OmegaConf.select(cfg, "data.flip_vertical")
        return None if v is None else bool(v)
    except Exception as e:  # a broken config must not be silently ignored
        raise RuntimeError(f"{f}: cannot read data.flip_vertical ({e})") from None


def checkpoint_frame_size(ckpt: str | os.PathLike) -> tuple[int, int] | None:
    """(H, W) of the frames the checkpoint's method was trained on (``frame_size`` in its
    ``meta.json``, written by the trainer), or None when the checkpoint does not say (written
    before it was stored, or not a trainer checkpoint)."""
    if not ckpt:
        return None
    from uwmbench.benchmarks.checkpoint import read_checkpoint_meta
    from uwmbench.benchmarks.data_sources import DataError

    v = read_checkpoint_meta(ckpt).get("frame_size")
    if v is None:
        return None
    try:
        h, w = (int(x) for x in v)
    except (TypeError, ValueError):
        raise DataError(f"{CheckpointDir(ckpt).meta}: frame_size={v!r} is not [H, W]") from None
    return h, w


_auto_device = auto_device
