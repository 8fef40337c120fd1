"""Parallel LIBERO evaluation of a policy, in-distribution and OOD.

Layout: the policy lives in the main process; a pool of ``num_workers`` spawned processes
each owns one :class:`~uwmbench.benchmarks.libero.envs.LiberoEnv` (kept across rollouts of the
same task and condition). At every replanning point a worker sends its observation history;
the main process stacks the observations of all workers that are waiting, calls
``method.predict_action`` once on the batch and sends each worker its action chunk, which the
worker executes open loop (``replan_every`` actions) with lazy camera rendering.

Every rollout has a fixed seed, ``rollout_seed(seed, task, condition, episode)``, and episode
``i`` starts from init state ``i`` of the task (LIBERO's shipped states in-distribution,
generated ones OOD). One result row per rollout is appended to ``<out>/rollouts.jsonl`` as soon
as it finishes (one ``write`` of a whole line, flushed and fsynced) and handed to ``row_sink``;
a rerun with the same output folder skips the rollouts already there.

Python::

    df = evaluate("runs/dp/checkpoints/latest", ["book_caddy"], conditions=("id", "ood"),
                  n_rollouts=50, num_workers=4, out_dir="eval/dp")

CLI: ``uwmbench evaluate checkpoint=PATH tasks=[book_caddy] conditions=[id,ood] n_rollouts=50
workers=2 out=DIR`` (hydra config ``configs/evaluate.yaml``).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import queue
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from ..config import ConfigError
from ..fileio import atomic_write_text as _atomic_write

log = logging.getLogger(__name__)

ROLLOUTS_FILE = "rollouts.jsonl"
ROW_KEY = ("checkpoint", "method", "variant", "task", "condition", "rollout_seed", "episode", "max_steps",
           "replan_every", "mode", "init_source", "weights")
# rows written before these columns existed (EMA weights were never evaluated then)
ROW_KEY_DEFAULTS = {"mode": "policy", "init_source": "benchmark", "weights": "raw"}
WEIGHTS = ("auto", "ema", "raw")
MODES = ("policy", "inverse_dynamics")


# ----------------------------------------------------------------------------- seeds & rows
def rollout_seed(seed: int, task: str, condition: str, episode: int) -> int:
    """Stable 31-bit seed of one rollout (independent of worker count and order)."""
    h = hashlib.sha256(f"{int(seed)}|{task}|{condition}|{int(episode)}".encode()).digest()
    return int.from_bytes(h[:4], "little") & 0x7FFFFFFF


def append_jsonl(path: str | os.PathLike, row: dict[str, Any]) -> None:
    """Append one JSON line with a single O_APPEND write, then flush it to disk."""
    line = (json.dumps(row, default=_json_default, sort_keys=True) + "\n").encode()
    fd = os.open(os.fspath(path), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)


def read_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Rows of a JSONL file; a torn last line (crash mid-write) is ignored."""
    rows = []
    p = Path(path)
    if not p.is_file():
        return rows
    with open(p) as f:
        for i, line in enumerate(f):
            line = line.strip()
            if not line:
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                log.warning("%s: skipping unreadable line %d", p, i + 1)
    return rows


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def _row_key(row: dict[str, Any]) -> tuple:
    # rows written before the `mode` column existed are policy rollouts
    return tuple(str(row.get(k) or ROW_KEY_DEFAULTS[k]) if k in ROW_KEY_DEFAULTS else str(row.get(k)) for k in ROW_KEY)


# ----------------------------------------------------------------------------- jobs
@dataclass
class RolloutJob:
    id: int
    spec: Any                  # TaskSpec
    task: str                  # name as given (short name when it is a paper task)
    condition: str
    episode: int
    rollout_seed: int
    init_state: Any            # Scene (state + fixture poses + controller state) or a flattened state
    init_state_index: int      # index into the benchmark's init states; -1: a demo's own start
    max_steps: int
    settle_steps: int | None = None    # None: the settings' (a demo's states[0] is already settled: 0)
    model_file: str | None = None      # a demo's MJCF: its fixture poses complete ``init_state``
    init_source: str = "benchmark"     # "benchmark" or the demo file the scene came from
    video_path: str | None = None
    reference: str | None = None       # inverse_dynamics: expert demo file ...
    reference_demo: str | None = None  # ... and demo whose future frames are tracked


@dataclass
class WorkerSettings:
    views: tuple[str, ...]
    obs_frames: int
    replan_every: int
    camera_size: int = 128
    render: str = "lazy"
    settle_steps: int = 5
    video_fps: int = 20
    reset_mode: str = "scene"


