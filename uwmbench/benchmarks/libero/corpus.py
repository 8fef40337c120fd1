"""``uwmbench corpus``: an offline demonstration corpus of a LIBERO suite, one HDF5 per task in
LIBERO's official layout and naming (``<out>/<suite>/<TASK_NAME>_demo.hdf5``, what the released
datasets are called), collected by the scripted expert from LIBERO's own samplers (never the
evaluation init states).

Every task is one :func:`~uwmbench.benchmarks.libero.collect.collect` call: it appends its demos to
``<file>.partial`` as they finish and renames the file when it holds ``episodes`` demos, so a rerun
after a kill resumes every unfinished task and skips the finished ones. A task the expert does not
solve keeps its partial file and is reported as short (the coverage table,
``uwmbench tasks coverage``, says which tasks and why). The per-task summary (demos kept, expert
success rate, frames, MB, minutes) is rewritten to ``<out>/<suite>/corpus.csv`` and ``corpus.md``
after every task.

    uwmbench corpus suite=libero_90 episodes=5 workers=2 out=~/uwmbench/corpus   # ~/uwmbench/corpus/libero_90/*.hdf5
    uwmbench corpus suite=libero_10 tasks=[libero_10:0] episodes=2 out=/tmp/corpus image_size=64
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional

import pandas as pd

from uwmbench.fileio import atomic_write_text

log = logging.getLogger(__name__)


@dataclass
class CorpusConfig:
    suite: str = "libero_90"
    tasks: List[str] = field(default_factory=list)   # a subset of the suite (default: every task)
    episodes: int = 5                     # demos per task
    workers: int = 2
    out: Optional[str] = None             # default: $UWMBENCH_RUNS/corpus (files under <out>/<suite>/)
    seed: int = 0
    image_size: int = 128                 # the official files' 128 px; 64 or 72 keeps a 2-core corpus small
    max_attempts: int = 3                 # attempts per demo in one call (a rerun makes new ones)
    max_steps: int = 600


def official_name(task_name: str) -> str:
    """The released dataset's file name of a task: ``<TASK_NAME>_demo.hdf5``."""
    return f"{task_name}_demo.hdf5"


def _row(task: str, path: Path, res: dict | None, wall_s: float) -> dict:
    import h5py
    done = path.is_file()
    f = path if done else path.with_name(path.name + ".partial")
    frames, demos = 0, 0
    if f.is_file():
        with h5py.File(f, "r") as h:
            data = h.get("data")
            demos = len(data.keys()) if data is not None else 0
            frames = int(sum(data[k].attrs["num_samples"] for k in data.keys())) if data is not None else 0
    return {"task": task, "file": str(f.name), "complete": done, "demos": demos, "frames": frames,
            "mb": round(f.stat().st_size / 2 ** 20, 1) if f.is_file() else 0.0,
            "expert_success_rate": (res or {}).get("expert_success_rate"), "minutes": round(wall_s / 60, 2)}


def _write_summary(folder: Path, rows: list[dict], cfg: CorpusConfig) -> pd.DataFrame:
    df = pd.DataFrame(rows)
    atomic_write_text(folder / "corpus.csv", df.to_csv(index=False))
    done = int(df["complete"].sum()) if len(df) else 0
    lines = [f"# Offline corpus: {cfg.suite}", "",
             f"{done} of {len(df)} tasks complete ({cfg.episodes} demos each, {cfg.image_size} px, seed {cfg.seed}); "
             f"{int(df['demos'].sum()) if len(df) else 0} demos, {int(df['frames'].sum()) if len(df) else 0} frames, "
             f"{df['mb'].sum() if len(df) else 0:.0f} MB, {df['minutes'].sum() if len(df) else 0:.1f} min of collection "
             "in this call and earlier ones summed per task.", "",
             "| task | demos | complete | expert success | frames | MB | minutes |", "|---|---|---|---|---|---|---|"]
    for _, r in df.iterrows():
        rate = "–" if r["expert_success_rate"] is None or r["expert_success_rate"] != r["expert_success_rate"] \
            else f"{r['expert_success_rate']:.2f}"
        lines.append(f"| {r['task']} | {r['demos']} | {'yes' if r['complete'] else 'no'} | {rate} | {r['frames']} | "
                     f"{r['mb']} | {r['minutes']} |")
    atomic_write_text(folder / "corpus.md", "\n".join(lines) + "\n")
    return df


def corpus(cfg: CorpusConfig, progress: bool = True) -> pd.DataFrame:
    """Collect (or resume) the corpus of ``cfg``; returns the per-task summary."""
    from .collect import CollectConfig, collect
    from .tasks import list_tasks, resolve

    if cfg.episodes < 1 or cfg.workers < 1:
        raise ValueError(f"corpus: episodes and workers must be >= 1 (got {cfg.episodes}, {cfg.workers})")
    names = [s.task_name for s in list_tasks(cfg.suite)]   # KeyError for an unknown suite
    if cfg.tasks:
        picked = [resolve(t) for t in cfg.tasks]
        bad = [f"{s}/{n}" for s, n in picked if s != cfg.suite]
        if bad:
            raise ValueError(f"corpus: tasks {bad} are not in suite {cfg.suite}")
        names = [n for _, n in picked]
    root = os.environ.get("UWMBENCH_RUNS") or os.path.expanduser("~/uwmbench")
    folder = Path(os.path.expanduser(cfg.out or os.path.join(root, "corpus"))) / cfg.suite
    folder.mkdir(parents=True, exist_ok=True)
    old = {}
    if (folder / "corpus.csv").is_file():   # minutes and success rates of earlier calls
        prev = pd.read_csv(folder / "corpus.csv")
        old = {r["task"]: r for r in prev.to_dict("records")}
    rows = []
    for i, name in enumerate(names):
        path = folder / official_name(name)
        before = old.get(name, {})
        if path.is_file():
            rows.append({**_row(name, path, None, float(before.get("minutes") or 0) * 60),
                         "expert_success_rate": before.get("expert_success_rate")})
            continue
        log.info("corpus %s: task %d/%d %s", cfg.suite, i + 1, len(names), name)
        t0 = time.time()
        res = collect(CollectConfig(task=f"{cfg.suite}/{name}", condition="id", episodes=cfg.episodes,
                                    workers=cfg.workers, out=str(path), seed=cfg.seed, image_size=cfg.image_size,
                                    max_attempts=cfg.max_attempts, max_steps=cfg.max_steps), progress=progress)
        rows.append(_row(name, path, res, time.time() - t0 + float(before.get("minutes") or 0) * 60))
        _write_summary(folder, rows, cfg)
    return _write_summary(folder, rows, cfg)


def main(argv: list[str]) -> int:
    if argv and argv[0] in ("-h", "--help"):
        print(__doc__)
        print("keys: " + ", ".join(CorpusConfig.__dataclass_fields__))
        return 0
    from uwmbench.config import typed_args

    try:
        cfg = typed_args(argv, CorpusConfig, "corpus")
        df = corpus(cfg)
    except (KeyError, ValueError) as e:   # ConfigError is a ValueError
        print(f"uwmbench corpus: {e.args[0] if e.args else e}")
        return 2
    short = df[~df["complete"]]
    print(f"corpus {cfg.suite}: {int(df['complete'].sum())}/{len(df)} tasks complete, {int(df['demos'].sum())} demos, "
          f"{df['mb'].sum():.0f} MB, {df['minutes'].sum():.1f} min"
          + (f"; short (rerun to resume; see `uwmbench tasks coverage`): {list(short['task'])}" if len(short) else ""))
    return 0 if not len(short) else 1
