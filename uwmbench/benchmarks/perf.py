"""``uwmbench perf``: speed benchmarks that print a table (and write it as CSV + Markdown).

``uwmbench perf eval [task=book_caddy] [steps=64] [rollouts=4] [workers=2] [method=bc] [out=DIR]``
    LIBERO evaluation throughput, same rollouts and the same (tiny, untrained, so every rollout
    runs to ``steps``) policy under:

    - ``serial_full``:  one env in this process, every step rendered, the simulator rebuilt at every
      reset (robosuite's hard reset, LIBERO's default), robosuite's own physics step and render
      (engine "robosuite"), policy batch 1 (how the public UWM code evaluates);
    - ``serial_lazy``:  one env, only the frames the policy reads rendered, scenes restored without
      rebuilding the simulator, ``engine`` (default "fast": robosuite's simulation and frames bit for
      bit, one forward pass per physics sub-step and cameras given only the geoms in their view);
    - ``pool_lazy``:    our evaluator: ``workers`` env processes, lazy rendering, ``engine``, policy
      calls batched across workers when waiting for a batch costs less than a call.

    Columns: end-to-end wall time (env creation and worker start-up included), env steps/s,
    rollouts/hour, camera frames rendered per step, mean reset time (scene restore or rebuild +
    settle physics, camera rendering excluded), policy calls and mean batch size. With a short
    horizon the fixed costs (env creation ~5 s) weigh more than in a real 520-1000-step evaluation.

    ``repeat=N`` runs the variants N times, interleaved (serial_full, serial_lazy, pool_lazy,
    serial_full, ...), so that a machine whose speed drifts slows all of them alike. The table
    then holds each variant's median run (by env steps/s) and ``speedup`` is the median of the
    per-round speed-ups (each against that round's serial_full), with ``speedup_min``/``_max``;
    every run is also written to ``perf_eval_runs.csv``.

``uwmbench perf train ...``
    training throughput of every method (``uwmbench.benchmarks.perf_train``).
"""
from __future__ import annotations

import dataclasses
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch
import yaml

from uwmbench.config import ConfigError, typed
from uwmbench.fileio import atomic_write_text as _atomic_write, markdown_table
from uwmbench.methods.base import build_method, registered_methods
from .evaluate import EvalOptions, evaluate

VARIANTS = ("serial_full", "serial_lazy", "pool_lazy")


@dataclass
class PerfEvalConfig:
    task: str = "book_caddy"
    condition: str = "id"
    steps: int = 64            # max_steps per rollout (the policy never succeeds: every rollout runs this long)
    rollouts: int = 4
    workers: int = 2
    method: str = "bc"
    method_size: str = "tiny"
    replan_every: int = EvalOptions.replan_every   # the evaluator's default (the public code's 16)
    camera_size: int = 128
    variants: list[str] = field(default_factory=lambda: list(VARIANTS))
    engine: str = "fast"       # of the lazy variants; serial_full is always robosuite's own code
    out: str | None = None
    seed: int = 0
    repeat: int = 1            # rounds of all variants, interleaved; the table reports medians


def _parse_kv(argv: list[str], schema: type) -> object:
    values = {}
    for a in argv:
        if "=" not in a:
            raise ConfigError(f"argument {a!r} is not of the form key=value")
        k, v = a.split("=", 1)
        values[k.strip()] = yaml.safe_load(v)
    return typed(values, schema, "perf")