def _worker_main(wid: int, settings: WorkerSettings, job_q, req_q, act_q) -> None:
    """Worker process: one env, rollouts pulled from ``job_q``, observations to ``req_q``,
    action chunks from ``act_q``."""
    os.environ.setdefault("MUJOCO_GL", "egl")
    from .libero.envs import LiberoEnv  # no torch in workers: the policy lives in the main process

    env, env_key = None, None
    try:
        while True:
            job: RolloutJob | None = job_q.get()
            if job is None:
                break
            try:
                req_q.put(("start", wid, job.id, None))
                t_create = time.time()
                key = (job.spec, job.max_steps)
                if env is None or env_key != key:
                    if env is not None:
                        env.close()
                    env = LiberoEnv(job.spec, seed=job.rollout_seed, camera_size=settings.camera_size,
                                    render=settings.render, views=settings.views, obs_frames=settings.obs_frames,
                                    replan_every=settings.replan_every, max_steps=job.max_steps,
                                    settle_steps=settings.settle_steps, reset_mode=settings.reset_mode)
                    env_key = key
                t_start = time.time()
                env.record_video = job.video_path is not None
                obs = env.reset(init_state=_job_scene(job, env), seed=job.rollout_seed, settle_steps=job.settle_steps)
                reset_s = env.last_reset_s
                n_calls = 0
                while True:
                    req_q.put(("obs", wid, job.id, (obs, int(env.t))))
                    msg = act_q.get()
                    if msg[0] != "act":
                        raise RuntimeError(f"worker {wid}: unexpected message {msg[0]!r}")
                    n_calls += 1
                    env.execute_chunk(msg[1])
                    if env.done:
                        break
                    obs = env.observation()
                video = None
                if job.video_path:
                    video = _write_video(job.video_path, env.video_frames, settings.video_fps, env.success)
                result = {"success": bool(env.success), "steps": int(env.t), "wall_time_s": time.time() - t_start,
                          "env_create_s": t_start - t_create, "reset_s": reset_s,
                          "n_policy_calls": n_calls, "n_renders": int(env.n_renders), "video": video, "worker": wid}
                req_q.put(("done", wid, job.id, result))
            except Exception:
                req_q.put(("error", wid, job.id, traceback.format_exc()))
                return
    finally:
        if env is not None:
            env.close()


def _job_scene(job: RolloutJob, env) -> Any:
    """The scene a rollout starts from, completed with the demo's fixture poses (parsed from its
    ``model_file`` against the env's fixture bodies) when the job came from an official file."""
    if job.model_file is None:
        return job.init_state
    from .libero.scene import Scene, fixtures_from_model_xml

    sc = job.init_state if isinstance(job.init_state, Scene) else Scene(np.asarray(job.init_state, np.float64))
    fx = fixtures_from_model_xml(job.model_file, env._rs, where=f"{job.init_source} {job.reference_demo} model_file")
    return Scene(sc.state, {**fx, **sc.fixtures}, sc.controller_joints, sc.gripper_action, sc.warmstart)


def _write_video(path: str, frames: list[np.ndarray], fps: int, success: bool) -> str | None:
    if not frames:
        return None
    import imageio

    p = Path(path)
    p = p.with_name(f"{p.stem}_{'success' if success else 'fail'}{p.suffix}")
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=f".{p.stem}.", suffix=p.suffix)
    os.close(fd)
    try:
        imageio.mimwrite(tmp, frames, fps=fps, macro_block_size=1)
        os.chmod(tmp, 0o644)
        os.replace(tmp, p)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return str(p)


# ----------------------------------------------------------------------------- policy
class _Policy:
    """Wraps a Method (or anything with ``predict_action`` and a ``cfg``) for batched calls on
    uint8 observation histories (B, V, To, 3, H, W) in LIBERO's stored orientation.

    ``frame_size`` (H, W): frames of another size are resized to it (bilinear, antialiased, like
    :meth:`_Reference._resize`) before the method sees them (``evaluate(resize_frames=True)``)."""

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

    def __call__(self, obs: np.ndarray, next_obs: np.ndarray | None = None) -> np.ndarray:
        """Action chunks (B, H, 7): ``predict_action`` on ``obs``, or, with ``next_obs`` (uint8
        (B, V, Tn, 3, H, W), same orientation as ``obs``), ``infer_action(obs, next_obs)``."""
        import torch

        t0 = time.time()
        if self.flip_vertical:
            obs = obs[..., ::-1, :]
            if next_obs is not None:
                next_obs = next_obs[..., ::-1, :]
        x = self._resize(torch.from_numpy(np.ascontiguousarray(obs)).to(self.device))
        fn = "predict_action" if next_obs is None else "infer_action"
        with torch.no_grad():
            if next_obs is None:
                a = self.method.predict_action({"obs": x})
            else:
                if next_obs.shape[0] != obs.shape[0]:
                    raise RuntimeError(f"next_obs batch {next_obs.shape[0]} != obs batch {obs.shape[0]}")
                nx = self._resize(torch.from_numpy(np.ascontiguousarray(next_obs)).to(self.device))
                a = self.method.infer_action({"obs": x}, nx)
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


