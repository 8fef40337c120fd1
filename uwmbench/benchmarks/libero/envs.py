"""LIBERO environment wrapper for policy evaluation: observation history, chunked action
execution, seeds, per-suite horizons, success check and *lazy* camera rendering.

Rendering is the dominant cost of a LIBERO step on a CPU (two 128x128 cameras ~ 0.13 s vs
0.013 s of physics). A policy that replans every ``k`` steps and looks at ``To`` frames only
consumes ``To`` frames per ``k`` steps, so with ``render="lazy"`` the cameras are rendered only
at those steps. The frames are bit-identical to what the fully rendered environment returns:

robosuite samples its camera observables inside the physics sub-step loop of ``step()`` (at
the first sub-step of each control period, not at the end of the step), so re-rendering
"later" would give a slightly different image. Instead we keep robosuite's observables and
their sampling clock untouched and put a *gate* in front of the camera sensor functions: the
gated sensor renders (through robosuite's own sensor, hence the same sim state, camera, size
and image convention) only while the gate is open and returns a blank frame otherwise. Which
steps open the gate follows from the replanning schedule (see :meth:`LiberoEnv.frame_needed`).
``render="every_step"`` opens it at every step (what the public UWM evaluation pays for).

``engine="fast"`` (the default) computes the same states and frames as robosuite's own code,
faster: one MuJoCo forward pass per physics sub-step instead of three (``fast_physics.py``) and
camera renders given only the geoms inside the camera's view frustum (``culling.py``); both are
checked bit for bit against ``engine="robosuite"`` by the tests.

Frames are returned exactly as robosuite renders them into LIBERO's HDF5 datasets (OpenGL
convention: upside down); the data loader and the methods handle the orientation the same way
for demos and rollouts. :func:`upright` flips a frame for viewing (videos).
"""
from __future__ import annotations

import contextlib
import os
import sys
import time
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from uwmbench.benchmarks.evaluation.runner import ENGINES  # "fast" (robosuite's results, computed faster) | "robosuite"
from . import culling, model_cache
from .fast_physics import FastPhysics, supported
from .scene import Scene, SceneError, apply_scene, capture_scene

os.environ.setdefault("MUJOCO_GL", "egl")
if os.environ["MUJOCO_GL"] in ("egl", "osmesa"):
    os.environ.setdefault("PYOPENGL_PLATFORM", os.environ["MUJOCO_GL"])
if os.environ["MUJOCO_GL"] == "egl" and os.environ.get("CUDA_VISIBLE_DEVICES") == "" \
        and "MUJOCO_EGL_DEVICE_ID" not in os.environ:
    # a job without GPUs (submitit's local executor sets CUDA_VISIBLE_DEVICES=""): robosuite would
    # parse the empty list and fail; render on the first EGL device (Mesa's on a CPU machine)
    os.environ["MUJOCO_EGL_DEVICE_ID"] = "0"

# dataset view name -> robosuite camera name
VIEW_CAMERAS: dict[str, str] = {
    "agentview_rgb": "agentview",
    "eye_in_hand_rgb": "robot0_eye_in_hand",
}
DEFAULT_VIEWS: tuple[str, ...] = ("agentview_rgb", "eye_in_hand_rgb")
RENDER_MODES = ("lazy", "every_step")
# "scene": keep the compiled model and restore the scene (ours); "rebuild": robosuite's hard reset,
# which recompiles the MJCF every episode (LIBERO's default, what the public UWM evaluation pays)
RESET_MODES = ("scene", "rebuild")
ACTION_DIM = 7
# what the robot does while objects settle after an init state is loaded: stay, gripper open
SETTLE_ACTION = np.array([0, 0, 0, 0, 0, 0, -1], dtype=np.float64)


def upright(frame: np.ndarray) -> np.ndarray:
    """Flip a frame in LIBERO's stored orientation (upside down) for viewing."""
    return np.ascontiguousarray(frame[::-1])


@dataclass
class ChunkResult:
    steps: int      # policy steps executed by this call
    success: bool   # task solved (episode over)
    done: bool      # success or max_steps reached


