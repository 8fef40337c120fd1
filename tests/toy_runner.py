"""A benchmark without a simulator, behind the evaluator's runner interface (a second runner
besides LIBERO, in one module, as a new benchmark would be): reach x >= 1 on a line.

Episode i starts at x = START[i % len(START)]; each action moves x by ``0.1 * a[0]``; frames
are filled with ``round(100 * x)``. Imported by spawned evaluation workers (plain data only)."""
from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from uwmbench.benchmarks.evaluation.runner import EpisodeStart, RolloutJob, Runner, RunnerSettings, TaskInfo

START = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]


class ReachEnv:
    """Implements :class:`~uwmbench.benchmarks.evaluation.runner.RolloutEnv`."""

    def __init__(self, settings: RunnerSettings, max_steps: int):
        self.s, self.max_steps = settings, max_steps
        self.t, self.done, self.success, self.n_renders = 0, True, False, 0
        self.last_reset_s, self.record_video, self.video_frames = 0.0, False, []
        self.x = 0.0
        self.history: list[float] = []
        self.resets: list[tuple[float, int]] = []  # (start x, seed) of every reset
        self.closed = False

    def reset(self, x0: float, seed: int) -> np.ndarray:
        self.x, self.t, self.done, self.success, self.n_renders = float(x0), 0, False, False, 0
        self.video_frames = []
        self.history = [self.x]
        self.resets.append((self.x, seed))
        self.last_reset_s = 1e-6
        return self.observation()

    def execute_chunk(self, actions: np.ndarray) -> None:
        if os.environ.get("TOY_REACH_CHUNK_S"):  # a slow benchmark (tests that stop a rollout job mid-way)
            time.sleep(float(os.environ["TOY_REACH_CHUNK_S"]))
        for a in np.asarray(actions)[: self.s.replan_every]:
            self.x += 0.1 * float(a[0])
            self.t += 1
            self.history.append(self.x)
            if self.record_video:
                self.video_frames.append(np.zeros((4, 4, 3), np.uint8))
            self.success = self.x >= 1.0 - 1e-9
            self.done = self.success or self.t >= self.max_steps
            if self.done:
                break

    def observation(self) -> np.ndarray:
        v, to, size = len(self.s.views), self.s.obs_frames, self.s.camera_size
        frames = [self.history[max(0, len(self.history) - to + k)] for k in range(to)]
        self.n_renders += v  # lazily: only the newest frame of each view is rendered per call
        out = np.empty((v, to, 3, size, size), np.uint8)
        for k, x in enumerate(frames):
            out[:, k] = min(255, max(0, int(round(100 * x))))  # a policy may push x below 0
        return out

    def close(self) -> None:
        self.closed = True


class ReachRunner(Runner):
    name = "reach"
    conditions = ("id",)

    def task(self, task: str, condition: str) -> TaskInfo:
        if task != "reach":
            raise KeyError(f"unknown task {task!r}; tasks: ['reach']")
        return TaskInfo(name="reach", key="toy/reach", suite="toy", max_steps=30)

    def starts(self, info: TaskInfo, condition: str, episodes) -> dict[int, EpisodeStart]:
        return {ep: EpisodeStart(START[ep % len(START)], init_state_index=ep % len(START)) for ep in episodes}

    def make_env(self, job: RolloutJob, settings: RunnerSettings) -> ReachEnv:
        if os.environ.get("TOY_REACH_ENV_MARKS"):  # one file per process that built an env (tests of the pool)
            Path(os.environ["TOY_REACH_ENV_MARKS"], str(os.getpid())).touch()
        return ReachEnv(settings, job.max_steps)

    def reset(self, env: ReachEnv, job: RolloutJob, settings: RunnerSettings) -> np.ndarray:
        return env.reset(job.start.scene, job.rollout_seed)