class _Reference:
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
                from .data_sources import DataError
                raise DataError(f"demo file not found: {path}")
            f = self._files[path] = h5py.File(path, "r")
        return f

    def convention(self, path: str) -> tuple[int, bool]:
        """(frame offset d, frames stored upright) of a file."""
        if path not in self._conventions:
            from .data_sources import file_conventions

            conv, align = file_conventions(self._file(path)["data"].attrs, path)
            align_off, upright = (1 if align == "after_action" else 0), conv == "opencv"
            self._conventions[path] = (align_off, upright)
        return self._conventions[path]

    def check_demo(self, path: str, demo: str, frames: bool = True) -> int:
        """Validates ``data/<demo>`` (a scene to start from; with ``frames``, both views of equal
        length); returns its length."""
        from .data_sources import DataError

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
        from .libero.scene import SCENE_ATTR, Scene

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


def demo_init_overlap(paths: Sequence[str], task: str, condition: str = "id", ood_margin: float = 0.03,
                      ood_seed: int = 0, tol: float = 0.01) -> list[tuple[str, str, int]]:
    """Demos whose start coincides with one of the benchmark's evaluation init states of
    (task, condition): ``[(file, demo, init state index)]``. A demo's start is its ``uwmbench_scene``
    state, ``init_state`` or ``states[0]``; it matches init state i when the first half of the
    flattened state after the time (all of it qpos, since nq >= nv: robot joints and object poses)
    is within ``tol`` everywhere (LIBERO's own files start after 5 settle steps, which move objects
    by millimetres). Demos collected from the init states (``init_state_index`` >= 0) are
    matched by that index. Training on such demos makes ID numbers train-on-test."""
    import h5py

    from .libero.scene import SCENE_ATTR, Scene
    from .libero.tasks import get_task, load_init_states

    spec = get_task(task, condition, ood_margin=ood_margin, ood_seed=ood_seed)
    bench = np.asarray(load_init_states(spec) if condition == "id" else load_init_states(spec, 50), np.float64)
    hits = []
    for path in paths:
        with h5py.File(path, "r") as f:
            if "data" not in f:
                continue
            for demo in sorted(f["data"].keys(), key=lambda k: int(k.split("_")[-1]) if k.split("_")[-1].isdigit() else 0):
                g = f["data"][demo]
                idx = int(g.attrs.get("init_state_index", -1))
                if idx >= 0:
                    hits.append((str(path), demo, idx))
                    continue
                if SCENE_ATTR in g.attrs:
                    start = Scene.from_json(g.attrs[SCENE_ATTR]).state
                elif "init_state" in g.attrs:
                    start = np.asarray(g.attrs["init_state"], np.float64)
                elif "states" in g:
                    start = np.asarray(g["states"][0], np.float64)
                else:
                    continue
                if start.shape[0] != bench.shape[1]:
                    continue  # another task or condition
                nq = (bench.shape[1] - 1) // 2 + 1  # [time, qpos (nq), qvel (nv)], nq >= nv
                d = np.abs(bench[:, 1:nq] - start[None, 1:nq]).max(axis=1)
                i = int(np.argmin(d))
                if d[i] <= tol:
                    hits.append((str(path), demo, i))
    return hits


def _reference_path(reference: Any, task: str, condition: str, n_tasks: int, n_conditions: int) -> str:
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


def _resolve_policy(policy: Any, device: str | None, weights: str = "auto") -> tuple[Any, str, bool | None, str]:
    """-> (method, checkpoint string, flip_vertical from the checkpoint's config or None, weights
    used: "ema" or "raw"). ``weights="auto"``: the EMA weights when the checkpoint has them."""
    if weights not in WEIGHTS:
        raise ConfigError(f"weights={weights!r} is not one of {WEIGHTS}")
    if isinstance(policy, (str, os.PathLike)):
        from .checkpoint import load_method, resolve_checkpoint

        ckpt = resolve_checkpoint(policy)
        dev = device if device and device != "auto" else _auto_device()
        use_ema = weights == "ema" or (weights == "auto" and (ckpt / "ema.safetensors").is_file())
        method = load_method(ckpt, device=dev, ema=use_ema)
        return method, str(ckpt), _checkpoint_flip(ckpt), "ema" if use_ema else "raw"
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


def _auto_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _checkpoint_flip(ckpt: Path) -> bool | None:
    """``data.flip_vertical`` of the run that produced the checkpoint (the loader's flip)."""
    f = Path(ckpt) / "config.yaml"
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
    from .checkpoint import META_FILE, read_checkpoint_meta
    from .data_sources import DataError

    v = read_checkpoint_meta(ckpt).get("frame_size")
    if v is None:
        return None
    try:
        h, w = (int(x) for x in v)
    except (TypeError, ValueError):
        raise DataError(f"{Path(ckpt) / META_FILE}: frame_size={v!r} is not [H, W]") from None
    return h, w


