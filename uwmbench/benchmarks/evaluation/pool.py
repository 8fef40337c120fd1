"""Executing rollout jobs: in this process (one env, batch-1 policy calls) or in a pool of
spawned worker processes that share one batched policy in the main process.

Worker protocol (queues): each worker owns one environment (kept across jobs with the same
``runner.env_key``), pulls jobs from ``job_q`` and sends to ``req_q``
``("start", wid, job, None)``, ``("obs", wid, job, (obs history, env step))`` at every
replanning point, ``("done", wid, job, outcome)`` or ``("error", wid, job, traceback)``; it
receives ``("act", chunk)`` on its own ``act_q``. The main process stacks the observations of
the workers that are waiting, calls the policy once on the batch and answers each worker. It
waits for workers still executing a chunk to join the batch only while that is cheaper than a
policy call: see :class:`Batcher`. No torch in workers: the policy lives in the main process.
"""
from __future__ import annotations

import multiprocessing as mp
import os
import queue
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .policy import policy_seed
from .runner import RolloutJob, Runner, RunnerSettings, run_episode

# (job, env step) -> the inverse-dynamics goal frames of that step, or None (policy mode)
GoalFn = Callable[[RolloutJob, int], "np.ndarray | None"]


def write_video(path: str, frames: list[np.ndarray], fps: int, success: bool) -> str | None:
    """``<stem>_{success|fail}.mp4`` next to ``path`` (atomic); None without frames."""
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


class _Envs:
    """One environment at a time, rebuilt only when the job's ``env_key`` changes."""

    def __init__(self, runner: Runner, settings: RunnerSettings):
        self.runner, self.settings = runner, settings
        self.env, self.key = None, None

    def get(self, job: RolloutJob):
        key = self.runner.env_key(job)
        if self.env is None or self.key != key:
            self.close()
            self.env = self.runner.make_env(job, self.settings)
            self.key = key
        return self.env

    def close(self) -> None:
        if self.env is not None:
            self.env.close()
            self.env = None


class _Orphaned(Exception):
    """The evaluating process is gone (killed without cleaning up): the worker stops."""


def _get(q, parent: int, poll_s: float = 1.0):
    """``q.get()``, but raise :class:`_Orphaned` once the parent process has died (the worker is
    re-parented, so ``os.getppid()`` changes). A parent killed by SIGTERM or SIGKILL runs no cleanup;
    without this its workers would wait on their queues for ever, holding an environment each."""
    while True:
        try:
            return q.get(timeout=poll_s)
        except queue.Empty:
            if os.getppid() != parent:
                raise _Orphaned from None


