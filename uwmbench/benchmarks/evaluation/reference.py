"""Expert demos read in the main process (LIBERO / robomimic HDF5 layout ``data/demo_i/...``):
the scene each demo starts from (``init_from``, inverse dynamics) and, for inverse dynamics,
the demo's future frames at each replanning step (the goal ``next_obs``)."""
from __future__ import annotations

import logging
import os
from typing import Any, Sequence

import numpy as np

log = logging.getLogger("uwmbench.benchmarks.evaluate")  # the evaluator's public logger


class DemoReference:
    """Demos read in the main process: the scene each demo starts from (``policy`` mode with
    ``init_from``, ``inverse_dynamics`` mode) and, for ``inverse_dynamics``, its future frames.

    The rollout starts from the demo's states[0] scene (its own ``uwmbench_scene``, or
    ``init_state`` + the fixture poses of ``model_file`` for LIBERO's files) with no settle steps
    (states[0] is already settled), so env step ``t`` is the state before ``actions[t]``. Its frame
    is file frame ``t - d``: ``d = 1`` for LIBERO's official "after_action" files (obs[j] is the
    frame returned by ``env.step(actions[j])``), 0 for "before_action" files (see
    ``Hdf5Source._read_conventions``). At env step ``t`` (the last frame of the observation history)
    the goal is the frames the demo reached ``Ha + k`` steps later (k < Tn): file frames
    ``t + Ha + k - d``, clamped to the episode, exactly the training window's ``next_obs`` for
    the same state. Frames are returned in the simulator's (OpenGL) orientation (an "opencv" file
    is flipped back) and resized to the camera size when they differ."""

    def __init__(self, views: Sequence[str], horizon: int, next_frames: int, camera_size: int):
        self.views = tuple(views)
        self.horizon = int(horizon)
        self.next_frames = int(next_frames)
        self.size = int(camera_size)
        self._files: dict[str, Any] = {}
        self._lengths: dict[tuple[str, str], int] = {}
        self._conventions: dict[str, tuple[int, bool]] = {}
        self._warned: set[str] = set()

    def _file(self, path: str):
        import h5py

        f = self._files.get(path)
        if f is None:
            if not os.path.isfile(path):
                from uwmbench.benchmarks.data_sources import DataError
                raise DataError(f"demo file not found: {path}")
            f = self._files[path] = h5py.File(path, "r")
        return f

    def convention(self, path: str) -> tuple[int, bool]:
        """(frame offset d, frames stored upright) of a file."""
        if path not in self._conventions:
            from uwmbench.benchmarks.data_sources import file_conventions

            conv, align = file_conventions(self._file(path)["data"].attrs, path)
            align_off, upright = (1 if align == "after_action" else 0), conv == "opencv"
            self._conventions[path] = (align_off, upright)
        return self._conventions[path]

    def check_demo(self, path: str, demo: str, frames: bool = True) -> int:
        """Validates ``data/<demo>`` (a scene to start from; with ``frames``, both views of equal
        length); returns its length."""
        from uwmbench.benchmarks.data_sources import DataError

        f = self._file(path)
        if "data" not in f:
            raise DataError(f"{path}: missing group 'data' (expected the LIBERO layout data/demo_N/...)")
        if demo not in f["data"]:
            n = len(f["data"])
            raise DataError(f"{path}: no data/{demo} (the file has {n} demo(s)); episode i starts from data/demo_i, "
                            f"so n_rollouts/episodes must stay below the demo count")
        g = f["data"][demo]
        if "states" not in g and "init_state" not in g.attrs and "uwmbench_scene" not in g.attrs:
            raise DataError(f"{path}: data/{demo} has no 'states' dataset and no 'init_state' attribute "
                            "(needed to reset the env to the demo's start)")
        t = int(g.attrs.get("num_samples", 0)) or None
        if frames:
            t = None
            for v in self.views:
                key = f"obs/{v}"
                if key not in g:
                    raise DataError(f"{path}: data/{demo}/{key} is missing (the method's views are {list(self.views)})")
                ds = g[key]
                if ds.ndim != 4 or ds.shape[-1] != 3 or ds.dtype != np.uint8:
                    raise DataError(f"{path}: data/{demo}/{key} has shape {ds.shape} dtype {ds.dtype}; "
                                    "expected uint8 (T, H, W, 3)")
                if t is not None and ds.shape[0] != t:
                    raise DataError(f"{path}: data/{demo}/{key} has {ds.shape[0]} frames but {self.views[0]} has {t}")
                t = ds.shape[0]
            if not t:
                raise DataError(f"{path}: data/{demo} has no frames")
        self._lengths[(path, demo)] = int(t or 0)
        return int(t or 0)

    def start(self, path: str, demo: str) -> tuple[Any, str | None]:
        """(scene of states[0], the demo's model_file when the scene needs its fixture poses)."""
        from uwmbench.benchmarks.libero.scene import SCENE_ATTR, Scene

        g = self._file(path)[f"data/{demo}"]
        if SCENE_ATTR in g.attrs:
            return Scene.from_json(g.attrs[SCENE_ATTR], where=f"{path} data/{demo}"), None
        state = (np.asarray(g.attrs["init_state"], np.float64) if "init_state" in g.attrs
                 else np.asarray(g["states"][0], np.float64))
        mf = g.attrs.get("model_file")
        return Scene(state), (None if mf is None else (mf.decode() if isinstance(mf, bytes) else str(mf)))

    def indices(self, path: str, demo: str, t: int) -> list[int]:
        n = self._lengths.get((path, demo)) or self.check_demo(path, demo)
        d, _ = self.convention(path)
        return [min(max(int(t) + self.horizon + k - d, 0), n - 1) for k in range(self.next_frames)]

    def next_obs(self, path: str, demo: str, t: int) -> np.ndarray:
        """uint8 (V, Tn, 3, size, size), the simulator's orientation."""
        idx = self.indices(path, demo, t)
        uniq = sorted(set(idx))
        g = self._file(path)[f"data/{demo}/obs"]
        _, upright = self.convention(path)
        out = []
        for v in self.views:
            block = np.asarray(g[v][uniq])                       # h5py wants increasing indices
            frames = block[[uniq.index(i) for i in idx]]         # (Tn, H, W, 3)
            if upright:
                frames = frames[:, ::-1]
            out.append(self._resize(np.ascontiguousarray(frames), path))
        return np.ascontiguousarray(np.stack(out).transpose(0, 1, 4, 2, 3))

    def _resize(self, frames: np.ndarray, path: str) -> np.ndarray:
        h, w = frames.shape[1:3]
        if (h, w) == (self.size, self.size):
            return frames
        import torch
        import torch.nn.functional as F

        if path not in self._warned:
            self._warned.add(path)
            log.info("evaluate: reference %s has %dx%d frames, the env camera %dx%d: resizing demo frames "
                     "(bilinear, antialiased)", path, h, w, self.size, self.size)
        x = torch.from_numpy(frames).permute(0, 3, 1, 2).float()
        x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False, antialias=True)
        return x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()

    def close(self) -> None:
        for f in self._files.values():
            try:
                f.close()
            except Exception:
                pass
        self._files.clear()


def reference_path(reference: Any, task: str, condition: str, n_tasks: int, n_conditions: int) -> str:
    """The reference file of (task, condition): a path (``{task}`` / ``{condition}`` are
    replaced) or a dict keyed by condition or by task, or by "task/condition"."""
    ref = reference
    if isinstance(ref, dict):
        for k in (f"{task}/{condition}", task, condition):
            if k in ref:
                ref = ref[k]
                break
        else:
            raise ValueError(f"reference has no entry for task {task!r} condition {condition!r} "
                             f"(keys {sorted(map(str, reference))}; use '<task>/<condition>', the task or the condition)")
        n_tasks = n_conditions = 1  # an explicit entry names what it is for
    ref = os.fspath(ref)
    if n_tasks > 1 and "{task}" not in ref:
        raise ValueError(f"reference={ref!r} serves several tasks: put '{{task}}' in the path or pass a dict")
    if n_conditions > 1 and "{condition}" not in ref:
        raise ValueError(f"reference={ref!r} serves several conditions (expert demos are per task and condition): "
                         "put '{condition}' in the path, pass a dict, or evaluate one condition")
    return ref.replace("{task}", task).replace("{condition}", condition)