# ----------------------------------------------------------------------------- evaluate
def evaluate(policy: Any, tasks: Sequence[str], conditions: Sequence[str] = ("id", "ood"), n_rollouts: int = 50,
             seed: int = 0, num_workers: int = 2, max_steps: int | None = None, replan_every: int = 16,
             obs_frames: int | None = None, video_dir: str | os.PathLike | None = None,
             video_episodes: int | None = None,
             row_sink: Callable[[dict[str, Any]], None] | None = None, run_meta: dict[str, Any] | None = None,
             out_dir: str | os.PathLike | None = None, camera_size: int = 128, render: str = "lazy",
             settle_steps: int = 5, ood_margin: float = 0.03, ood_seed: int = 0, flip_vertical: bool | None = None,
             device: str | None = "auto", resume: bool = True, progress: bool = True,
             episodes: Sequence[int] | None = None, mode: str = "policy",
             reference: str | os.PathLike | dict[str, Any] | None = None,
             resize_frames: bool = False,
             init_from: str | os.PathLike | dict[str, Any] | None = None, reset_mode: str = "scene",
             weights: str = "auto") -> "pd.DataFrame":  # noqa: F821
    """Roll out ``policy`` on every (task, condition), ``n_rollouts`` episodes each.

    policy        a checkpoint/run folder, a :class:`Method`, or a zero-argument factory of one.
    num_workers   env processes; 0 runs everything in this process, one env, batch 1.
    obs_frames    frames of history; default the method's ``cfg.obs_frames``.
    render        "lazy" (only the frames the policy reads) or "every_step".
    flip_vertical flip frames before the policy (the training loader's flip); default: the
                  checkpoint's ``data.flip_vertical``, else True (train.yaml's default).
    run_meta      columns copied into every row (run_id, sweep, cell, method, variant, seed =
                  training seed, checkpoint, ...).
    video_dir     MP4 per recorded rollout (``<task>_<condition>_epNNN_{success|fail}.mp4``, all
                  cameras side by side, every step rendered for those rollouts only); rows carry
                  the path in ``video``.
    video_episodes record only episodes ``< video_episodes`` (default: every episode).
    out_dir       where ``rollouts.jsonl`` is appended (and read back to skip done rollouts).
    episodes      explicit episode indices instead of ``range(n_rollouts)``.
    mode          "policy": ``predict_action(obs)``; "inverse_dynamics": track expert demos with
                  ``infer_action(obs, next_obs)`` (the method must declare INVERSE_DYNAMICS).
                  Episode i resets to ``data/demo_i/states[0]`` of the reference file and, at
                  every replanning step t, ``next_obs`` = the demo's frames t+Ha+k (k < Tn,
                  clamped to its last frame), see :class:`_Reference`.
    reference     inverse_dynamics: the LIBERO-layout HDF5 of expert demos; ``{task}`` and
                  ``{condition}`` in the path are replaced, or a dict keyed by condition, task
                  or "task/condition".
    reset_mode    "scene" (restore the scene in the compiled model) or "rebuild" (robosuite's hard
                  reset every episode, the public code's way; used by the perf baseline).
    init_from     policy mode: start episode i from the scene of ``data/demo_i`` of this demo file
                  (``{task}``/``{condition}`` replaced, or a dict as ``reference``) instead of the
                  benchmark's init state i: a memorisation check on training demos, not a benchmark
                  number (rows say ``init_source``).
    weights       "auto" (a checkpoint's EMA weights when it was trained with ``trainer.ema`` > 0,
                  else its trained weights), "ema" (required) or "raw"; rows say which (``weights``).
    resize_frames a checkpoint trained on frames of another size than ``camera_size`` is refused
                  (ConfigError naming both sizes); True resizes the camera frames to the training
                  size (bilinear, antialiased) before the policy instead, and logs it.
    Returns a DataFrame with one row per rollout (including ones found done in ``out_dir``).
    """
    import pandas as pd
    import torch

    from .libero.ood import load_init_fixtures
    from .libero.scene import Scene
    from .libero.tasks import get_task, load_init_states

    if isinstance(tasks, str):
        tasks = [tasks]
    conditions = list(conditions)
    bad = [c for c in conditions if c not in ("id", "ood")]
    if bad or not conditions:
        raise ValueError(f"conditions={conditions}: each must be 'id' or 'ood'")
    if not tasks:
        raise ValueError("tasks is empty")
    if n_rollouts < 1 and episodes is None:
        raise ValueError(f"n_rollouts must be >= 1, got {n_rollouts}")
    if num_workers < 0:
        raise ValueError(f"num_workers must be >= 0, got {num_workers}")
    episodes = list(range(n_rollouts)) if episodes is None else [int(e) for e in episodes]
    if mode not in MODES:
        raise ValueError(f"mode={mode!r} must be one of {MODES}")
    if mode == "inverse_dynamics" and reference is None:
        raise ValueError("mode='inverse_dynamics' needs reference=<LIBERO-layout HDF5 of expert demos of the task>")
    if mode == "policy" and reference is not None:
        raise ValueError("reference is only used with mode='inverse_dynamics'")
    if mode == "inverse_dynamics" and init_from is not None:
        raise ValueError("init_from is for mode='policy'; inverse_dynamics starts from its reference demos")
    if init_from is not None and any(e < 0 for e in episodes):
        raise ValueError(f"episodes={episodes}: with init_from episode i starts from data/demo_i, need i >= 0")
    if mode == "inverse_dynamics" and any(e < 0 for e in episodes):
        raise ValueError(f"episodes={episodes}: inverse_dynamics episode i tracks data/demo_i, need i >= 0")

    method, ckpt, ckpt_flip, used_weights = _resolve_policy(policy, device, weights)
    train_size = checkpoint_frame_size(ckpt)
    policy_size = None
    if train_size is not None and train_size != (int(camera_size), int(camera_size)):
        th, tw = train_size
        if not resize_frames:
            from ..config import ConfigError

            fix = f"evaluate with camera_size={th}, or" if th == tw else "the camera renders square frames:"
            raise ConfigError(f"checkpoint {ckpt} was trained on {th}x{tw} frames but camera_size={camera_size} renders "
                              f"{camera_size}x{camera_size}: {fix} set resize_frames=true to resize the camera frames "
                              f"to {th}x{tw} before the policy")
        policy_size = train_size
        log.info("evaluate: resize_frames: camera frames %dx%d are resized to the training size %dx%d of %s "
                 "(bilinear, antialiased) before the policy", camera_size, camera_size, th, tw, ckpt)
    elif resize_frames and ckpt and train_size is None:
        log.warning("evaluate: resize_frames=true but checkpoint %s does not record its training frame size: "
                    "frames are passed at camera_size=%d", ckpt, camera_size)
    if mode == "inverse_dynamics":
        from ..methods.base import INVERSE_DYNAMICS

        caps = getattr(method, "capabilities", frozenset())
        name = getattr(method, "name", type(method).__name__)
        if INVERSE_DYNAMICS not in caps or not callable(getattr(method, "infer_action", None)):
            raise ValueError(f"mode='inverse_dynamics': method {name!r} does not declare the {INVERSE_DYNAMICS!r} "
                             f"capability (it declares {sorted(caps)}); only such methods implement infer_action")
    flip = flip_vertical if flip_vertical is not None else (ckpt_flip if ckpt_flip is not None else True)
    pol = _Policy(method, flip, device, frame_size=policy_size)
    if replan_every < 1 or replan_every > pol.horizon:
        raise ValueError(f"replan_every={replan_every} must be in 1..{pol.horizon} (the method's action_horizon)")
    to = int(obs_frames) if obs_frames is not None else pol.obs_frames
    if to != pol.obs_frames:
        raise ValueError(f"obs_frames={to} but method {pol.name} takes {pol.obs_frames} frames")
    torch.manual_seed(seed)

    meta = dict(run_meta or {})
    if meta.get("mode", mode) != mode:
        raise ValueError(f"run_meta mode={meta['mode']!r} disagrees with mode={mode!r}")
    meta.pop("mode", None)
    base = {"run_id": meta.pop("run_id", ""), "sweep": meta.pop("sweep", ""), "cell": meta.pop("cell", ""),
            "method": meta.pop("method", pol.name), "variant": meta.pop("variant", ""),
            "seed": int(meta.pop("seed", seed)), "checkpoint": str(meta.pop("checkpoint", ckpt)), "mode": mode,
            "weights": used_weights}
    base.update(meta)

    out = Path(out_dir) if out_dir is not None else None
    jsonl = None
    done_rows: dict[tuple, dict] = {}
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        jsonl = out / ROLLOUTS_FILE
        if resume:
            for r in read_jsonl(jsonl):
                done_rows[_row_key(r)] = r

    # ---- jobs, grouped by (task, condition) so that workers keep their env
    jobs: list[RolloutJob] = []
    rows_prev: list[dict] = []
    ref = (_Reference(pol.views, pol.horizon, pol.next_frames, camera_size)
           if mode == "inverse_dynamics" or init_from is not None else None)
    demo_src = reference if mode == "inverse_dynamics" else init_from
    for task in tasks:
        for cond in conditions:
            spec = get_task(task, cond, ood_margin=ood_margin, ood_seed=ood_seed)
            steps = int(max_steps) if max_steps is not None else int(spec.max_steps)
            name = spec.short or spec.key
            pending = []
            rpath = None
            if ref is not None:
                rpath = _reference_path(demo_src, name, cond, len(tasks), len(conditions))
            for ep in episodes:
                rs = rollout_seed(seed, spec.key, cond, ep)
                key = _row_key({**base, "task": name, "condition": cond, "rollout_seed": rs, "episode": ep,
                                "max_steps": steps, "replan_every": replan_every,
                                "init_source": rpath or "benchmark"})
                if key in done_rows:
                    rows_prev.append(done_rows[key])
                else:
                    pending.append((ep, rs))
            if not pending:
                continue
            fixtures = None
            if ref is not None:  # every demo is checked before any env exists
                for ep, _ in pending:
                    ref.check_demo(rpath, f"demo_{ep}", frames=mode == "inverse_dynamics")
            else:
                states = np.asarray(load_init_states(spec, n=max(ep for ep, _ in pending) + 1) if cond == "ood"
                                    else load_init_states(spec))
                fixtures = load_init_fixtures(spec) if cond == "ood" else None
            for ep, rs in pending:
                vp = None
                if video_dir is not None and (video_episodes is None or ep < video_episodes):
                    vp = str(Path(video_dir) / f"{name.replace('/', '__')}_{cond}{'_invdyn' if ref else ''}"
                                               f"_ep{ep:03d}.mp4")
                if ref is not None:
                    scene, model_file = ref.start(rpath, f"demo_{ep}")
                    track = mode == "inverse_dynamics"
                    job = RolloutJob(id=len(jobs), spec=spec, task=name, condition=cond, episode=ep, rollout_seed=rs,
                                     init_state=scene, init_state_index=-1, max_steps=steps, settle_steps=0,
                                     model_file=model_file, init_source=rpath, video_path=vp,
                                     reference=rpath if track else None, reference_demo=f"demo_{ep}")
                else:
                    i = ep % len(states)
                    # a bare state: the fixture poses are drawn from the rollout seed (shipped ID init
                    # states carry none); generated OOD init states come with theirs
                    scene = Scene(states[i], dict(fixtures[i]) if fixtures else {})
                    job = RolloutJob(id=len(jobs), spec=spec, task=name, condition=cond, episode=ep, rollout_seed=rs,
                                     init_state=scene, init_state_index=i, max_steps=steps, video_path=vp)
                jobs.append(job)
    if rows_prev:
        log.info("evaluate: %d rollouts already in %s, skipping them", len(rows_prev), jsonl)

    settings = WorkerSettings(views=pol.views, obs_frames=to, replan_every=replan_every, camera_size=camera_size,
                              render=render, settle_steps=settle_steps,
                              reset_mode=reset_mode)
    new_rows: list[dict] = []

    def finish(job: RolloutJob, result: dict) -> dict:
        row = dict(base)
        row.update(task=job.task, condition=job.condition, episode=job.episode, rollout_seed=job.rollout_seed,
                   success=bool(result["success"]), steps=int(result["steps"]),
                   wall_time_s=float(result["wall_time_s"]), env_create_s=float(result.get("env_create_s", 0.0)),
                   reset_s=float(result.get("reset_s", 0.0)), init_source=job.init_source,
                   eval_seed=int(seed), max_steps=job.max_steps,
                   replan_every=replan_every, obs_frames=to, init_state_index=job.init_state_index,
                   render=settings.render, n_policy_calls=int(result["n_policy_calls"]),
                   n_renders=int(result["n_renders"]), video=result.get("video") or "", suite=job.spec.suite,
                   task_key=job.spec.key)
        if job.reference is not None:
            row.update(reference=job.reference, reference_demo=job.reference_demo)
        if jsonl is not None:
            append_jsonl(jsonl, row)
        if row_sink is not None:
            row_sink(row)
        new_rows.append(row)
        return row

    if jobs:
        bar = _progress(len(jobs), progress)
        try:
            if num_workers == 0:
                _run_serial(jobs, settings, pol, finish, bar, ref)
            else:
                _run_pool(jobs, settings, pol, finish, bar, min(num_workers, len(jobs)), ref=ref)
        finally:
            bar.close()
            if ref is not None:
                ref.close()
    elif ref is not None:
        ref.close()
    cols = ["run_id", "sweep", "cell", "method", "variant", "task", "condition", "seed", "episode", "rollout_seed",
            "success", "steps", "wall_time_s", "checkpoint"]
    df = pd.DataFrame(rows_prev + new_rows)
    if df.empty:
        df = pd.DataFrame(columns=cols)
    rest = [c for c in df.columns if c not in cols]
    df = df[cols + rest].sort_values(["task", "condition", "episode"], kind="stable").reset_index(drop=True)
    df.attrs["policy_calls"] = pol.calls
    df.attrs["policy_batch_sizes"] = list(pol.batch_sizes)
    df.attrs["policy_time_s"] = pol.time_s
    return df