def render_threads(n_workers: int) -> int:
    """Rasterizer threads for each worker's software OpenGL (Mesa llvmpipe's ``LP_NUM_THREADS``):
    its share of this process's cores, and 0 (render in the worker's own thread) when that share
    is one core or less. llvmpipe otherwise starts a thread per core in every worker; with as many
    workers as cores those threads only compete (measured on 2 cores, 2 workers: 54 vs 66 env
    steps/s). GPU drivers ignore the variable."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover (macOS)
        cores = os.cpu_count() or 1
    share = cores // max(1, n_workers)
    return 0 if share <= 1 else share


def worker_main(wid: int, runner: Runner, settings: RunnerSettings, job_q, req_q, act_q,
                lp_threads: int | None = None) -> None:
    """Worker process: one env, rollouts pulled from ``job_q``, observations to ``req_q``,
    action chunks from ``act_q``. Exits on its own when the main process dies. ``lp_threads``:
    ``LP_NUM_THREADS`` unless the user set it (see :func:`render_threads`)."""
    os.environ.setdefault("MUJOCO_GL", "egl")
    if lp_threads is not None:
        os.environ.setdefault("LP_NUM_THREADS", str(lp_threads))  # before the first GL context
    parent = os.getppid()
    envs = _Envs(runner, settings)

    def act(obs: np.ndarray, t: int) -> np.ndarray:
        req_q.put(("obs", wid, job.id, (obs, t)))
        msg = _get(act_q, parent)
        if msg[0] != "act":
            raise RuntimeError(f"worker {wid}: unexpected message {msg[0]!r}")
        return msg[1]

    try:
        while True:
            job: RolloutJob | None = _get(job_q, parent)
            if job is None:
                break
            try:
                req_q.put(("start", wid, job.id, None))
                t_create = time.time()
                env = envs.get(job)
                env_create_s = time.time() - t_create
                result = run_episode(runner, env, job, settings, act, write_video)
                req_q.put(("done", wid, job.id, {**result, "env_create_s": env_create_s, "worker": wid}))
            except _Orphaned:
                raise
            except Exception:
                req_q.put(("error", wid, job.id, traceback.format_exc()))
                return
    except _Orphaned:
        # nobody reads req_q any more: do not wait at exit for its feeder thread to flush
        req_q.cancel_join_thread()
    finally:
        envs.close()


def run_serial(runner: Runner, jobs: list[RolloutJob], settings: RunnerSettings, policy: Callable, finish: Callable,
               bar: Any, goal: GoalFn | None = None) -> None:
    """One env in this process, batch-1 policy calls (the public code's way, and the fallback).
    ``policy(obs, goals, seeds)`` -> action chunks, as :class:`~.policy.BatchedPolicy`; ``seeds``:
    :func:`~.policy.policy_seed` of each element's rollout and env step."""
    envs = _Envs(runner, settings)
    try:
        for job in jobs:
            t_create = time.time()
            env = envs.get(job)
            env_create_s = time.time() - t_create

            def act(obs: np.ndarray, t: int, job: RolloutJob = job) -> np.ndarray:
                nxt = goal(job, t) if goal is not None else None
                return policy(obs[None], None if nxt is None else nxt[None], [policy_seed(job.rollout_seed, t)])[0]

            result = run_episode(runner, env, job, settings, act, write_video)
            bar.update(finish(job, {**result, "env_create_s": env_create_s}))
    finally:
        envs.close()


class Batcher:
    """When to call the policy on the observations that are waiting.

    Workers that are executing a chunk will ask again after about one chunk's time. Waiting for
    them makes one larger batch (a batched call costs about as much as a single one, on a GPU
    above all) but leaves the waiting workers idle. So the waiting workers are served as soon as
    the expected time until the last stepping worker asks exceeds the cost of one policy call
    (running moving averages of both), or when a stepping worker is overdue. Until both are
    measured, and whenever no worker is stepping, it behaves as the plain rule "serve once no
    worker is mid-chunk". Per-rollout policy seeds make rollouts independent of the batching."""

    def __init__(self, n_workers: int, smoothing: float = 0.2):
        self.sent = [0.0] * n_workers   # when each worker got its last chunk
        self.chunk_s: float | None = None
        self.policy_s: float | None = None
        self.a = smoothing

    def _avg(self, old: float | None, new: float) -> float:
        return new if old is None else (1 - self.a) * old + self.a * new

    def asked(self, wid: int, now: float) -> None:
        """Worker ``wid`` sent an observation after executing the chunk it got at ``sent[wid]``."""
        if self.sent[wid] > 0:
            self.chunk_s = self._avg(self.chunk_s, now - self.sent[wid])

    def served(self, wids: list[int], started: float, now: float) -> None:
        self.policy_s = self._avg(self.policy_s, now - started)
        for w in wids:
            self.sent[w] = now

    def wait_s(self, stepping: list[int], now: float) -> float:
        """Expected seconds until every stepping worker has asked (0: none is stepping)."""
        if not stepping:
            return 0.0
        if self.chunk_s is None:
            return float("inf")
        return max(self.chunk_s - (now - self.sent[w]) for w in stepping)

    def serve_now(self, stepping: list[int], now: float) -> bool:
        if not stepping:
            return True
        if self.chunk_s is None or self.policy_s is None:
            return False
        wait = self.wait_s(stepping, now)
        return wait <= 0.0 or wait > self.policy_s


def run_pool(runner: Runner, jobs: list[RolloutJob], settings: RunnerSettings, policy: Callable, finish: Callable,
             bar: Any, n_workers: int, poll_s: float = 1.0, goal: GoalFn | None = None) -> None:
    """``n_workers`` spawned processes, one env each; policy calls batched over waiting workers
    (see :class:`Batcher`; ``policy`` as in :func:`run_serial`: each element keeps its own seed,
    so batching does not change what a rollout samples)."""

    ctx = mp.get_context("spawn")
    job_q, req_q = ctx.Queue(), ctx.Queue()
    act_qs = [ctx.Queue() for _ in range(n_workers)]
    lp = render_threads(n_workers)
    procs = [ctx.Process(target=worker_main, args=(w, runner, settings, job_q, req_q, act_qs[w], lp), daemon=True,
                         name=f"uwmbench-eval-{w}") for w in range(n_workers)]
    for job in jobs:
        job_q.put(job)
    for _ in procs:
        job_q.put(None)
    by_id = {j.id: j for j in jobs}
    state = ["idle"] * n_workers       # idle | resetting | waiting | stepping
    pending: dict[int, tuple[int, np.ndarray, int]] = {}  # worker -> (job id, obs history, env step)
    n_done = 0
    batcher = Batcher(n_workers)
    try:
        for p in procs:
            p.start()
        while n_done < len(jobs):
            timeout = poll_s
            if pending:  # re-decide when the stepping workers are expected (or overdue)
                stepping = [w for w in range(n_workers) if state[w] == "stepping"]
                timeout = min(poll_s, max(0.001, batcher.wait_s(stepping, time.perf_counter())))
            try:
                kind, wid, jid, payload = req_q.get(timeout=timeout)
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
                batcher.sent[wid] = 0.0  # its next request follows a reset, not a chunk
            elif kind == "obs":
                state[wid] = "waiting"
                pending[wid] = (jid, payload[0], payload[1])
                batcher.asked(wid, time.perf_counter())
            elif kind == "done":
                state[wid] = "idle"
                n_done += 1
                bar.update(finish(by_id[jid], payload))
            elif kind == "error":
                job = by_id.get(jid)
                raise RuntimeError(f"evaluation worker {wid} failed on {job.task if job else '?'}/"
                                   f"{job.condition if job else '?'} episode {job.episode if job else '?'}:\n{payload}")
            stepping = [w for w in range(n_workers) if state[w] == "stepping"]
            if pending and batcher.serve_now(stepping, time.perf_counter()):
                t_call = time.perf_counter()
                wids = sorted(pending)
                nxt = [goal(by_id[pending[w][0]], pending[w][2]) if goal is not None else None for w in wids]
                chunks = policy(np.stack([pending[w][1] for w in wids]), None if nxt[0] is None else np.stack(nxt),
                                [policy_seed(by_id[pending[w][0]].rollout_seed, pending[w][2]) for w in wids])
                for w, c in zip(wids, chunks):
                    act_qs[w].put(("act", c))
                    state[w] = "stepping"
                batcher.served(wids, t_call, time.perf_counter())
                pending.clear()
        # every result is in: workers would now only close their envs and exit (seconds of teardown
        # that no result depends on), so they are stopped instead of waited for
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()
        for p in procs:
            p.join(timeout=10)
        for q in [job_q, req_q, *act_qs]:
            q.cancel_join_thread()
            q.close()
