"""``evaluate(policy, tasks, opts)``: the evaluator in three parts.

- **plan** (:func:`plan_mode`): resolve the policy once, check what needs the policy or the
  runner (every value-only check lives in :class:`~uwmbench.schemas.EvalOptions`), and turn
  (task, condition, episode) into :class:`~.runner.RolloutJob` s, skipping the rollouts already
  written to the output folder;
- **execute** (:func:`execute`): run jobs serially or in the worker pool (``pool.py``);
- **to row** (:func:`to_row`): one :class:`~uwmbench.rows.RolloutRow` per finished rollout,
  handed to ``row_sink`` and appended to ``rollouts.jsonl`` as soon as it exists.

``summarize()``: success rate per (method, task, condition). The public entry point is
:mod:`uwmbench.benchmarks.evaluate`; the settings are :class:`~uwmbench.schemas.EvalOptions`, the
same keys and defaults as ``uwmbench evaluate`` and ``uwmbench run``'s ``evaluate`` section.
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from uwmbench.config import ConfigError
from uwmbench.rows import ROLLOUT_COLUMNS, RolloutRow, append_jsonl, latest_rows, rollout_key
from uwmbench.run_dir import EvalDir
from uwmbench.schemas import EVAL_MODES, EvalOptions

from .libero_runner import LiberoRunner
from .policy import BatchedPolicy, checkpoint_frame_size, resolve_policy
from .pool import run_pool, run_serial
from .reference import DemoReference, reference_path
from .runner import RolloutJob, Runner, RunnerSettings, rollout_seed

log = logging.getLogger("uwmbench.benchmarks.evaluate")  # the evaluator's public logger

MODES = EVAL_MODES   # policy | inverse_dynamics: one list, the schema's


def evaluate(policy: Any, tasks: Sequence[str] | str, opts: EvalOptions | None = None, *,
             out_dir: str | os.PathLike | None = None, video_dir: str | os.PathLike | None = None,
             row_sink: Callable[[dict[str, Any]], None] | None = None, run_meta: dict[str, Any] | None = None,
             episodes: Sequence[int] | None = None, init_from: str | os.PathLike | dict[str, Any] | None = None,
             runner: Runner | None = None, reset_mode: str = "scene", resume: bool = True,
             progress: bool = True) -> "pd.DataFrame":  # noqa: F821
    """Roll out ``policy`` on every (task, condition) of ``opts``, in every mode of ``opts.modes``.

    policy      a checkpoint/run folder, a :class:`Method`, or a zero-argument factory of one.
    opts        the rollout settings (:class:`~uwmbench.schemas.EvalOptions`; default: its defaults,
                which are ``uwmbench evaluate``'s): rollouts, conditions, modes, seed, workers (0:
                serial in this process), step budget, replanning, camera size, engine, videos
                (``videos``: K episodes recorded, -1 all; ``video_select``: first | outcome), weights,
                the inverse-dynamics ``reference`` demos, the benchmark (``runner``).
    out_dir     where ``rollouts.jsonl`` is appended (and read back to skip done rollouts).
    video_dir   where recorded rollouts go (MP4, all cameras side by side); default ``<out_dir>/videos``.
                "outcome" runs every rollout without recording, then re-runs up to ``videos``
                successes and failures per (task, condition) with recording and links the video; a
                re-run that does not repeat its row's outcome and length is not linked (counted in
                ``df.attrs["video_mismatches"]``).
    row_sink    called with every row as it is written (the results store).
    run_meta    columns copied into every row (run_id, sweep, cell, method, variant, seed = training
                seed, checkpoint, ...).
    episodes    explicit episode indices instead of ``range(opts.n_rollouts)``.
    init_from   policy mode: start episode i from the scene of ``data/demo_i`` of this demo file
                (``{task}``/``{condition}`` replaced, or a dict keyed by condition, task or
                "task/condition") instead of the benchmark's init state i: a memorisation check, not
                a benchmark number (rows say ``init_source``).
    runner      the benchmark (a :class:`~.runner.Runner`); default ``opts.runner``, else LIBERO.
    reset_mode  "scene" (restore the scene in the compiled model) or "rebuild" (robosuite's hard
                reset every episode, the public code's way; the perf baseline).
    Returns a DataFrame with one row per rollout (including ones found done in ``out_dir``).
    """
    import pandas as pd

    opts = EvalOptions() if opts is None else opts
    if not isinstance(opts, EvalOptions):
        raise TypeError(f"evaluate: opts must be an EvalOptions, got {type(opts).__name__}")
    if runner is None:
        runner = opts.make_runner() or LiberoRunner(ood_margin=opts.ood_margin, ood_seed=opts.ood_seed)
    tasks = [tasks] if isinstance(tasks, str) else list(tasks)
    episodes = _check_request(opts, runner, tasks, episodes, init_from, reset_mode)
    method, ckpt, ckpt_flip, used_weights = resolve_policy(policy, opts.device, opts.weights)
    pol, camera_size = _policy_for(method, ckpt, ckpt_flip, opts)
    if video_dir is None and opts.videos and out_dir is not None:
        video_dir = EvalDir(out_dir).videos
    frames, mismatches = [], []
    for mode in opts.modes:
        plan = plan_mode(pol, ckpt, used_weights, camera_size, tasks, opts, mode, runner, episodes=episodes,
                         init_from=init_from if mode == "policy" else None, run_meta=run_meta, out_dir=out_dir,
                         video_dir=video_dir if opts.videos else None, reset_mode=reset_mode, resume=resume)
        try:
            rows = run_plan(plan, row_sink, progress)
        finally:
            plan.close()
        mismatches += plan.mismatches
        frames.append(pd.DataFrame(rows))
    cols = list(ROLLOUT_COLUMNS)
    frames = [f for f in frames if not f.empty]
    df = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=cols)
    rest = [c for c in df.columns if c not in cols]
    keys = ["task", "condition", "episode"] + (["mode"] if len(opts.modes) > 1 else [])
    df = df[cols + rest].sort_values(keys, kind="stable").reset_index(drop=True)
    df.attrs["policy_calls"] = pol.calls
    df.attrs["policy_batch_sizes"] = list(pol.batch_sizes)
    df.attrs["policy_time_s"] = pol.time_s
    df.attrs["video_mismatches"] = mismatches
    return df


# ----------------------------------------------------------------------------- checks
def _check_request(opts: EvalOptions, runner: Runner, tasks: list[str], episodes: Sequence[int] | None,
                   init_from: Any, reset_mode: str) -> list[int]:
    """What depends on the runner and on the combination of arguments (values alone are checked by
    ``EvalOptions``); returns the episode indices."""
    conditions = list(opts.conditions)
    bad = [c for c in conditions if c not in runner.conditions]
    if bad or not conditions:
        raise ValueError(f"conditions={conditions}: each must be {' or '.join(map(repr, runner.conditions))}")
    if not tasks:
        raise ValueError("tasks is empty")
    if reset_mode not in ("scene", "rebuild"):
        raise ValueError(f"reset_mode={reset_mode!r} must be 'scene' or 'rebuild'")
    if episodes is None and opts.n_rollouts < 1:
        raise ValueError(f"n_rollouts must be >= 1, got {opts.n_rollouts}")
    eps = list(range(opts.n_rollouts)) if episodes is None else [int(e) for e in episodes]
    if "inverse_dynamics" in opts.modes:
        if opts.reference is None:
            raise ValueError("mode='inverse_dynamics' needs reference=<LIBERO-layout HDF5 of expert demos of the task>")
        if any(e < 0 for e in eps):
            raise ValueError(f"episodes={eps}: inverse_dynamics episode i tracks data/demo_i, need i >= 0")
    elif opts.reference is not None:
        raise ValueError("reference is only used with mode='inverse_dynamics'")
    if init_from is not None:
        if "policy" not in opts.modes:
            raise ValueError("init_from is for mode='policy'; inverse_dynamics starts from its reference demos")
        if any(e < 0 for e in eps):
            raise ValueError(f"episodes={eps}: with init_from episode i starts from data/demo_i, need i >= 0")
    return eps


def _policy_for(method: Any, ckpt: str, ckpt_flip: bool | None, opts: EvalOptions) -> tuple[BatchedPolicy, int]:
    """The batched policy and the camera size: the checkpoint's training frame size unless
    ``opts.camera_size`` says otherwise (then refused, or resized with ``resize_frames``)."""
    camera_size = opts.camera_size
    train_size = checkpoint_frame_size(ckpt)
    if camera_size is None:  # render at the size the checkpoint was trained on (square frames), else 128
        camera_size = train_size[0] if train_size is not None and train_size[0] == train_size[1] else 128
    policy_size = None
    if train_size is not None and train_size != (int(camera_size), int(camera_size)):
        th, tw = train_size
        if not opts.resize_frames:
            fix = f"evaluate with camera_size={th}, or" if th == tw else "the camera renders square frames:"
            raise ConfigError(f"checkpoint {ckpt} was trained on {th}x{tw} frames but camera_size={camera_size} renders "
                              f"{camera_size}x{camera_size}: {fix} set resize_frames=true to resize the camera frames "
                              f"to {th}x{tw} before the policy")
        policy_size = train_size
        log.info("evaluate: resize_frames: camera frames %dx%d are resized to the training size %dx%d of %s "
                 "(bilinear, antialiased) before the policy", camera_size, camera_size, th, tw, ckpt)
    elif opts.resize_frames and ckpt and train_size is None:
        log.warning("evaluate: resize_frames=true but checkpoint %s does not record its training frame size: "
                    "frames are passed at camera_size=%d", ckpt, camera_size)
    if "inverse_dynamics" in opts.modes:
        from uwmbench.methods.base import INVERSE_DYNAMICS

        caps = getattr(method, "capabilities", frozenset())
        name = getattr(method, "name", type(method).__name__)
        if INVERSE_DYNAMICS not in caps or not callable(getattr(method, "infer_action", None)):
            raise ValueError(f"mode='inverse_dynamics': method {name!r} does not declare the {INVERSE_DYNAMICS!r} "
                             f"capability (it declares {sorted(caps)}); only such methods implement infer_action")
    flip = opts.flip_vertical if opts.flip_vertical is not None else (ckpt_flip if ckpt_flip is not None else True)
    pol = BatchedPolicy(method, flip, opts.device, frame_size=policy_size)
    if opts.replan_every > pol.horizon:
        raise ValueError(f"replan_every={opts.replan_every} must be in 1..{pol.horizon} (the method's action_horizon)")
    if opts.obs_frames is not None and int(opts.obs_frames) != pol.obs_frames:
        raise ValueError(f"obs_frames={opts.obs_frames} but method {pol.name} takes {pol.obs_frames} frames")
    return pol, int(camera_size)


# ----------------------------------------------------------------------------- plan
@dataclass
class Group:
    """One (task, condition) of a plan: its jobs share an env in a worker."""
    info: Any
    condition: str
    max_steps: int
    demo_file: str | None    # init_from / reference demo file of this task and condition


@dataclass
class Plan:
    """The rollouts of one mode: what to run, what is already done, and how rows are made."""
    opts: EvalOptions
    mode: str
    runner: Runner
    pol: BatchedPolicy
    settings: RunnerSettings
    base: dict[str, Any]                 # the columns every row of this plan shares
    groups: list[Group]
    jobs: list[RolloutJob]               # rollouts still to run
    done: list[dict]                     # rows found in the output folder
    ref: DemoReference | None            # init_from / inverse-dynamics demos
    jsonl: Path | None
    video_dir: str | None
    mismatches: list[dict] = field(default_factory=list)

    @property
    def tracking(self) -> bool:
        return self.ref is not None and self.mode == "inverse_dynamics"

    def video_path(self, info: Any, cond: str, ep: int) -> str:
        tag = "_invdyn" if self.ref is not None else ""
        return str(Path(self.video_dir) / f"{info.name.replace('/', '__')}_{cond}{tag}_ep{ep:03d}.mp4")

    def records_live(self, ep: int) -> bool:
        """Recorded while it runs: every episode (videos=-1), or the first ``videos`` (select=first)."""
        v = self.opts.videos
        return self.video_dir is not None and (v < 0 or (self.opts.video_select == "first" and ep < v))

    def make_jobs(self, group: Group, eps: list[tuple[int, int]], into: list[RolloutJob],
                  record: Callable[[int], bool]) -> None:
        """A RolloutJob per (episode, rollout seed) of ``eps``, appended to ``into`` (id = index)."""
        info, cond = group.info, group.condition
        if self.ref is not None:  # every demo is checked before any env exists
            for ep, _ in eps:
                self.ref.check_demo(group.demo_file, f"demo_{ep}", frames=self.mode == "inverse_dynamics")
            starts = {ep: self.runner.demo_start(self.ref, group.demo_file, f"demo_{ep}") for ep, _ in eps}
        else:
            starts = self.runner.starts(info, cond, [ep for ep, _ in eps])
        for ep, rs in eps:
            into.append(RolloutJob(id=len(into), info=info, task=info.name, condition=cond, episode=ep,
                                   rollout_seed=rs, start=starts[ep], max_steps=group.max_steps,
                                   video_path=self.video_path(info, cond, ep) if record(ep) else None,
                                   reference=group.demo_file if self.tracking else None,
                                   reference_demo=f"demo_{ep}" if self.ref is not None else None))

    def goal(self) -> Callable[[RolloutJob, int], np.ndarray | None] | None:
        """Inverse dynamics: the demo's future frames at env step t."""
        if self.ref is None:
            return None
        ref = self.ref
        return lambda job, t: None if job.reference is None else ref.next_obs(job.reference, job.reference_demo, t)

    def close(self) -> None:
        if self.ref is not None:
            self.ref.close()


def plan_mode(pol: BatchedPolicy, ckpt: str, used_weights: str, camera_size: int, tasks: list[str],
              opts: EvalOptions, mode: str, runner: Runner, *, episodes: list[int], init_from: Any,
              run_meta: dict[str, Any] | None, out_dir: str | os.PathLike | None,
              video_dir: str | os.PathLike | None, reset_mode: str, resume: bool) -> Plan:
    """The jobs of one mode, grouped by (task, condition) so that workers keep their env; the
    rollouts already in ``out_dir`` (resume) become rows without running."""
    import torch

    torch.manual_seed(opts.seed)
    meta = dict(run_meta or {})
    if meta.get("mode", mode) != mode:
        raise ValueError(f"run_meta mode={meta['mode']!r} disagrees with mode={mode!r}")
    meta.pop("mode", None)
    base = {"run_id": meta.pop("run_id", ""), "sweep": meta.pop("sweep", ""), "cell": meta.pop("cell", ""),
            "method": meta.pop("method", pol.name), "variant": meta.pop("variant", ""),
            "seed": int(meta.pop("seed", opts.seed)), "checkpoint": str(meta.pop("checkpoint", ckpt)), "mode": mode,
            "weights": used_weights}
    base.update(meta)
    done_rows: dict[tuple, dict] = {}
    jsonl = None
    if out_dir is not None:
        out = EvalDir(out_dir)
        out.path.mkdir(parents=True, exist_ok=True)
        jsonl = out.rollouts
        if resume:  # the rows already written (of a rollout written twice: the last one)
            done_rows = {rollout_key(r): r for r in latest_rows(out.read_rows())}
    demo_src = opts.reference if mode == "inverse_dynamics" else init_from
    ref = DemoReference(pol.views, pol.horizon, pol.next_frames, camera_size) if demo_src is not None else None
    settings = RunnerSettings(views=pol.views, obs_frames=pol.obs_frames, replan_every=opts.replan_every,
                              camera_size=camera_size, render=opts.render, settle_steps=opts.settle_steps,
                              reset_mode=reset_mode, engine=opts.engine)
    plan = Plan(opts=opts, mode=mode, runner=runner, pol=pol, settings=settings, base=base, groups=[], jobs=[],
                done=[], ref=ref, jsonl=jsonl, video_dir=None if video_dir is None else str(video_dir))
    conditions = list(opts.conditions)
    for task in tasks:
        for cond in conditions:
            info = runner.task(task, cond)
            rpath = reference_path(demo_src, info.name, cond, len(tasks), len(conditions)) if ref is not None else None
            steps = int(opts.max_steps) if opts.max_steps is not None else int(info.max_steps)
            group = Group(info, cond, steps, rpath)
            plan.groups.append(group)
            pending = []
            for ep in episodes:
                rs = rollout_seed(opts.seed, info.key, cond, ep)
                key = rollout_key({**base, "task": info.name, "condition": cond, "rollout_seed": rs, "episode": ep,
                                   "max_steps": group.max_steps, "replan_every": opts.replan_every,
                                   "init_source": rpath or "benchmark"})
                if key in done_rows:
                    plan.done.append(done_rows[key])
                else:
                    pending.append((ep, rs))
            if pending:
                plan.make_jobs(group, pending, plan.jobs, plan.records_live)
    if plan.done:
        log.info("evaluate: %d rollouts already in %s, skipping them", len(plan.done), jsonl)
    return plan


# ----------------------------------------------------------------------------- execute
def execute(plan: Plan, jobs: list[RolloutJob], finish: Callable[[RolloutJob, dict], dict], desc: str,
            progress: bool) -> None:
    """Run ``jobs`` (serially with ``workers=0``, else in the worker pool), ``finish`` per result."""
    bar = _progress(len(jobs), progress, desc)
    workers = plan.opts.n_workers
    try:
        if workers == 0:
            run_serial(plan.runner, jobs, plan.settings, plan.pol, finish, bar, goal=plan.goal())
        else:
            run_pool(plan.runner, jobs, plan.settings, plan.pol, finish, bar, min(workers, len(jobs)),
                     goal=plan.goal())
    finally:
        bar.close()


def run_plan(plan: Plan, row_sink: Callable[[dict[str, Any]], None] | None, progress: bool) -> list[dict]:
    """Execute a plan's jobs, writing each row as it comes; then, with ``video_select=outcome``,
    the recording re-runs. Returns every row of the plan (done ones included)."""
    new_rows: list[dict] = []

    def finish(job: RolloutJob, result: dict) -> dict:
        row = to_row(plan, job, result)
        _write(plan, row, row_sink)
        new_rows.append(row)
        return row

    if plan.jobs:
        execute(plan, plan.jobs, finish, "rollouts", progress)
    rows = plan.done + new_rows
    if plan.video_dir is not None and plan.opts.video_select == "outcome" and plan.opts.videos > 0:
        rows = _record_by_outcome(plan, rows, row_sink, progress)
    return rows


# ----------------------------------------------------------------------------- rows
def to_row(plan: Plan, job: RolloutJob, result: dict) -> dict:
    """The RolloutRow of one finished rollout (as a dict)."""
    cols = dict(plan.base)
    cols.update(task=job.task, condition=job.condition, episode=job.episode, rollout_seed=job.rollout_seed,
                success=bool(result["success"]), steps=int(result["steps"]),
                wall_time_s=float(result["wall_time_s"]), env_create_s=float(result.get("env_create_s", 0.0)),
                reset_s=float(result.get("reset_s", 0.0)), init_source=job.start.init_source,
                eval_seed=int(plan.opts.seed), max_steps=job.max_steps,
                replan_every=plan.opts.replan_every, obs_frames=plan.pol.obs_frames,
                init_state_index=job.start.init_state_index, render=plan.settings.render,
                n_policy_calls=int(result["n_policy_calls"]), n_renders=int(result["n_renders"]),
                video=result.get("video") or "", suite=job.info.suite, task_key=job.info.key,
                reference=job.reference, reference_demo=job.reference_demo if job.reference is not None else None,
                written_at=time.time())
    return RolloutRow.from_dict(cols).to_dict()


def _write(plan: Plan, row: dict, row_sink: Callable[[dict[str, Any]], None] | None) -> None:
    # the sink (the results store) first: a job killed between the two writes reruns this
    # rollout on resume, and the store keeps the row written last, instead of losing it
    if row_sink is not None:
        row_sink(row)
    if plan.jsonl is not None:
        append_jsonl(plan.jsonl, row)


def _record_by_outcome(plan: Plan, all_rows: list[dict], row_sink, progress: bool) -> list[dict]:
    """Re-run the first ``videos`` successes and failures of each (task, condition) that have no
    video yet, recording them; returns the rows, theirs with the video linked."""
    rows = {(r["task"], r["condition"], int(r["episode"])): r for r in all_rows}
    rejobs: list[RolloutJob] = []
    target: dict[int, dict] = {}
    for group in plan.groups:
        mine = sorted((r for r in rows.values() if r["task"] == group.info.name and r["condition"] == group.condition),
                      key=lambda r: int(r["episode"]))
        chosen = []
        for ok in (True, False):
            same = [r for r in mine if bool(r["success"]) == ok]
            has = [bool(r.get("video")) and Path(str(r["video"])).is_file() for r in same]
            chosen += [r for r, h in zip(same, has) if not h][:max(0, int(plan.opts.videos) - sum(has))]
        if chosen:
            first = len(rejobs)
            plan.make_jobs(group, [(int(r["episode"]), int(r["rollout_seed"])) for r in chosen], rejobs, lambda ep: True)
            target.update({j.id: r for j, r in zip(rejobs[first:], chosen)})
    if not rejobs:
        return all_rows
    log.info("evaluate: re-running %d rollouts with video recording (video_select=outcome)", len(rejobs))

    def finish_video(job: RolloutJob, result: dict) -> dict:
        row = target[job.id]
        video = result.get("video") or ""
        if bool(result["success"]) != bool(row["success"]) or int(result["steps"]) != int(row["steps"]):
            plan.mismatches.append({"task": job.task, "condition": job.condition, "episode": job.episode,
                                    "row": (bool(row["success"]), int(row["steps"])),
                                    "rerun": (bool(result["success"]), int(result["steps"]))})
            log.warning("evaluate: %s/%s episode %d re-run for its video gave success=%s in %d steps, its row "
                        "says success=%s in %d steps: video not linked", job.task, job.condition, job.episode,
                        result["success"], result["steps"], row["success"], row["steps"])
            if video and os.path.isfile(video):
                os.unlink(video)
            return row
        upd = RolloutRow.from_dict({**row, "video": video, "written_at": time.time()}).to_dict()
        _write(plan, upd, row_sink)
        rows[(job.task, job.condition, job.episode)] = upd
        return upd

    execute(plan, rejobs, finish_video, "videos", progress)
    return list(rows.values())


class _Bar:
    def __init__(self, total: int, enabled: bool, desc: str = "rollouts"):
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total, desc=desc, unit="ep", disable=not enabled, dynamic_ncols=True)
        self.n = 0
        self.ok = 0

    def update(self, row: dict) -> None:
        self.n += 1
        self.ok += int(bool(row["success"]))
        self.bar.set_postfix(success=f"{self.ok / self.n:.2f}", last=f"{row['task']}/{row['condition']}")
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()


def _progress(total: int, enabled: bool, desc: str = "rollouts") -> _Bar:
    return _Bar(total, enabled, desc)


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
