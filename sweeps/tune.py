"""``uwmbench tune``: an optuna study over a method's hyperparameters (configs/tune.yaml).

  uwmbench tune train.method.name=dp n_trials=20 workers=4 launch_with=slurm launcher.partition=gpu \
      "train.data.sources=[{path:data/libero_10/book_caddy.hdf5}]"

Storage is an optuna RDB (SQLite file by default; any SQLAlchemy URL, e.g. postgresql://...).
Each worker (a submitit job through the same launchers as sweeps, or this process with
``launch_with=inline``) runs ``study.optimize`` on the shared storage. A trial trains in chunks of
``report_every`` steps, each resuming from the last checkpoint, reports the validation loss
after each chunk and is pruned when the pruner says so.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Any

from ..config import ConfigError, load_config, to_container

log = logging.getLogger(__name__)


def _set(d: dict, dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    for k in keys[:-1]:
        d = d.setdefault(k, {})
    d[keys[-1]] = value


def suggest(trial, space: dict[str, dict[str, Any]]) -> dict[str, Any]:
    out = {}
    for key, spec in space.items():
        t = spec.get("type", "float")
        if t == "float":
            out[key] = trial.suggest_float(key, float(spec["low"]), float(spec["high"]), log=bool(spec.get("log", False)))
        elif t == "int":
            out[key] = trial.suggest_int(key, int(spec["low"]), int(spec["high"]), log=bool(spec.get("log", False)))
        elif t == "categorical":
            out[key] = trial.suggest_categorical(key, list(spec["choices"]))
        else:
            raise ConfigError(f"tune space {key}: type={t!r} is not float, int or categorical")
    return out


def _storage(cfg: dict[str, Any]) -> str:
    if cfg.get("storage"):
        return cfg["storage"]
    out = Path(cfg["out"]).absolute()
    out.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{out / 'optuna.db'}"


def _make_study(cfg: dict[str, Any], create: bool):
    import optuna
    p = cfg.get("pruner") or {}
    pruner = (optuna.pruners.MedianPruner(n_startup_trials=int(p.get("n_startup_trials", 2)),
                                          n_warmup_steps=int(p.get("n_warmup_steps", 0)))
              if p.get("name", "median") == "median" else optuna.pruners.NopPruner())
    sampler = (optuna.samplers.RandomSampler(seed=cfg.get("seed")) if cfg.get("sampler") == "random"
               else optuna.samplers.TPESampler(seed=cfg.get("seed")))
    storage = optuna.storages.RDBStorage(_storage(cfg), engine_kwargs={"connect_args": {"timeout": 60}}
                                         if _storage(cfg).startswith("sqlite") else {})
    if create:
        return optuna.create_study(study_name=cfg["study"], storage=storage, direction=cfg["direction"],
                                   sampler=sampler, pruner=pruner, load_if_exists=True)
    return optuna.load_study(study_name=cfg["study"], storage=storage, sampler=sampler, pruner=pruner)


def objective(trial, cfg: dict[str, Any]) -> float:
    import optuna
    from ..benchmarks.train import train
    params = suggest(trial, cfg.get("space") or {})
    tcfg = json.loads(json.dumps(cfg["train"]))
    for k, v in params.items():
        _set(tcfg, k, v)
    tcfg.setdefault("trainer", {})
    steps = int(tcfg["trainer"].get("steps", 1000))
    chunk = max(1, int(cfg.get("report_every", 100)))
    tcfg["trainer"]["ckpt_every"] = chunk
    run_dir = Path(cfg["out"]) / cfg["study"] / f"trial_{trial.number:04d}"
    trial.set_user_attr("run_dir", str(run_dir))
    trial.set_user_attr("worker", f"{os.uname().nodename}:{os.getpid()}:{os.environ.get('SLURM_JOB_ID', 'local')}")
    value = math.nan
    done = 0
    while done < steps:
        tcfg["trainer"]["stop_after"] = chunk
        s = train(tcfg, run_dir)
        done = int(s["steps"])
        val = s.get("val") or {}
        if cfg["metric"] not in val:
            val = _last_val(run_dir, cfg["metric"])
        if cfg["metric"] not in val:
            raise ConfigError(f"tune metric {cfg['metric']!r} is not among the validation metrics {sorted(val)} "
                              "(does the data have a validation split? data.val_fraction)")
        value = float(val[cfg["metric"]])
        trial.report(value, done)
        if done < steps and trial.should_prune():
            raise optuna.TrialPruned(f"pruned at step {done} ({cfg['metric']}={value:.4g})")
    return value


def _last_val(run_dir: Path, metric: str) -> dict[str, float]:
    import csv
    p = run_dir / "metrics.csv"
    if not p.is_file():
        return {}
    last: dict[str, float] = {}
    with open(p) as f:
        for r in csv.DictReader(f):
            if r.get(metric) not in (None, ""):
                last = {metric: float(r[metric])}
    return last


def _validation_each_chunk(cfg: dict[str, Any]) -> dict[str, Any]:
    # validation after every chunk = the pruning signal
    cfg = json.loads(json.dumps(cfg))
    cfg["train"].setdefault("trainer", {})["val_every"] = max(1, int(cfg.get("report_every", 100)))
    return cfg


def tune_worker(cfg: dict[str, Any], n_trials: int) -> dict[str, Any]:
    """One worker: ``n_trials`` trials of the shared study (runs inside a submitit job)."""
    import optuna
    logging.basicConfig(level=os.environ.get("UWMBENCH_LOGLEVEL", "INFO"))
    study = _make_study(cfg, create=False)
    study.optimize(lambda t: objective(t, cfg), n_trials=n_trials, catch=(RuntimeError, ValueError))
    return {"worker": os.getpid(), "n_trials": n_trials,
            "best": study.best_value if any(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials) else None}


def resolve(cfg: Any) -> dict[str, Any]:
    full = to_container(cfg)
    known = {"study", "storage", "out", "direction", "metric", "n_trials", "workers", "launch_with", "sampler", "seed",
             "pruner", "report_every", "space", "train"}
    unknown = sorted(set(full) - known)
    if unknown:
        raise ConfigError(f"tune config: unknown key(s) {unknown}; valid: {sorted(known)}")
    if full["direction"] not in ("minimize", "maximize"):
        raise ConfigError(f"tune direction={full['direction']!r} must be minimize or maximize")
    full["out"] = str(Path(full["out"]).absolute())
    full["study"] = full.get("study") or f"tune-{full['train']['method']['name']}"
    full["storage"] = _storage(full)
    return _validation_each_chunk(full)


def launch_study(cfg: dict[str, Any], launcher_overrides: list[str] = ()) -> list:
    """Create the study and start ``workers`` workers; returns their jobs (empty when inline)."""
    from .grids import Resources
    from .launch import make_executor
    from .sweep import load_launcher
    _make_study(cfg, create=True)
    workers = max(1, int(cfg["workers"]))
    per = [cfg["n_trials"] // workers + (1 if i < cfg["n_trials"] % workers else 0) for i in range(workers)]
    per = [n for n in per if n > 0]
    if cfg["launch_with"] == "inline":
        for n in per:
            tune_worker(cfg, n)
        return []
    launcher = load_launcher(cfg["launch_with"], list(launcher_overrides))
    folder = Path(launcher.get("folder") or Path(cfg["out"]) / "submitit") / time.strftime("%Y%m%d-%H%M%S")
    ex = make_executor(launcher, folder, Resources(gpus=0, cpus=1, mem_gb=4, time_h=24), job_name=f"tune-{cfg['study']}")
    with ex.batch():
        jobs = [ex.submit(tune_worker, cfg, n) for n in per]
    log.info("study %s: %d worker(s) on %s, storage %s", cfg["study"], len(jobs), cfg["launch_with"], cfg["storage"])
    return jobs


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="uwmbench tune", description=__doc__.split("\n\n")[0])
    p.add_argument("--wait", action="store_true", help="wait for the workers and print the best trial")
    p.add_argument("--show", action="store_true", help="print the study's trials and exit")
    p.add_argument("overrides", nargs="*", help="configs/tune.yaml overrides; launcher.<key>=v for the launcher")
    a = p.parse_intermixed_args(argv)
    launcher_ov = [o for o in a.overrides if o.startswith("launcher.")]
    cfg = resolve(load_config("tune", [o for o in a.overrides if not o.startswith("launcher.")]))
    if a.show:
        st = _make_study(cfg, create=False)
        print(st.trials_dataframe().to_string())
        return 0
    jobs = launch_study(cfg, launcher_ov)
    print(f"study {cfg['study']} ({cfg['storage']}): {len(jobs) or 'inline'} worker(s) started"
          + (": " + ", ".join(str(j.job_id) for j in jobs) if jobs else ""))
    if a.wait:
        for j in jobs:
            j.result()
        st = _make_study(cfg, create=False)
        print(st.trials_dataframe()[["number", "state", "value"]].to_string(index=False))
        print(f"best: {st.best_value} {st.best_params}")
    return 0
