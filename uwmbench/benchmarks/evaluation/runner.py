"""The interface between the evaluator and a benchmark.

A benchmark is one module with a :class:`Runner` subclass (LIBERO: ``libero_runner.py``). The
evaluator core plans rollouts with it (:meth:`Runner.task`, :meth:`Runner.starts`,
:meth:`Runner.demo_start`), and the execution loops (``pool.py``) drive its environments
through :meth:`Runner.make_env` / :meth:`Runner.reset` and the :class:`RolloutEnv` protocol:
execute an action chunk open loop, observe (rendering only the frames the policy reads),
done / success. Neither the core nor the loops import a simulator.

Runners and jobs are pickled to worker processes (spawn): keep them plain data, and import the
simulator inside ``make_env``.

Every rollout has a fixed seed, :func:`rollout_seed` ``(seed, task key, condition, episode)``,
independent of the worker count and order.
"""
from __future__ import annotations

import abc
import hashlib
import time
from dataclasses import dataclass
from typing import Any, Callable, Hashable, Protocol, Sequence, runtime_checkable

import numpy as np

# how a benchmark computes its simulation and frames: "fast" (the same results, computed faster;
# LIBERO: libero/fast_physics.py and libero/culling.py) or "robosuite" (the simulator's own code)
ENGINES = ("fast", "robosuite")


def rollout_seed(seed: int, task: str, condition: str, episode: int) -> int:
    """Stable 31-bit seed of one rollout (independent of worker count and order)."""
    h = hashlib.sha256(f"{int(seed)}|{task}|{condition}|{int(episode)}".encode()).digest()
    return int.from_bytes(h[:4], "little") & 0x7FFFFFFF


@dataclass(frozen=True)
class TaskInfo:
    """A task in one condition, as the runner resolved it."""
    name: str            # the row's ``task`` column (the name as given; a short name when there is one)
    key: str             # the benchmark's stable task id: seeds derive from it, rows carry it (``task_key``)
    suite: str           # the row's ``suite`` column
    max_steps: int       # the benchmark's episode length
    spec: Any = None     # the runner's own task object (LIBERO: TaskSpec); must pickle


@dataclass
class EpisodeStart:
    """Where an episode starts: a runner-specific scene plus what the rows say about it."""
    scene: Any                         # LIBERO: a Scene (state + fixture poses + controller state)
    init_state_index: int = -1         # index into the benchmark's init states; -1: a demo's own start
    settle_steps: int | None = None    # None: the settings' (a demo's states[0] is already settled: 0)
    model_file: str | None = None      # a demo's MJCF: its fixture poses complete ``scene``
    init_source: str = "benchmark"     # "benchmark" or the demo file the scene came from


@dataclass
class RolloutJob:
    id: int
    info: TaskInfo
    task: str                  # info.name
    condition: str
    episode: int
    rollout_seed: int
    start: EpisodeStart
    max_steps: int
    video_path: str | None = None
    reference: str | None = None       # inverse_dynamics: expert demo file ...
    reference_demo: str | None = None  # ... and demo whose future frames are tracked

    # the fields of the single-file evaluator, kept for readers of jobs
    spec = property(lambda self: self.info.spec)
    init_state = property(lambda self: self.start.scene)
    init_state_index = property(lambda self: self.start.init_state_index)
    settle_steps = property(lambda self: self.start.settle_steps)
    model_file = property(lambda self: self.start.model_file)
    init_source = property(lambda self: self.start.init_source)


@dataclass
class RunnerSettings:
    """What every environment of one evaluation shares (sent to each worker once)."""
    views: tuple[str, ...]
    obs_frames: int
    replan_every: int
    camera_size: int = 128
    render: str = "lazy"        # "lazy": only the frames the policy reads | "every_step"
    settle_steps: int = 5
    video_fps: int = 20
    reset_mode: str = "scene"   # "scene" (restore in the compiled model) | "rebuild" (hard reset)
    engine: str = "fast"        # "fast" (robosuite's simulation and frames, computed faster) | "robosuite"


