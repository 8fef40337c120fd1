"""``uwmbench tune``: an optuna study over a method's hyperparameters (uwmbench/configs/tune.yaml).

  uwmbench tune train.method.name=dp n_trials=20 workers=4 launch_with=slurm launcher.partition=gpu \
      "train.data.sources=[{path:data/libero_10/book_caddy.hdf5}]"

Storage is an optuna RDB (SQLite file by default; any SQLAlchemy URL, e.g. postgresql://...).
Each worker (a submitit job through the same launchers as sweeps, or this process with
``launch_with=inline``) runs ``study.optimize`` on the shared storage. A trial trains in chunks of
``report_every`` steps, each resuming from the last checkpoint, reports the validation loss
after each chunk and is pruned when the pruner says so.

Robustness: trials send a heartbeat to the storage (``heartbeat_interval``); a trial whose
process was killed is failed by the next worker or ``uwmbench tune`` of the study once its
heartbeat is ``grace_period`` old, and re-queued (``failed_trial_retries`` times) with the same
parameters, resuming from the killed trial's checkpoints. The sampler's seed differs per
invocation and per worker (derived from ``seed`` and the study's trial count when a seed is
given, so a given seed reproduces a study). A study records its training budget (train steps
and batch size) and refuses workers with another budget unless ``allow_budget_change=true``.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import math
import os
import secrets
import time
import warnings
from pathlib import Path
from typing import Any

import optuna
from omegaconf import OmegaConf

from uwmbench.benchmarks.train import train
from uwmbench.config import ConfigError, check_config, check_method_section, load_config, to_container
from uwmbench.methods import get_method_class
from uwmbench.run_dir import RunDir
from uwmbench.schemas import DataConfig, TrainerConfig, method_schema
from .grids import Resources
from .launch import make_executor
from uwmbench.lease import run_lease
from .launch import load_launcher

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
    p = cfg.get("pruner") or {}
    pruner = (optuna.pruners.MedianPruner(n_startup_trials=int(p.get("n_startup_trials", 2)),
                                          n_warmup_steps=int(p.get("n_warmup_steps", 0)))
              if p.get("name", "median") == "median" else optuna.pruners.NopPruner())
    seed = cfg.get("sampler_seed", cfg.get("seed"))  # launch_study sets a seed per worker and invocation
    sampler = (optuna.samplers.RandomSampler(seed=seed) if cfg.get("sampler") == "random"
               else optuna.samplers.TPESampler(seed=seed))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # heartbeat_interval
        storage = optuna.storages.RDBStorage(_storage(cfg), engine_kwargs={"connect_args": {"timeout": 60}}
                                             if _storage(cfg).startswith("sqlite") else {}, **_heartbeat_kwargs(cfg))
    if create:
        return optuna.create_study(study_name=cfg["study"], storage=storage, direction=cfg["direction"],
                                   sampler=sampler, pruner=pruner, load_if_exists=True)
    return optuna.load_study(study_name=cfg["study"], storage=storage, sampler=sampler, pruner=pruner)


def _heartbeat_kwargs(cfg: dict[str, Any]) -> dict[str, Any]:
    """RDBStorage heartbeat: a killed trial is failed once its heartbeat is ``grace_period`` old
    and retried ``failed_trial_retries`` times (optuna's retry callback)."""
    interval = cfg.get("heartbeat_interval")
    if not interval:
        return {}
    kw: dict[str, Any] = {"heartbeat_interval": int(interval)}
    if cfg.get("grace_period"):
        kw["grace_period"] = int(cfg["grace_period"])
    retries = int(cfg.get("failed_trial_retries") or 0)
    if retries > 0:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # experimental / deprecated-name warnings
            cb_cls = getattr(optuna.storages, "RetryHeartbeatStaleTrialCallback", None)
            if cb_cls is not None:  # optuna >= 4.9
                kw["heartbeat_stale_trial_callback"] = cb_cls(max_retry=retries)
            else:
                kw["failed_trial_callback"] = optuna.storages.RetryFailedTrialCallback(max_retry=retries)
    return kw


def fail_stale_trials(study) -> None:
    """Fail (and re-queue, see failed_trial_retries) the trials whose process stopped beating."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        optuna.storages.fail_stale_trials(study)


def budget(cfg: dict[str, Any]) -> dict[str, Any]:
    """The training budget of one trial (not counting what the space tunes)."""
    tr = (cfg.get("train") or {}).get("trainer") or {}
    space = cfg.get("space") or {}
    return {k: (f"tuned: {space[k]}" if k in space else tr.get(k.split(".", 1)[1]))
            for k in ("trainer.steps", "trainer.batch_size")}


def check_budget(study, cfg: dict[str, Any], record: bool = True) -> None:
    """A study records its budget (user attr ``budget``) and refuses another one unless
    ``allow_budget_change``: trials of different budgets are not comparable."""
    want = json.loads(json.dumps(budget(cfg)))
    have = study.user_attrs.get("budget")
    if have is None or have == want:
        if have is None and record:
            study.set_user_attr("budget", want)
        return
    if not cfg.get("allow_budget_change"):
        raise ConfigError(f"study {study.study_name!r} was run with budget {have}, this invocation asks for {want}: "
                          "its trials would not be comparable. Use another study name, the same budget, or "
                          "allow_budget_change=true")
    if record:
        log.warning("study %s: budget changed from %s to %s (allow_budget_change=true)", study.study_name, have, want)
        study.set_user_attr("budget", want)
        study.set_user_attr("budget_history", list(study.user_attrs.get("budget_history") or [have]) + [want])


def objective(trial, cfg: dict[str, Any]) -> float:
    params = suggest(trial, cfg.get("space") or {})
    tcfg = json.loads(json.dumps(cfg["train"]))
    for k, v in params.items():
        _set(tcfg, k, v)
    tcfg.setdefault("trainer", {})
    steps = int(tcfg["trainer"].get("steps", 1000))
    chunk = max(1, int(cfg.get("report_every", 100)))
    tcfg["trainer"]["ckpt_every"] = chunk
    # a retried trial (its process was killed) has the user attrs of the original: resume in its folder
    run_dir = Path(trial.user_attrs.get("run_dir") or Path(cfg["out"]) / cfg["study"] / f"trial_{trial.number:04d}")
    trial.set_user_attr("run_dir", str(run_dir))
    trial.set_user_attr("budget", budget(cfg))
    trial.set_user_attr("sampler_seed", cfg.get("sampler_seed", cfg.get("seed")))
    trial.set_user_attr("worker", f"{os.uname().nodename}:{os.getpid()}:{os.environ.get('SLURM_JOB_ID', 'local')}")
    with run_lease(run_dir, f"uwmbench tune trial {trial.number}"):  # a retried trial's folder may be busy
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
    """The last logged value of ``metric`` in the trial's ``metrics.csv`` ({} when never logged)."""
    v = RunDir(run_dir).last_metric(metric)
    return {} if v is None else {metric: v}


def _validation_each_chunk(cfg: dict[str, Any]) -> dict[str, Any]:
    # validation after every chunk = the pruning signal
    cfg = json.loads(json.dumps(cfg))
    cfg["train"].setdefault("trainer", {})["val_every"] = max(1, int(cfg.get("report_every", 100)))
    return cfg


def tune_worker(cfg: dict[str, Any], n_trials: int) -> dict[str, Any]:
    """One worker: ``n_trials`` trials of the shared study (runs inside a submitit job)."""
    logging.basicConfig(level=os.environ.get("UWMBENCH_LOGLEVEL", "INFO"))
    study = _make_study(cfg, create=False)
    check_budget(study, cfg, record=False)
    study.optimize(lambda t: objective(t, cfg), n_trials=n_trials, catch=(RuntimeError, ValueError))
    return {"worker": os.getpid(), "n_trials": n_trials,
            "best": study.best_value if any(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials) else None}


def resolve(cfg: Any) -> dict[str, Any]:
    full = to_container(cfg)
    check_config("tune", OmegaConf.create(full))  # the same strict schema as composition (for dicts from Python)
    full["train"]["method"] = check_method_section(full["train"]["method"], "train.method")
    _check_space(full)
    full["out"] = str(Path(full["out"]).absolute())
    full["study"] = full.get("study") or f"tune-{full['train']['method']['name']}"
    full["storage"] = _storage(full)
    return _validation_each_chunk(full)


def _check_space(full: dict[str, Any]) -> None:
    """Every key of ``space`` must name a key of the train config (a typo would sample a value
    nothing reads)."""
    train = full["train"]
    section_keys = {"trainer": {f.name for f in dataclasses.fields(TrainerConfig)},
                    "data": {f.name for f in dataclasses.fields(DataConfig)}}
    mkeys = {f.name for f in dataclasses.fields(method_schema(get_method_class(train["method"]["name"]).config_class))}
    for key, dist in (full.get("space") or {}).items():
        head, _, rest = str(key).partition(".")
        ok = (head == "method" and rest in mkeys) or (rest in section_keys.get(head, ())) \
            or (head == "seed" and not rest)
        if not ok:
            raise ConfigError(f"tune space: {key!r} is not a key of the train config (train.{key}); e.g. trainer.lr, "
                              f"method.<key of {train['method']['name']}>, data.<key>")
        if not isinstance(dist, dict) or dist.get("type", "float") not in ("float", "int", "categorical"):
            raise ConfigError(f"tune space.{key}: give {{type: float|int|categorical, ...}}, got {dist!r}")


def sampler_seeds(seed: int | None, n_existing: int, workers: int) -> list[int]:
    """One sampler seed per worker: fresh per invocation when ``seed`` is None; else derived from
    the seed and the study's trial count (reproducible, and not the same parameters again when
    the study is continued)."""
    if seed is None:
        return [secrets.randbelow(2 ** 31) for _ in range(workers)]
    return [int.from_bytes(hashlib.sha256(f"{int(seed)}:{n_existing}:{i}".encode()).digest()[:4], "little") % 2 ** 31
            for i in range(workers)]


def launch_study(cfg: dict[str, Any], launcher_overrides: list[str] = ()) -> list:
    """Create the study and start ``workers`` workers; returns their jobs (empty when inline)."""
    study = _make_study(cfg, create=True)
    check_budget(study, cfg)
    fail_stale_trials(study)  # trials of killed workers: failed, and re-queued for these workers
    workers = max(1, int(cfg["workers"]))
    per = [cfg["n_trials"] // workers + (1 if i < cfg["n_trials"] % workers else 0) for i in range(workers)]
    per = [n for n in per if n > 0]
    seeds = sampler_seeds(cfg.get("seed"), len(study.trials), len(per))
    log.info("study %s: sampler seeds %s (%s)", cfg["study"], seeds,
             "from seed=%s and the study's %d trials" % (cfg["seed"], len(study.trials))
             if cfg.get("seed") is not None else "fresh for this invocation; set seed= to reproduce")
    cfgs = [{**cfg, "sampler_seed": s} for s in seeds]
    if cfg["launch_with"] == "inline":
        for c, n in zip(cfgs, per):
            tune_worker(c, n)
        return []
    launcher = load_launcher(cfg["launch_with"], list(launcher_overrides))
    folder = Path(launcher.get("folder") or Path(cfg["out"]) / "submitit") / time.strftime("%Y%m%d-%H%M%S")
    ex = make_executor(launcher, folder, Resources(gpus=0, cpus=1, mem_gb=4, time_h=24), job_name=f"tune-{cfg['study']}")
    with ex.batch():
        jobs = [ex.submit(tune_worker, c, n) for c, n in zip(cfgs, per)]
    log.info("study %s: %d worker(s) on %s, storage %s", cfg["study"], len(jobs), cfg["launch_with"], cfg["storage"])
    return jobs


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="uwmbench tune", description=__doc__.split("\n\n")[0])
    p.add_argument("--wait", action="store_true", help="wait for the workers and print the best trial")
    p.add_argument("--show", action="store_true", help="print the study's trials and exit")
    p.add_argument("overrides", nargs="*", help="uwmbench/configs/tune.yaml overrides; launcher.<key>=v for the launcher")
    a = p.parse_intermixed_args(argv)
    launcher_ov = [o for o in a.overrides if o.startswith("launcher.")]
    cfg = resolve(load_config("tune", [o for o in a.overrides if not o.startswith("launcher.")]))
    if a.show:
        st = _make_study(cfg, create=False)
        fail_stale_trials(st)
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
