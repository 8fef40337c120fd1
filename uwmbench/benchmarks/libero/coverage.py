"""``uwmbench tasks coverage``: how often the scripted expert solves each task of a suite.

For every task, ``episodes`` placements drawn by LIBERO's own samplers (the seeds ``uwmbench
collect`` uses, never the evaluation init states) are planned by the expert without rendering;
LIBERO's success check decides. One row per episode is appended to ``<out>/episodes.jsonl`` as it
finishes (a rerun skips the written ones: resumable after a kill); the per-task table
(``coverage.csv`` and ``coverage.md``: task, skill family, success rate, episodes, mean length of
the successes, the first failure reason) is rewritten after every finished task. Workers run in
parallel, one task at a time each (one simulator per task and worker).

    uwmbench tasks coverage suite=libero_90 episodes=10 workers=2
    uwmbench tasks coverage tasks=[libero_90:0,book_caddy] episodes=4 out=/tmp/cov
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, List, Optional

import pandas as pd

from uwmbench.fileio import atomic_write_text
from uwmbench.rows import append_jsonl, read_jsonl
from .workers import worker_results

log = logging.getLogger(__name__)

EPISODES_FILE = "episodes.jsonl"


@dataclass
class CoverageConfig:
    suite: Optional[str] = "libero_90"    # every task of a suite, or
    tasks: List[str] = field(default_factory=list)   # these tasks (short name, suite/name or suite:index)
    episodes: int = 10
    workers: int = 2
    seed: int = 0
    max_steps: int = 600                  # the expert's step cap (uwmbench collect's default)
    out: Optional[str] = None             # default: $UWMBENCH_RUNS/coverage/<suite or "tasks">


def skill_family(goals: list) -> str:
    """The skills a BDDL goal asks for, e.g. ``pick-place``, ``drawer open``, ``turn on``,
    ``pick-place + drawer close``."""
    labels = []
    for g in goals:
        kind = str(g[0]).lower()
        target = " ".join(str(x) for x in g[1:]).lower()
        if kind in ("on", "in"):
            labels.append("pick-place")
        elif kind in ("open", "close"):
            fixture = next((f for f in ("microwave", "drawer", "cabinet", "door") if f in target), "fixture")
            labels.append(f"{'drawer' if fixture == 'cabinet' else fixture} {kind}")
        elif kind in ("turnon", "turnoff"):
            labels.append(f"turn {kind[4:]}")
        else:
            labels.append(kind)
    return " + ".join(dict.fromkeys(labels)) or "none"


def _worker(cfg: dict, jobs, results) -> None:
    os.environ.setdefault("MUJOCO_GL", "egl")
    from .collect import CAP_INDEX, placement_seed
    from .envs import LiberoEnv
    from .expert import ExpertConfig, run_episode
    from .tasks import get_task

    ecfg = ExpertConfig(max_steps=cfg["max_steps"])
    while True:
        job = jobs.get()
        if job is None:
            return
        task, episodes = job
        try:
            spec = get_task(task, "id")
            env = LiberoEnv(spec, seed=0, camera_size=32, render="lazy", obs_frames=1, replan_every=1,
                            max_steps=10 ** 6, settle_steps=0)
        except Exception as e:  # the task cannot be built: every episode fails, with the reason
            for ep in episodes:
                results.put({"task": task, "episode": ep, "success": False, "steps": 0, "plan_s": 0.0,
                             "family": "?", "skills": [], "error": f"env: {e!r}"})
            continue
        try:
            inner = getattr(env._env, "env", env._env)   # LIBERO's problem under its render wrapper
            family = skill_family(inner.parsed_problem["goal_state"])
            for ep in episodes:
                t0 = time.time()
                row = {"task": task, "key": spec.key, "language": spec.language, "episode": ep, "family": family}
                try:
                    env.reset(init_state=None, seed=placement_seed(cfg["seed"], spec.key, "id", ep, 0), settle_steps=0)
                    r = run_episode(env._env, None, ecfg, seed=int(cfg["seed"]) * 1_000_003 + ep * 101,
                                    settle_steps=CAP_INDEX)
                    row.update(success=bool(r.success), steps=int(r.steps), skills=list(r.skills), error=r.error)
                except Exception as e:  # a simulator error counts as a failed episode
                    row.update(success=False, steps=0, skills=[], error=repr(e))
                row["plan_s"] = round(time.time() - t0, 2)
                results.put(row)
        finally:
            env.close()


def summarize(rows: list[dict[str, Any]], order: list[str] | None = None) -> pd.DataFrame:
    """Per task: family, successes, episodes, success rate, mean length of the successes (env
    steps), planning seconds per episode, and the most common failure reason."""
    if not rows:
        return pd.DataFrame(columns=["task", "family", "successes", "episodes", "success_rate", "mean_steps",
                                     "plan_s", "failure"])
    df = pd.DataFrame(rows)
    out = []
    for task, g in df.groupby("task", sort=False):
        ok = g[g["success"].astype(bool)]
        errs = g.loc[~g["success"].astype(bool), "error"].fillna("").replace("", "not solved within the step cap")
        out.append({"task": task, "family": g["family"].iloc[0], "successes": int(len(ok)), "episodes": int(len(g)),
                    "success_rate": len(ok) / len(g), "mean_steps": float(ok["steps"].mean()) if len(ok) else None,
                    "plan_s": float(g["plan_s"].mean()),
                    "failure": errs.value_counts().index[0][:120] if len(errs) else ""})
    s = pd.DataFrame(out)
    if order:
        s = s.set_index("task").loc[[t for t in order if t in set(s["task"])]].reset_index()
    return s


def _write_tables(out: Path, summary: pd.DataFrame, cfg: CoverageConfig, target: float = 0.8) -> None:
    atomic_write_text(out / "coverage.csv", summary.to_csv(index=False))
    n_ok = int((summary["success_rate"] >= target).sum())
    lines = [f"# Scripted-expert coverage ({cfg.suite if not cfg.tasks else ', '.join(cfg.tasks)})", "",
             f"{n_ok} of {len(summary)} tasks at >= {target:.1f} success; {cfg.episodes} placements per task "
             f"(LIBERO's samplers, seed {cfg.seed}), expert step cap {cfg.max_steps}. Rebuilt by "
             "`uwmbench tasks coverage` from episodes.jsonl.", "",
             "| task | family | success | episodes | mean steps | failure |", "|---|---|---|---|---|---|"]
    for _, r in summary.iterrows():
        steps = "–" if r["mean_steps"] is None or r["mean_steps"] != r["mean_steps"] else f"{r['mean_steps']:.0f}"
        lines.append(f"| {r['task']} | {r['family']} | {r['successes']}/{r['episodes']} = {r['success_rate']:.2f} | "
                     f"{r['episodes']} | {steps} | {str(r['failure']).replace('|', '/')} |")
    by_family = summary.groupby("family")["success_rate"].agg(["count", "mean"])
    lines += ["", "| family | tasks | mean success |", "|---|---|---|"]
    lines += [f"| {f} | {int(r['count'])} | {r['mean']:.2f} |" for f, r in by_family.iterrows()]
    atomic_write_text(out / "coverage.md", "\n".join(lines) + "\n")


def coverage(cfg: CoverageConfig, progress: bool = True) -> pd.DataFrame:
    """Run (or resume) the coverage of ``cfg``; returns the per-task table."""
    from tqdm import tqdm

    from .tasks import list_tasks, resolve

    if cfg.episodes < 1 or cfg.workers < 1:
        raise ValueError(f"coverage: episodes and workers must be >= 1 (got {cfg.episodes}, {cfg.workers})")
    if cfg.tasks:
        tasks = []
        for t in cfg.tasks:
            suite, name = resolve(t)   # KeyError naming close matches for an unknown task
            tasks.append(f"{suite}/{name}")
    elif cfg.suite:
        tasks = [s.key for s in list_tasks(cfg.suite)]
    else:
        raise ValueError("coverage: give suite=<libero suite> or tasks=[...]")
    root = os.environ.get("UWMBENCH_RUNS") or os.path.expanduser("~/uwmbench")
    out = Path(cfg.out or Path(root) / "coverage" / (cfg.suite if not cfg.tasks else "tasks"))
    out.mkdir(parents=True, exist_ok=True)
    rows = [r for r in read_jsonl(out / EPISODES_FILE) if r.get("task") in set(tasks)]
    done = {(r["task"], int(r["episode"])) for r in rows}
    todo = [(t, [e for e in range(cfg.episodes) if (t, e) not in done]) for t in tasks]
    todo = [(t, eps) for t, eps in todo if eps]
    n = sum(len(eps) for _, eps in todo)
    if n:
        log.info("coverage: %d tasks, %d episodes to plan (%d written before) -> %s", len(todo), n, len(done), out)
        left = {t: len(eps) for t, eps in todo}
        bar = tqdm(total=n, desc=f"coverage {cfg.suite if not cfg.tasks else 'tasks'}", unit="ep", disable=not progress)
        try:
            for r in worker_results(_worker, dict(cfg.__dict__), todo, cfg.workers, n, "coverage"):
                append_jsonl(out / EPISODES_FILE, r)
                rows.append(r)
                left[r["task"]] -= 1
                bar.update(1)
                bar.set_postfix(solved=f"{sum(bool(x['success']) for x in rows)}/{len(rows)}")
                if left[r["task"]] == 0:   # a task finished: the table as it stands
                    _write_tables(out, summarize(rows, tasks), cfg)
        finally:
            bar.close()
    summary = summarize(rows, tasks)
    _write_tables(out, summary, cfg)
    return summary


def main(argv: list[str]) -> int:
    if argv and argv[0] in ("-h", "--help"):
        print(__doc__)
        print("keys: " + ", ".join(CoverageConfig.__dataclass_fields__))
        return 0
    from uwmbench.config import typed_args

    try:
        s = coverage(typed_args(argv, CoverageConfig, "tasks coverage"))
    except (KeyError, ValueError) as e:   # ConfigError is a ValueError
        print(f"uwmbench tasks coverage: {e.args[0] if e.args else e}")
        return 2
    ok = int((s["success_rate"] >= 0.8).sum())
    print(s.to_string(index=False, max_colwidth=60))
    print(f"{ok} of {len(s)} tasks at >= 0.8 expert success")
    return 0