WorkerSettings = RunnerSettings  # the single-file evaluator's name


@runtime_checkable
class RolloutEnv(Protocol):
    """What the execution loops use of an environment (LIBERO: ``libero.envs.LiberoEnv``)."""
    t: int                  # env steps executed in this episode
    done: bool              # success or max_steps reached
    success: bool
    n_renders: int          # camera frames rendered this episode
    last_reset_s: float     # the last reset's wall time (scene + settle physics, no rendering)
    record_video: bool      # set before reset: render every step into ``video_frames``
    video_frames: list

    def execute_chunk(self, actions: np.ndarray) -> Any:
        """Execute (H, action_dim) actions open loop (``replan_every`` of them, fewer when done)."""

    def observation(self) -> np.ndarray:
        """uint8 (V, To, 3, H, W) observation history; renders only frames not yet rendered."""

    def close(self) -> None: ...


class Runner(abc.ABC):
    """A benchmark behind the evaluator: tasks, episode starts, environments."""

    name: str = "?"
    conditions: tuple[str, ...] = ("id", "ood")

    def check_task(self, task: str) -> None:
        """Raise ``KeyError`` naming the valid tasks when ``task`` is unknown (CLI start-up check)."""
        self.task(task, self.conditions[0])

    @abc.abstractmethod
    def task(self, task: str, condition: str) -> TaskInfo:
        """Resolve a task name in a condition."""

    @abc.abstractmethod
    def starts(self, info: TaskInfo, condition: str, episodes: Sequence[int]) -> dict[int, EpisodeStart]:
        """The benchmark's start of each episode (episode i: its init state i)."""

    def demo_start(self, reference: Any, path: str, demo: str) -> EpisodeStart:
        """Start from a recorded demo's first state (``init_from``, inverse dynamics);
        ``reference`` is the evaluator's :class:`~.reference.DemoReference`."""
        raise NotImplementedError(f"the {self.name} runner cannot start episodes from demos")

    @abc.abstractmethod
    def make_env(self, job: RolloutJob, settings: RunnerSettings) -> RolloutEnv:
        """A new environment able to run ``job`` (and every job with the same :meth:`env_key`)."""

    def env_key(self, job: RolloutJob) -> Hashable:
        """Jobs with equal keys reuse one environment (no rebuild between their episodes)."""
        return (job.info.key, job.condition, job.max_steps)

    @abc.abstractmethod
    def reset(self, env: RolloutEnv, job: RolloutJob, settings: RunnerSettings) -> np.ndarray:
        """Reset ``env`` to the job's start scene with its rollout seed; the first observation.
        Nothing of an earlier episode in the same env may leak into this one."""


def run_episode(runner: Runner, env: RolloutEnv, job: RolloutJob, settings: RunnerSettings,
                act: Callable[[np.ndarray, int], np.ndarray],
                write_video: Callable[[str, list, int, bool], str | None] | None = None) -> dict[str, Any]:
    """One rollout: reset, then ``act(observation, env step) -> action chunk`` at every
    replanning point, chunks executed open loop until done. Returns the outcome columns."""
    t0 = time.time()
    env.record_video = job.video_path is not None
    obs = runner.reset(env, job, settings)
    reset_s = env.last_reset_s
    calls = 0
    while True:
        chunk = act(obs, int(env.t))
        calls += 1
        env.execute_chunk(chunk)
        if env.done:
            break
        obs = env.observation()
    video = None
    if job.video_path and write_video is not None:
        video = write_video(job.video_path, env.video_frames, settings.video_fps, bool(env.success))
    return {"success": bool(env.success), "steps": int(env.t), "wall_time_s": time.time() - t0, "reset_s": reset_s,
            "n_policy_calls": calls, "n_renders": int(env.n_renders), "video": video}