class _Bar:
    def __init__(self, total: int, enabled: bool):
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total, desc="rollouts", unit="ep", disable=not enabled, dynamic_ncols=True)
        self.n = 0
        self.ok = 0

    def update(self, row: dict) -> None:
        self.n += 1
        self.ok += int(bool(row["success"]))
        self.bar.set_postfix(success=f"{self.ok / self.n:.2f}", last=f"{row['task']}/{row['condition']}")
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()


def _progress(total: int, enabled: bool) -> _Bar:
    return _Bar(total, enabled)


def _next_obs(ref: _Reference | None, job: RolloutJob, t: int) -> np.ndarray | None:
    if ref is None or job.reference is None:
        return None
    return ref.next_obs(job.reference, job.reference_demo, t)


def _run_serial(jobs: list[RolloutJob], s: WorkerSettings, pol: _Policy, finish, bar: _Bar,
                ref: _Reference | None = None) -> None:
    """One env in this process, batch-1 policy calls (the public code's way, and the fallback)."""
    from .libero.envs import LiberoEnv

    env, env_key = None, None
    try:
        for job in jobs:
            t_create = time.time()
            key = (job.spec, job.max_steps)
            if env is None or env_key != key:
                if env is not None:
                    env.close()
                env = LiberoEnv(job.spec, seed=job.rollout_seed, camera_size=s.camera_size, render=s.render,
                                views=s.views, obs_frames=s.obs_frames, replan_every=s.replan_every,
                                max_steps=job.max_steps, settle_steps=s.settle_steps, reset_mode=s.reset_mode)
                env_key = key
            t0 = time.time()
            env.record_video = job.video_path is not None
            obs = env.reset(init_state=_job_scene(job, env), seed=job.rollout_seed, settle_steps=job.settle_steps)
            reset_s = env.last_reset_s
            calls = 0
            while True:
                nxt = _next_obs(ref, job, env.t)
                chunk = pol(obs[None], None if nxt is None else nxt[None])[0]
                calls += 1
                env.execute_chunk(chunk)
                if env.done:
                    break
                obs = env.observation()
            video = _write_video(job.video_path, env.video_frames, s.video_fps, env.success) if job.video_path else None
            bar.update(finish(job, {"success": env.success, "steps": env.t, "wall_time_s": time.time() - t0,
                                    "env_create_s": t0 - t_create, "reset_s": reset_s,
                                    "n_policy_calls": calls, "n_renders": env.n_renders, "video": video}))
    finally:
        if env is not None:
            env.close()