def run_eval_perf(cfg: PerfEvalConfig):
    """All runs (``repeat`` rounds of ``variants``), one row each, with a ``round`` column and,
    when serial_full ran, ``speedup`` against the same round's serial_full. See :func:`summarize`."""
    bad = [v for v in cfg.variants if v not in VARIANTS]
    if bad:
        raise ValueError(f"variants {bad} unknown; known: {VARIANTS}")
    if cfg.repeat < 1:
        raise ConfigError(f"perf: repeat={cfg.repeat} must be >= 1")
    torch.set_num_threads(1)
    cls = registered_methods()[cfg.method]
    method = build_method(cfg.method, size=cfg.method_size, **cls.offline_overrides(cfg.method_size))
    if cfg.engine == "fast" and any(v != "serial_full" for v in cfg.variants):
        _warm_model_cache(cfg)
    rows = []
    for rnd, variant in ((r, v) for r in range(cfg.repeat) for v in cfg.variants):
        workers = cfg.workers if variant == "pool_lazy" else 0
        render = "every_step" if variant == "serial_full" else "lazy"
        reset_mode = "rebuild" if variant == "serial_full" else "scene"
        engine = "robosuite" if variant == "serial_full" else cfg.engine
        t0 = time.time()
        opts = EvalOptions(conditions=[cfg.condition], n_rollouts=cfg.rollouts, seed=cfg.seed, workers=workers,
                           max_steps=cfg.steps, replan_every=cfg.replan_every, camera_size=cfg.camera_size,
                           render=render, engine=engine)
        df = evaluate(method, [cfg.task], opts, out_dir=None, progress=True, reset_mode=reset_mode)
        wall = time.time() - t0
        steps = int(df["steps"].sum())
        sizes = df.attrs.get("policy_batch_sizes", [])
        rows.append({
            "round": rnd, "variant": variant, "workers": workers, "render": render, "rollouts": len(df), "steps_per_rollout": cfg.steps,
            "wall_s": round(wall, 1), "env_steps_per_s": round(steps / wall, 2),
            "rollouts_per_hour": round(len(df) / wall * 3600, 1),
            "mean_rollout_s": round(float(df["wall_time_s"].mean()), 1),
            "renders_per_step": round(float(df["n_renders"].sum()) / max(steps, 1), 3),
            "reset_s": round(float(df["reset_s"].mean()), 3), "reset": reset_mode, "engine": engine,
            "policy_calls": len(sizes), "mean_batch": round(sum(sizes) / max(len(sizes), 1), 2),
            "policy_s": round(float(df.attrs.get("policy_time_s", 0.0)), 1),
        })
        print(f"perf eval: {variant}: {rows[-1]}", file=sys.stderr, flush=True)
    table = pd.DataFrame(rows)
    if "serial_full" in set(table["variant"]):
        ref = table[table["variant"] == "serial_full"].set_index("round")["env_steps_per_s"]
        table["speedup"] = (table["env_steps_per_s"] / table["round"].map(ref)).round(2)
    return table


def _warm_model_cache(cfg: PerfEvalConfig) -> None:
    """Build the task's env once, untimed, so that every timed variant of the ``fast`` engine finds
    the compiled model in the model cache (as every evaluation after a task's first does)."""
    from .evaluation.libero_runner import LiberoRunner
    from .libero.envs import LiberoEnv

    spec = LiberoRunner().task(cfg.task, cfg.condition).spec
    LiberoEnv(spec, camera_size=cfg.camera_size, engine="fast").close()


def summarize(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per variant (in the order they ran): its median run by env steps/s (with an even
    number of rounds, the faster of the two middle ones), ``rounds``, and with a ``speedup`` column
    the median per-round speed-up and its range."""
    out = []
    for variant in dict.fromkeys(runs["variant"]):
        r = runs[runs["variant"] == variant].sort_values("env_steps_per_s").reset_index(drop=True)
        row = r.iloc[len(r) // 2].drop(labels=["round"]).to_dict()
        row["rounds"] = len(r)
        if "speedup" in r:
            row["speedup"] = round(float(r["speedup"].median()), 2)
            row["speedup_min"], row["speedup_max"] = float(r["speedup"].min()), float(r["speedup"].max())
        out.append(row)
    return pd.DataFrame(out)


def _write(out: Path, name: str, table, header: str) -> None:
    _atomic_write(out / f"{name}.csv", table.to_csv(index=False))
    _atomic_write(out / f"{name}.md", header + "\n\n" + markdown_table(table, None) + "\n")


def _host() -> str:
    return f"{platform.node()} {os.cpu_count()} CPUs, MUJOCO_GL={os.environ.get('MUJOCO_GL', '')}"


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    sub, rest = argv[0], argv[1:]
    if sub == "train":
        from . import perf_train

        return int(perf_train.main(rest) or 0)
    if sub != "eval":
        print(f"uwmbench perf: unknown benchmark {sub!r}; use `perf eval` or `perf train`", file=sys.stderr)
        return 2
    if any(a in ("-h", "--help") for a in rest):
        print(__doc__)
        for f in dataclasses.fields(PerfEvalConfig):
            d = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
            print(f"  {f.name}={d}")
        return 0
    cfg = _parse_kv(rest, PerfEvalConfig)
    runs = run_eval_perf(cfg)
    table = summarize(runs)
    out = Path(cfg.out) if cfg.out else Path("runs") / "perf" / f"eval-{time.strftime('%Y%m%d-%H%M%S')}"
    header = (f"# perf eval: {cfg.task}/{cfg.condition}, {cfg.rollouts} rollouts x {cfg.steps} steps, "
              f"policy {cfg.method}/{cfg.method_size}, replan_every={cfg.replan_every}, "
              f"{cfg.camera_size}px, {cfg.repeat} round(s) (median run per variant), host: {_host()}")
    _write(out, "perf_eval", table, header)
    _write(out, "perf_eval_runs", runs, header.replace("(median run per variant)", "(every run)"))
    print(header)
    print(markdown_table(table, None))
    print(f"\nwritten: {out / 'perf_eval.csv'}, {out / 'perf_eval.md'}, {out / 'perf_eval_runs.csv'}", file=sys.stderr)
    return 0


__all__ = ["main", "run_eval_perf", "summarize", "PerfEvalConfig"]
