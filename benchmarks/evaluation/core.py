"""``evaluate()``: check the arguments, resolve the policy, plan the rollouts with a runner
(skipping the ones already in the output folder), execute them (``pool.py``) and write one
:class:`~uwmbench.rows.RolloutRow` per rollout as soon as it finishes. ``summarize()``: success
rate per (method, task, condition). The public entry point is :mod:`uwmbench.benchmarks.evaluate`.
"""
from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from uwmbench.config import ConfigError
from uwmbench.rows import ROLLOUT_COLUMNS, RolloutRow, append_jsonl, latest_rows, rollout_key
from uwmbench.run_dir import EvalDir

from .libero_runner import LiberoRunner
from .policy import BatchedPolicy, checkpoint_frame_size, resolve_policy
from .pool import run_pool, run_serial
from .reference import DemoReference, reference_path
from .runner import ENGINES, RolloutJob, Runner, RunnerSettings, rollout_seed

log = logging.getLogger("uwmbench.benchmarks.evaluate")  # the evaluator's public logger

MODES = ("policy", "inverse_dynamics")


def evaluate(policy: Any, tasks: Sequence[str], conditions: Sequence[str] = ("id", "ood"), n_rollouts: int = 50,
             seed: int = 0, num_workers: int = 2, max_steps: int | None = None, replan_every: int = 16,
             obs_frames: int | None = None, video_dir: str | os.PathLike | None = None,
             video_episodes: int | None = None, video_select: str = "first",
             row_sink: Callable[[dict[str, Any]], None] | None = None, run_meta: dict[str, Any] | None = None,
             out_dir: str | os.PathLike | None = None, camera_size: int | None = None, render: str = "lazy",
             settle_steps: int = 5, ood_margin: float = 0.03, ood_seed: int = 0, flip_vertical: bool | None = None,
             device: str | None = "auto", resume: bool = True, progress: bool = True,
             episodes: Sequence[int] | None = None, mode: str = "policy",
             reference: str | os.PathLike | dict[str, Any] | None = None,
             resize_frames: bool = False,
             init_from: str | os.PathLike | dict[str, Any] | None = None, reset_mode: str = "scene",
             engine: str = "fast",
             weights: str = "auto", runner: Runner | None = None) -> "pd.DataFrame":  # noqa: F821
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
    video_select  "first": record episodes ``0..video_episodes-1`` while they run (all of them when
                  ``video_episodes`` is None, whatever ``video_select`` says). "outcome": run
                  every rollout without a camera recording, then re-run up to ``video_episodes``
                  successes and as many failures per (task, condition) with recording (the first
                  ones by episode; rollouts are a function of scene, rollout seed and per-rollout
                  policy noise, so the re-run repeats the rollout) and add the video to their rows. A
                  re-run whose outcome or length differs from its row (float differences between
                  batched and single policy calls can do that) is not linked; its file is removed
                  and it is counted in ``df.attrs["video_mismatches"]``.
    out_dir       where ``rollouts.jsonl`` is appended (and read back to skip done rollouts).
    episodes      explicit episode indices instead of ``range(n_rollouts)``.
    mode          "policy": ``predict_action(obs)``; "inverse_dynamics": track expert demos with
                  ``infer_action(obs, next_obs)`` (the method must declare INVERSE_DYNAMICS).
                  Episode i resets to ``data/demo_i/states[0]`` of the reference file and, at
                  every replanning step t, ``next_obs`` = the demo's frames t+Ha+k (k < Tn,
                  clamped to its last frame), see :class:`~.reference.DemoReference`.
    reference     inverse_dynamics: the LIBERO-layout HDF5 of expert demos; ``{task}`` and
                  ``{condition}`` in the path are replaced, or a dict keyed by condition, task
                  or "task/condition".
    reset_mode    "scene" (restore the scene in the compiled model) or "rebuild" (robosuite's hard
                  reset every episode, the public code's way; used by the perf baseline).
    engine        "fast": robosuite's simulation and camera frames bit for bit, computed faster (one
                  forward pass per physics sub-step, ``libero/fast_physics.py``; cameras given only
                  the geoms in their view, ``libero/culling.py``); "robosuite": its own step and
                  render (the perf baseline).
    init_from     policy mode: start episode i from the scene of ``data/demo_i`` of this demo file
                  (``{task}``/``{condition}`` replaced, or a dict as ``reference``) instead of the
                  benchmark's init state i: a memorisation check on training demos, not a benchmark
                  number (rows say ``init_source``).
    weights       "auto" (a checkpoint's EMA weights when it was trained with ``trainer.ema`` > 0,
                  else its trained weights), "ema" (required) or "raw"; rows say which (``weights``).
    resize_frames a checkpoint trained on frames of another size than ``camera_size`` is refused
                  (ConfigError naming both sizes); True resizes the camera frames to the training
                  size (bilinear, antialiased) before the policy instead, and logs it.
    runner        the benchmark (a :class:`~.runner.Runner`); default LIBERO
                  (:class:`~.libero_runner.LiberoRunner` with ``ood_margin`` / ``ood_seed``).
    Returns a DataFrame with one row per rollout (including ones found done in ``out_dir``).
    """
    import pandas as pd
    import torch

    if runner is None:
        runner = LiberoRunner(ood_margin=ood_margin, ood_seed=ood_seed)
    if isinstance(tasks, str):
        tasks = [tasks]
    conditions = list(conditions)
    bad = [c for c in conditions if c not in runner.conditions]
    if bad or not conditions:
        raise ValueError(f"conditions={conditions}: each must be {' or '.join(map(repr, runner.conditions))}")
    if not tasks:
        raise ValueError("tasks is empty")
    if engine not in ENGINES:
        raise ValueError(f"engine={engine!r} is not one of {ENGINES}")
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

    method, ckpt, ckpt_flip, used_weights = resolve_policy(policy, device, weights)
    train_size = checkpoint_frame_size(ckpt)
    if camera_size is None:  # render at the size the checkpoint was trained on (square frames), else 128
        camera_size = train_size[0] if train_size is not None and train_size[0] == train_size[1] else 128
    policy_size = None
    if train_size is not None and train_size != (int(camera_size), int(camera_size)):
        th, tw = train_size
        if not resize_frames:
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
        from uwmbench.methods.base import INVERSE_DYNAMICS

        caps = getattr(method, "capabilities", frozenset())
        name = getattr(method, "name", type(method).__name__)
        if INVERSE_DYNAMICS not in caps or not callable(getattr(method, "infer_action", None)):
            raise ValueError(f"mode='inverse_dynamics': method {name!r} does not declare the {INVERSE_DYNAMICS!r} "
                             f"capability (it declares {sorted(caps)}); only such methods implement infer_action")
    flip = flip_vertical if flip_vertical is not None else (ckpt_flip if ckpt_flip is not None else True)
    pol = BatchedPolicy(method, flip, device, frame_size=policy_size)
    if video_select not in ("first", "outcome"):
        raise ValueError(f"video_select={video_select!r} must be 'first' or 'outcome'")
    if video_episodes is None:   # every rollout recorded: choosing by outcome would only run them twice
        video_select = "first"
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

    out = EvalDir(out_dir) if out_dir is not None else None
    jsonl = None
    done_rows: dict[tuple, dict] = {}
    if out is not None:
        out.path.mkdir(parents=True, exist_ok=True)
        jsonl = out.rollouts
        if resume:  # the rows already written (of a rollout written twice: the last one)
            done_rows = {rollout_key(r): r for r in latest_rows(out.read_rows())}

    # ---- jobs, grouped by (task, condition) so that workers keep their env
    jobs: list[RolloutJob] = []
    rows_prev: list[dict] = []
    ref = (DemoReference(pol.views, pol.horizon, pol.next_frames, camera_size)
           if mode == "inverse_dynamics" or init_from is not None else None)
    demo_src = reference if mode == "inverse_dynamics" else init_from
    track = ref is not None and mode == "inverse_dynamics"
    groups: list[tuple[Any, str, int, str | None]] = []   # (task info, condition, steps, demo file)

    def video_stem(info, cond: str, ep: int) -> str:
        return str(Path(video_dir) / f"{info.name.replace('/', '__')}_{cond}{'_invdyn' if ref else ''}_ep{ep:03d}.mp4")

    def make_jobs(info, cond: str, steps: int, rpath: str | None, eps: list[tuple[int, int]],
                  into: list[RolloutJob], record: Callable[[int], bool]) -> None:
        """A RolloutJob per (episode, rollout seed) of ``eps``, appended to ``into`` (id = index)."""
        if ref is not None:  # every demo is checked before any env exists
            for ep, _ in eps:
                ref.check_demo(rpath, f"demo_{ep}", frames=mode == "inverse_dynamics")
            starts = {ep: runner.demo_start(ref, rpath, f"demo_{ep}") for ep, _ in eps}
        else:
            starts = runner.starts(info, cond, [ep for ep, _ in eps])
        for ep, rs in eps:
            into.append(RolloutJob(id=len(into), info=info, task=info.name, condition=cond, episode=ep,
                                   rollout_seed=rs, start=starts[ep], max_steps=steps,
                                   video_path=video_stem(info, cond, ep) if record(ep) else None,
                                   reference=rpath if track else None,
                                   reference_demo=f"demo_{ep}" if ref is not None else None))

    def record_live(ep: int) -> bool:
        return (video_dir is not None and video_select == "first"
                and (video_episodes is None or ep < video_episodes))

    for task in tasks:
        for cond in conditions:
            info = runner.task(task, cond)
            steps = int(max_steps) if max_steps is not None else int(info.max_steps)
            name = info.name
            rpath = reference_path(demo_src, name, cond, len(tasks), len(conditions)) if ref is not None else None
            groups.append((info, cond, steps, rpath))
            pending = []
            for ep in episodes:
                rs = rollout_seed(seed, info.key, cond, ep)
                key = rollout_key({**base, "task": name, "condition": cond, "rollout_seed": rs, "episode": ep,
                                "max_steps": steps, "replan_every": replan_every,
                                "init_source": rpath or "benchmark"})
                if key in done_rows:
                    rows_prev.append(done_rows[key])
                else:
                    pending.append((ep, rs))
            if pending:
                make_jobs(info, cond, steps, rpath, pending, jobs, record_live)
    if rows_prev:
        log.info("evaluate: %d rollouts already in %s, skipping them", len(rows_prev), jsonl)

    settings = RunnerSettings(views=pol.views, obs_frames=to, replan_every=replan_every, camera_size=camera_size,
                              render=render, settle_steps=settle_steps,
                              reset_mode=reset_mode, engine=engine)
    new_rows: list[dict] = []

    def finish(job: RolloutJob, result: dict) -> dict:
        cols = dict(base)
        cols.update(task=job.task, condition=job.condition, episode=job.episode, rollout_seed=job.rollout_seed,
                    success=bool(result["success"]), steps=int(result["steps"]),
                    wall_time_s=float(result["wall_time_s"]), env_create_s=float(result.get("env_create_s", 0.0)),
                    reset_s=float(result.get("reset_s", 0.0)), init_source=job.start.init_source,
                    eval_seed=int(seed), max_steps=job.max_steps,
                    replan_every=replan_every, obs_frames=to, init_state_index=job.start.init_state_index,
                    render=settings.render, n_policy_calls=int(result["n_policy_calls"]),
                    n_renders=int(result["n_renders"]), video=result.get("video") or "", suite=job.info.suite,
                    task_key=job.info.key, reference=job.reference,
                    reference_demo=job.reference_demo if job.reference is not None else None, written_at=time.time())
        row = RolloutRow.from_dict(cols).to_dict()
        # the sink (the results store) first: a job killed between the two writes reruns this
        # rollout on resume, and the store keeps the row written last, instead of losing it
        if row_sink is not None:
            row_sink(row)
        if jsonl is not None:
            append_jsonl(jsonl, row)
        new_rows.append(row)
        return row

    def demo_goal(job: RolloutJob, t: int) -> np.ndarray | None:  # inverse dynamics: the demo's future frames
        return None if job.reference is None else ref.next_obs(job.reference, job.reference_demo, t)

    goal = demo_goal if ref is not None else None

    def run(js: list[RolloutJob], fin: Callable[[RolloutJob, dict], dict], desc: str) -> None:
        bar = _progress(len(js), progress, desc)
        try:
            if num_workers == 0:
                run_serial(runner, js, settings, pol, fin, bar, goal=goal)
            else:
                run_pool(runner, js, settings, pol, fin, bar, min(num_workers, len(js)), goal=goal)
        finally:
            bar.close()

    mismatches: list[dict] = []   # video_select="outcome": re-runs that did not repeat their row

    def record_by_outcome(all_rows: list[dict]) -> list[dict]:
        """video_select="outcome": re-run the first ``video_episodes`` successes and failures of each
        (task, condition) that have no video yet, recording them; returns the rows, theirs with the video."""
        rows = {(r["task"], r["condition"], int(r["episode"])): r for r in all_rows}
        rejobs: list[RolloutJob] = []
        target: dict[int, dict] = {}
        for info, cond, steps, rpath in groups:
            mine = sorted((r for r in rows.values() if r["task"] == info.name and r["condition"] == cond),
                          key=lambda r: int(r["episode"]))
            chosen = []
            for ok in (True, False):
                same = [r for r in mine if bool(r["success"]) == ok]
                has = [bool(r.get("video")) and Path(str(r["video"])).is_file() for r in same]
                chosen += [r for r, h in zip(same, has) if not h][:max(0, int(video_episodes) - sum(has))]
            if chosen:
                first = len(rejobs)
                make_jobs(info, cond, steps, rpath, [(int(r["episode"]), int(r["rollout_seed"])) for r in chosen],
                          rejobs, lambda ep: True)
                target.update({j.id: r for j, r in zip(rejobs[first:], chosen)})
        if not rejobs:
            return all_rows
        log.info("evaluate: re-running %d rollouts with video recording (video_select=outcome)", len(rejobs))

        def finish_video(job: RolloutJob, result: dict) -> dict:
            row = target[job.id]
            video = result.get("video") or ""
            if bool(result["success"]) != bool(row["success"]) or int(result["steps"]) != int(row["steps"]):
                mismatches.append({"task": job.task, "condition": job.condition, "episode": job.episode,
                                   "row": (bool(row["success"]), int(row["steps"])),
                                   "rerun": (bool(result["success"]), int(result["steps"]))})
                log.warning("evaluate: %s/%s episode %d re-run for its video gave success=%s in %d steps, its row "
                            "says success=%s in %d steps: video not linked", job.task, job.condition, job.episode,
                            result["success"], result["steps"], row["success"], row["steps"])
                if video and os.path.isfile(video):
                    os.unlink(video)
                return row
            upd = RolloutRow.from_dict({**row, "video": video, "written_at": time.time()}).to_dict()
            if row_sink is not None:
                row_sink(upd)
            if jsonl is not None:
                append_jsonl(jsonl, upd)
            rows[(job.task, job.condition, job.episode)] = upd
            return upd

        run(rejobs, finish_video, "videos")
        return list(rows.values())

    try:
        if jobs:
            run(jobs, finish, "rollouts")
        all_rows = rows_prev + new_rows
        if video_dir is not None and video_select == "outcome":
            all_rows = record_by_outcome(all_rows)
    finally:
        if ref is not None:
            ref.close()
    cols = list(ROLLOUT_COLUMNS)
    df = pd.DataFrame(all_rows)
    if df.empty:
        df = pd.DataFrame(columns=cols)
    rest = [c for c in df.columns if c not in cols]
    df = df[cols + rest].sort_values(["task", "condition", "episode"], kind="stable").reset_index(drop=True)
    df.attrs["policy_calls"] = pol.calls
    df.attrs["policy_batch_sizes"] = list(pol.batch_sizes)
    df.attrs["policy_time_s"] = pol.time_s
    df.attrs["video_mismatches"] = mismatches
    return df


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