def _run_pool(jobs: list[RolloutJob], s: WorkerSettings, pol: _Policy, finish, bar: _Bar, n_workers: int,
              poll_s: float = 1.0, ref: _Reference | None = None) -> None:
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    job_q, req_q = ctx.Queue(), ctx.Queue()
    act_qs = [ctx.Queue() for _ in range(n_workers)]
    procs = [ctx.Process(target=_worker_main, args=(w, s, job_q, req_q, act_qs[w]), daemon=True,
                         name=f"uwmbench-eval-{w}") for w in range(n_workers)]
    for job in jobs:
        job_q.put(job)
    for _ in procs:
        job_q.put(None)
    by_id = {j.id: j for j in jobs}
    state = ["idle"] * n_workers       # idle | resetting | waiting | stepping
    pending: dict[int, tuple[int, np.ndarray, int]] = {}  # worker -> (job id, obs history, env step)
    n_done = 0
    try:
        for p in procs:
            p.start()
        while n_done < len(jobs):
            try:
                kind, wid, jid, payload = req_q.get(timeout=poll_s)
            except queue.Empty:
                dead = [f"worker {w} (exit code {p.exitcode})" for w, p in enumerate(procs)
                        if not p.is_alive() and state[w] != "idle"]
                if dead:
                    raise RuntimeError(f"evaluation worker died: {', '.join(dead)}")
                if all(not p.is_alive() for p in procs):
                    raise RuntimeError(f"all evaluation workers exited with {len(jobs) - n_done} rollouts left")
                kind = None
            if kind == "start":
                state[wid] = "resetting"
            elif kind == "obs":
                state[wid] = "waiting"
                pending[wid] = (jid, payload[0], payload[1])
            elif kind == "done":
                state[wid] = "idle"
                n_done += 1
                bar.update(finish(by_id[jid], payload))
            elif kind == "error":
                job = by_id.get(jid)
                raise RuntimeError(f"evaluation worker {wid} failed on {job.task if job else '?'}/"
                                   f"{job.condition if job else '?'} episode {job.episode if job else '?'}:\n{payload}")
            # batch: once no worker is mid-chunk, every worker that will ask soon has asked
            if pending and "stepping" not in state:
                wids = sorted(pending)
                nxt = [_next_obs(ref, by_id[pending[w][0]], pending[w][2]) for w in wids]
                chunks = pol(np.stack([pending[w][1] for w in wids]),
                             None if nxt[0] is None else np.stack(nxt))
                for w, c in zip(wids, chunks):
                    act_qs[w].put(("act", c))
                    state[w] = "stepping"
                pending.clear()
        for p in procs:
            p.join(timeout=30)
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()
        for p in procs:
            p.join(timeout=10)
        for q in [job_q, req_q, *act_qs]:
            q.cancel_join_thread()
            q.close()