class LiberoEnv:
    """One LIBERO task in one process. Typical use::

        env = make_env(spec, seed=0)
        obs = env.reset(init_state=3)           # (V, To, 3, H, W) uint8
        while not env.done:
            chunk = policy(obs)                 # (16, 7)
            env.execute_chunk(chunk)            # runs replan_every of them open loop
            obs = env.observation()

    ``t`` counts policy steps from 0; the ``settle_steps`` no-op steps after loading the init
    state have negative indices (their frames may fill the first observation history).
    """

    def __init__(self, spec: Any, seed: int = 0, camera_size: int = 128, render: str = "lazy",
                 views: Sequence[str] = DEFAULT_VIEWS, obs_frames: int = 2, replan_every: int = 16,
                 max_steps: int | None = None, settle_steps: int = 5,
                 init_states: np.ndarray | None = None, record_video: bool = False, reset_mode: str = "scene",
                 engine: str = "fast", use_model_cache: bool = True):
        if engine not in ENGINES:
            raise ValueError(f"engine={engine!r} is not one of {ENGINES}")
        if reset_mode not in RESET_MODES:
            raise ValueError(f"reset_mode={reset_mode!r} is not one of {RESET_MODES}")
        self.reset_mode = reset_mode
        if render not in RENDER_MODES:
            raise ValueError(f"render={render!r} is not one of {RENDER_MODES}")
        unknown = [v for v in views if v not in VIEW_CAMERAS]
        if unknown or not views:
            raise ValueError(f"views={list(views)}: unknown view(s) {unknown}; known: {sorted(VIEW_CAMERAS)}")
        if obs_frames < 1:
            raise ValueError(f"obs_frames must be >= 1, got {obs_frames}")
        if replan_every < 1:
            raise ValueError(f"replan_every must be >= 1, got {replan_every}")
        if settle_steps < 0:
            raise ValueError(f"settle_steps must be >= 0, got {settle_steps}")
        if not os.path.isfile(spec.bddl_file):
            raise FileNotFoundError(f"BDDL file of task {getattr(spec, 'task_name', spec)} not found: {spec.bddl_file}")
        self.spec = spec
        self.views = tuple(views)
        self.camera_size = int(camera_size)
        self.render_mode = render
        self.obs_frames = int(obs_frames)
        self.replan_every = int(replan_every)
        self.max_steps = int(max_steps if max_steps is not None else spec.max_steps)
        if self.max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {self.max_steps}")
        self.settle_steps = int(settle_steps)
        self.record_video = bool(record_video)
        self._init_states = None if init_states is None else np.asarray(init_states)
        self._seed = int(seed)

        from libero.libero.envs import OffScreenRenderEnv

        if "torch" in sys.modules:
            # Mesa's software OpenGL loads its LLVM into the process with the first GL context;
            # importing triton (diffusers, torch.compile) after that segfaults, before it does not
            with contextlib.suppress(Exception):
                import triton  # noqa: F401

        cams = [VIEW_CAMERAS[v] for v in self.views]
        # hard_reset=False: a reset keeps the compiled model (a rebuild costs ~2 s); everything a
        # rebuild would have cleared is restored by apply_scene (see scene.py)
        # engine "fast" loads the compiled model from the model cache (model_cache.py; the same
        # mjModel, bit for bit, without compiling the MJCF again in every worker)
        self._models = model_cache.CompiledModels()
        with self._models.active() if engine == "fast" and use_model_cache else contextlib.nullcontext():
            self._env = OffScreenRenderEnv(bddl_file_name=spec.bddl_file, camera_names=cams,
                                           camera_heights=self.camera_size, camera_widths=self.camera_size,
                                           ignore_done=True, hard_reset=False)
        self.model_cache = self._models.status  # "hit", "miss", "off" or None (not used)
        self._rs = self._env.env  # the robosuite environment
        self._init_fixtures: list | None = None
        self.scene: Scene | None = None   # the scene the current episode started from
        self.last_reset_s = 0.0   # last reset's wall time without camera rendering (scene + settle physics)
        self.render_s = 0.0       # time spent rendering cameras, cumulative
        self._gate_open = False
        self._renders: dict[str, int] = {c: 0 for c in cams}  # real renders per camera (a check)
        self._install_gate()
        # engine "fast": robosuite's simulation and pixels, computed faster: one forward pass per
        # physics sub-step (fast_physics.py) and cameras given only the geoms in their view (culling.py)
        self.engine = engine
        why = supported(self._rs) if engine == "fast" else None
        if why is not None:
            import warnings

            warnings.warn(f"engine='fast': the fast physics step is not available for "
                          f"{getattr(spec, 'key', spec)} ({why}); using robosuite's step", stacklevel=2)
        self._fast = FastPhysics() if engine == "fast" and why is None else None
        if engine == "fast" and getattr(self._rs.sim, "_render_context_offscreen", None) is not None:
            self._install_culling()  # once here, not in the first reset
        self._frames: dict[int, dict[str, np.ndarray]] = {}
        self.video_frames: list[np.ndarray] = []
        self.t = 0
        self.success = False
        self.done = True
        self.n_renders = 0  # camera frames rendered (all cameras) in the current episode

    def _install_culling(self) -> None:
        """Culling on the current render context (idempotent; a rebuild makes a new context),
        with the convex hulls kept in the model cache beside the compiled model."""
        ctx = self._rs.sim._render_context_offscreen
        if getattr(ctx, "_uwm_culling", None) is None:
            m = ctx.model._model
            key = self._models.key if m is self._models.model else None  # a rebuild compiles anew
            culling.install(ctx, hulls=lambda: model_cache.cached_hulls(key, lambda: culling.mesh_hulls(m)))

    # ------------------------------------------------------------------ render gate
    def _install_gate(self) -> None:
        rs = self._rs
        original = rs._create_camera_sensors  # bound method of the class

        def create_gated(cam_name, cam_w, cam_h, cam_d, cam_segs, modality="image"):
            sensors, names = original(cam_name, cam_w, cam_h, cam_d, cam_segs, modality)
            return [self._gated(s, n, cam_name, cam_h, cam_w) for s, n in zip(sensors, names)], names

        # an instance attribute shadows the method: robosuite re-creates its sensors on every
        # hard reset through this call, so the gate survives resets
        rs._create_camera_sensors = create_gated
        for name, obs in rs._observables.items():  # the ones created by the constructor
            cam = name[:-len("_image")] if name.endswith("_image") else None
            if cam in self._renders:
                obs.set_sensor(self._gated(obs._sensor, name, cam, self.camera_size, self.camera_size))

    def _gated(self, fn, name: str, cam: str, h: int, w: int):
        if not name.endswith("_image"):
            return fn  # depth / segmentation sensors are not used here
        from robosuite.utils.observables import sensor

        blank = np.zeros((h, w, 3), dtype=np.uint8)

        @sensor(modality=fn.__modality__)
        def gated(obs_cache):
            if self._gate_open:
                self._renders[cam] += 1
                t = time.perf_counter()
                if self.engine == "fast":  # a rebuild makes a new render context: (re)install, idempotent
                    self._install_culling()
                try:
                    return fn(obs_cache)
                finally:
                    self.render_s += time.perf_counter() - t
            return blank

        gated.__wrapped__ = fn
        return gated

    # ------------------------------------------------------------------ schedule
    def frame_needed(self, t: int) -> bool:
        """Whether the frame of step index ``t`` is part of an observation history the policy
        will read: replanning happens at t = 0, k, 2k, ... < max_steps and reads t-To+1 .. t."""
        if self.render_mode == "every_step" or self.record_video:
            return True
        if t > self.max_steps - 1:
            return False
        p = 0 if t <= 0 else -(-t // self.replan_every) * self.replan_every  # next replanning point >= t
        if p >= self.max_steps:
            return False
        return p - t < self.obs_frames

    # ------------------------------------------------------------------ episode
    @property
    def init_states(self) -> np.ndarray:
        if self._init_states is None:
            from .tasks import load_init_states

            self._init_states = np.asarray(load_init_states(self.spec))
        return self._init_states

    @property
    def init_fixtures(self) -> list | None:
        """Fixture poses stored with the init states (generated OOD init states), else None."""
        if self._init_fixtures is None and getattr(self.spec, "condition", "id") == "ood":
            from .ood import load_init_fixtures

            self._init_fixtures = load_init_fixtures(self.spec)
        return self._init_fixtures

    def seed(self, seed: int) -> None:
        self._seed = int(seed)
        np.random.seed(self._seed)

    def reset(self, init_state: "int | np.ndarray | Scene | None" = None, seed: int | None = None,
              settle_steps: int | None = None) -> np.ndarray:
        """Start an episode from a scene. ``init_state``: an index into the task's init states
        (wraps around), a flattened MuJoCo state, a :class:`Scene` (state + fixture poses + controller
        state, e.g. a demo's), or None for a seeded random placement (LIBERO's own samplers).
        ``seed`` (default: the env's) draws whatever the scene does not fix: the placement when
        ``init_state`` is None, the fixture poses when it is a bare state. The episode is a pure
        function of (scene, seed): the simulator is not rebuilt, and every piece of state an earlier
        episode could leave behind is reset (see :func:`apply_scene`). ``settle_steps`` overrides the
        env's no-op steps after the scene is loaded (0 for a demo's states[0], which is settled).
        Returns the first observation history (V, To, 3, H, W)."""
        t_start, r_start = time.time(), self.render_s
        settle = self.settle_steps if settle_steps is None else int(settle_steps)
        if settle < 0:
            raise ValueError(f"settle_steps must be >= 0, got {settle}")
        np.random.seed(self._seed if seed is None else int(seed))
        self._frames = {}
        self.video_frames = []
        self.success = False
        self.done = False
        self.n_renders = 0
        self._gate_open = False
        self._rs.hard_reset = self.reset_mode == "rebuild"
        try:
            self._env.reset()  # soft: robosuite bookkeeping + a placement drawn from the seeded RNG (no render)
        finally:
            self._rs.hard_reset = False
        drawn = capture_scene(self._rs)
        if init_state is None:
            scene = Scene(state=drawn.state, fixtures=drawn.fixtures)
        elif isinstance(init_state, Scene):
            scene = Scene(init_state.state, {**drawn.fixtures, **init_state.fixtures}, init_state.controller_joints,
                          init_state.gripper_action, init_state.warmstart)
        else:
            fixtures = drawn.fixtures
            state = init_state
            if isinstance(init_state, (int, np.integer)):
                states = self.init_states
                i = int(init_state) % len(states)
                state = states[i]
                stored = self.init_fixtures
                if stored is not None and stored[i]:
                    fixtures = {**fixtures, **stored[i]}
            scene = Scene(state=np.asarray(state, dtype=np.float64).reshape(-1), fixtures=fixtures)
        try:
            apply_scene(self._rs, scene, where=f"init state of {getattr(self.spec, 'key', self.spec)}")
        except SceneError as e:
            raise ValueError(str(e)) from None
        self.scene = scene
        t0 = -settle
        # after loading a state robosuite re-samples every observable (regenerate_obs_from_state)
        self._env.check_success()
        self._env._post_process()
        needed = self.frame_needed(t0)
        self._gate_open = needed
        try:
            self._rs._update_observables(force=True)
        finally:
            self._gate_open = False
        if needed:
            self._store_frames(t0)
        self.t = t0
        for _ in range(settle):
            self._physics_step(SETTLE_ACTION)
        self.t = 0
        self.success = False  # settling cannot count as solving
        self.last_reset_s = time.time() - t_start - (self.render_s - r_start)
        return self.observation()

    def _store_frames(self, t: int) -> None:
        frames = {}
        for v in self.views:
            frames[v] = np.array(self._rs._observables[f"{VIEW_CAMERAS[v]}_image"].obs, dtype=np.uint8, copy=True)
        self._frames[t] = frames
        self.n_renders += len(self.views)
        if self.record_video:
            self.video_frames.append(np.concatenate([upright(frames[v]) for v in self.views], axis=1))
        # drop frames no history can reach any more
        for old in [k for k in self._frames if k <= t - self.obs_frames and k != min(self._frames)]:
            del self._frames[old]

    def _physics_step(self, action: np.ndarray) -> bool:
        t_next = self.t + 1
        render = self.frame_needed(t_next)
        before = {c: self._renders[c] for c in self._renders}
        self._gate_open = render
        try:
            success = self._env_step(action)
        finally:
            self._gate_open = False
        self.t = t_next
        if render:
            for cam in before:
                if self._renders[cam] != before[cam] + 1:
                    raise RuntimeError(f"camera {cam} rendered {self._renders[cam] - before[cam]} times in one "
                                       "step (robosuite's observable sampling changed?)")
            self._store_frames(t_next)
        return bool(success)

    def step(self, action: np.ndarray) -> tuple[bool, bool]:
        """One policy step. Returns (success, done)."""
        if self.done:
            raise RuntimeError("step() on a finished episode: call reset()")
        a = np.asarray(action, dtype=np.float64).reshape(-1)
        if a.shape[0] != ACTION_DIM or not np.all(np.isfinite(a)):
            raise ValueError(f"action must be {ACTION_DIM} finite numbers, got {a}")
        self.success = self._physics_step(a)
        self.done = self.success or self.t >= self.max_steps
        return self.success, self.done

    def sim_step(self, action: np.ndarray) -> bool:
        """Step the simulator with the cameras off and no frame bookkeeping (replays, planning);
        observation() is not valid afterwards. Returns LIBERO's success check."""
        self._gate_open = False
        return self._env_step(np.asarray(action, dtype=np.float64))

    def _env_step(self, action: np.ndarray) -> bool:
        if self._fast is None:
            return bool(self._env.step(action)[2])
        with self._fast(self._rs):
            return bool(self._env.step(action)[2])

    def execute_chunk(self, actions: np.ndarray) -> ChunkResult:
        """Execute the first ``replan_every`` actions of a chunk (A, 7) open loop, stopping at
        success or ``max_steps``."""
        actions = np.asarray(actions, dtype=np.float64)
        if actions.ndim != 2 or actions.shape[1] != ACTION_DIM:
            raise ValueError(f"action chunk must be (horizon, {ACTION_DIM}), got {actions.shape}")
        if actions.shape[0] < self.replan_every:
            raise ValueError(f"action chunk has {actions.shape[0]} actions but replan_every={self.replan_every}")
        n = 0
        for a in actions[: self.replan_every]:
            self.step(a)
            n += 1
            if self.done:
                break
        return ChunkResult(steps=n, success=self.success, done=self.done)

    # ------------------------------------------------------------------ observations
    def observation(self) -> np.ndarray:
        """Observation history at the current step: uint8 (V, To, 3, H, W), oldest frame first,
        views in ``self.views`` order; before the first frame the earliest one is repeated."""
        first = min(self._frames) if self._frames else None
        hist = []
        for t in range(self.t - self.obs_frames + 1, self.t + 1):
            tt = max(t, first) if first is not None else t
            if tt not in self._frames:
                raise RuntimeError(f"frame of step {tt} was not rendered (render={self.render_mode}, t={self.t}, "
                                   f"replan_every={self.replan_every}); observation() is valid at replanning points")
            hist.append(self._frames[tt])
        out = np.stack([np.stack([f[v] for f in hist]) for v in self.views])  # V, To, H, W, 3
        return np.ascontiguousarray(out.transpose(0, 1, 4, 2, 3))

    def render_obs(self) -> dict[str, np.ndarray]:
        """Camera frames of the current step {view: (H, W, 3) uint8}, in the dataset orientation.
        If this step was not rendered (lazy mode), the cameras are rendered now from the current
        state (as robosuite does after loading a state)."""
        if self.t not in self._frames:
            self._gate_open = True
            try:
                self._rs._update_observables(force=True)
            finally:
                self._gate_open = False
            self._store_frames(self.t)
        return {v: self._frames[self.t][v].copy() for v in self.views}

    def policy_input(self) -> dict[str, np.ndarray]:
        """{"obs": (1, V, To, 3, H, W) uint8} as :meth:`Method.predict_action` takes it."""
        return {"obs": self.observation()[None]}

    def sim_state(self) -> np.ndarray:
        return self._env.get_sim_state().copy()

    def check_success(self) -> bool:
        return bool(self._env.check_success())

    def close(self) -> None:
        env, self._env = getattr(self, "_env", None), None
        if env is not None:
            try:
                env.close()
            except Exception:  # closing a half-built renderer must not mask the real error
                pass

    def __enter__(self) -> "LiberoEnv":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def make_env(spec: Any, seed: int = 0, camera_size: int = 128, render: str = "lazy", **kwargs: Any) -> LiberoEnv:
    """Build a :class:`LiberoEnv` for a :class:`~uwmbench.benchmarks.libero.tasks.TaskSpec` (or a
    task name, resolved in-distribution)."""
    if isinstance(spec, str):
        from .tasks import get_task

        spec = get_task(spec)
    return LiberoEnv(spec, seed=seed, camera_size=camera_size, render=render, **kwargs)


__all__ = ["LiberoEnv", "ChunkResult", "make_env", "upright", "VIEW_CAMERAS", "DEFAULT_VIEWS", "RENDER_MODES",
           "RESET_MODES", "ENGINES"]