# ----------------------------------------------------------------------------- summary
def summarize(df: "pd.DataFrame") -> "pd.DataFrame":  # noqa: F821
    """Success rate per (method, task, condition[, mode when rows mix modes]) with the binomial
    standard error."""
    if df.empty:
        return df
    keys = ["method", "task", "condition"] + (["mode"] if "mode" in df.columns and df["mode"].nunique() > 1 else [])
    g = df.groupby(keys, sort=True)
    s = g.agg(n=("success", "size"), success_rate=("success", "mean"), mean_steps=("steps", "mean"),
              wall_time_s=("wall_time_s", "sum")).reset_index()
    s["stderr"] = np.sqrt(s["success_rate"] * (1 - s["success_rate"]) / s["n"].clip(lower=1))
    return s


def _markdown(df: "pd.DataFrame") -> str:  # noqa: F821
    cols = list(df.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, r in df.iterrows():
        lines.append("| " + " | ".join(f"{v:.3f}" if isinstance(v, float) else str(v) for v in r) + " |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- CLI
@dataclass
class EvaluateConfig:
    checkpoint: str | None = None        # checkpoint or run folder
    method: dict[str, Any] | None = None  # or: an untrained method, `method=bc method.size=tiny` (smoke runs)
    tasks: list[str] = field(default_factory=lambda: ["book_caddy"])
    conditions: list[str] = field(default_factory=lambda: ["id", "ood"])
    n_rollouts: int = 50
    seed: int = 0
    workers: int = 2
    max_steps: int | None = None
    replan_every: int = 16
    obs_frames: int | None = None
    camera_size: int = 128
    render: str = "lazy"
    settle_steps: int = 5
    ood_margin: float = 0.03
    ood_seed: int = 0
    out: str | None = None
    video: bool = False
    flip_vertical: bool | None = None
    device: str = "auto"
    resume: bool = True
    run_id: str = ""
    sweep: str = ""
    cell: str = ""
    variant: str = ""
    train_seed: int | None = None
    mode: str = "policy"                 # policy | inverse_dynamics (needs reference)
    reference: str | None = None         # inverse_dynamics: expert demos HDF5 ({task}, {condition} replaced)
    resize_frames: bool = False          # camera_size != the checkpoint's training frame size: resize (else refuse)
    init_from: str | None = None         # policy mode: start episode i from data/demo_i of these demos (memorisation check)
    weights: str = "auto"                # auto (EMA weights when the checkpoint has them) | ema | raw


def main(argv: list[str]) -> int:
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__)
        print("options (key=value):")
        for f in dataclasses.fields(EvaluateConfig):
            d = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
            print(f"  {f.name}={d}")
        return 0
    from uwmbench.config import ConfigError, build_method_from_config, error_message, load_config, typed

    cfg = typed(load_config("evaluate", argv), EvaluateConfig, "evaluate")
    if (cfg.checkpoint is None) == (cfg.method is None):
        raise ConfigError("give exactly one of checkpoint=PATH or method=NAME (untrained, for smoke runs, "
                          "e.g. method=bc method.size=tiny)")
    if cfg.mode not in MODES:
        raise ConfigError(f"mode={cfg.mode!r} must be one of {list(MODES)}")
    if cfg.render not in ("lazy", "every_step"):
        raise ConfigError(f"render={cfg.render!r} must be lazy or every_step")
    from .libero.tasks import resolve

    for t in cfg.tasks:
        try:
            resolve(str(t))
        except KeyError as e:
            raise ConfigError(f"tasks: {error_message(e)}") from None
    if cfg.checkpoint is not None:
        policy: Any = cfg.checkpoint
    else:
        policy = build_method_from_config(cfg.method)
    out = Path(cfg.out) if cfg.out else Path("runs") / "eval" / time.strftime("%Y%m%d-%H%M%S")
    meta = {"run_id": cfg.run_id, "sweep": cfg.sweep, "cell": cfg.cell, "variant": cfg.variant}
    if cfg.train_seed is not None:
        meta["seed"] = cfg.train_seed
    df = evaluate(policy, cfg.tasks, conditions=cfg.conditions, n_rollouts=cfg.n_rollouts, seed=cfg.seed,
                  num_workers=cfg.workers, max_steps=cfg.max_steps, replan_every=cfg.replan_every,
                  obs_frames=cfg.obs_frames, video_dir=(out / "videos") if cfg.video else None, run_meta=meta,
                  out_dir=out, camera_size=cfg.camera_size, render=cfg.render, settle_steps=cfg.settle_steps,
                  ood_margin=cfg.ood_margin, ood_seed=cfg.ood_seed, flip_vertical=cfg.flip_vertical,
                  device=cfg.device, resume=cfg.resume, mode=cfg.mode, reference=cfg.reference, init_from=cfg.init_from,
                  resize_frames=cfg.resize_frames, weights=cfg.weights)
    summary = summarize(df)
    md = _markdown(summary)
    _atomic_write(out / "summary.csv", summary.to_csv(index=False))
    _atomic_write(out / "summary.md", md + "\n")
    print(md)
    print(f"\nrows: {out / ROLLOUTS_FILE}\nsummary: {out / 'summary.csv'}", file=sys.stderr)
    return 0


__all__ = ["evaluate", "rollout_seed", "summarize", "append_jsonl", "read_jsonl", "main", "EvaluateConfig"]
