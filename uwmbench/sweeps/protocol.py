"""Protocol run (``uwmbench run``): pretrain (optional) -> finetune per task -> evaluate ID/OOD.

One composed ``run`` config (uwmbench/configs/run.yaml) describes it. The run folder
``<runs_root>/<run_id>/`` holds ``config.yaml`` (resolved), ``run.log``, ``pretrain/`` and
``finetune/<task>/`` (trainer run folders with checkpoints and metrics.csv), ``eval/<task>/<mode>/``
(evaluator output), ``stages.json`` (finished stages) and ``DONE``. Result rows (one per rollout,
one per run) go to the results store ``<store>``.

Rerunning a finished run does nothing; an interrupted one resumes: finished stages are skipped,
the trainer resumes from its latest checkpoint, the evaluator skips rollouts it has written.

API: ``run_protocol(cfg) -> dict`` (the run row); ``uwmbench run key=value ...``;
``run_stage(cfg, stage)`` runs ONE stage (a job of a sweep's stage graph, uwmbench.sweeps.stages).
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import glob
import json
import logging
import os
import socket
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from omegaconf import OmegaConf

from uwmbench.benchmarks.evaluate import evaluate
from uwmbench.benchmarks.libero.tasks import resolve as resolve_libero_task
from uwmbench.benchmarks.train import train
from uwmbench.config import ConfigError, check_config, check_method_section, dump_yaml, error_message, load_config, to_container, typed
from uwmbench.fileio import atomic_write_text as _atomic_write
from uwmbench.methods import FORWARD_DYNAMICS, INVERSE_DYNAMICS, get_method_class, make_config
from uwmbench.run_dir import RunDir, StageKey, Stages
from uwmbench.schemas import PrepareConfig, RunEvalConfig, StageConfig
from uwmbench.lease import run_lease
from uwmbench.store import ResultsStore

log = logging.getLogger(__name__)

# A cell function: (composed run config) -> run row. Pluggable for tests / other protocols.
CellFn = Callable[[Any], dict]


# the run's schema (uwmbench/configs/run.yaml keys) lives in uwmbench/schemas.py
EvalConfig = RunEvalConfig  # the run's evaluate section (the old name)


class RunInterrupted(RuntimeError):
    """The trainer stopped before its last step (``trainer.stop_after``): the run is resumable."""


def run_dir_of(cfg: dict[str, Any]) -> Path:
    """``<runs_root>/<run_id>``: the run's folder (layout: :class:`uwmbench.run_dir.RunDir`)."""
    return Path(cfg["runs_root"]) / cfg["run_id"]


def _resolve(cfg: Any) -> dict[str, Any]:
    full = to_container(cfg)
    check_config("run", OmegaConf.create(full))  # the same strict schema as composition (for dicts from Python)
    full["method"] = check_method_section(full["method"])  # only the keys set (null: the size preset's value)
    full.setdefault("seed", 0)
    if not full.get("run_id"):
        full["run_id"] = f"{full['method']['name']}-s{full['seed']}"
    if ".." in Path(full["run_id"]).parts or Path(full["run_id"]).is_absolute():
        raise ConfigError(f"run_id={full['run_id']!r} must be a relative name without '..'")
    tasks = full.get("tasks")
    if isinstance(tasks, str):
        tasks = [tasks]
    if not tasks:
        raise ConfigError("run config: tasks is empty")
    full["tasks"] = list(tasks)
    vae = prepare_vae_dir(full)
    if vae is not None:  # the data stage fits it; every stage of the run reads the same folder
        full["method"]["vae"] = vae
    return full


# ----------------------------------------------------------------------------- the data stage
def _prepare_of(full: dict[str, Any]) -> PrepareConfig:
    return typed(full.get("prepare") or {}, PrepareConfig, "prepare")


def prepare_vae_dir(full: dict[str, Any]) -> str | None:
    """The folder the data stage fits the method's VAE in (``prepare.fit_vae`` with ``{tasks}``
    replaced), or None: off, or the method has no ``vae``."""
    prep = _prepare_of(full)
    if not prep.fit_vae:
        return None
    fields = {f.name for f in dataclasses.fields(get_method_class(full["method"]["name"]).config_class)}
    if "vae" not in fields:
        return None
    return os.path.expanduser(prep.fit_vae.replace("{tasks}", "+".join(sorted(str(t) for t in full["tasks"]))))


def _exists(path: str) -> bool:
    p = os.path.expanduser(path)
    return bool(glob.glob(p)) if any(c in p for c in "*?[") else os.path.exists(p)


def task_path(path: str, task: str | None) -> str:
    """A data path of ``task``: ``{task}`` -> the task as the run names it (``book_caddy``),
    ``{task_name}`` -> its LIBERO task name (``STUDY_SCENE1_pick_up_the_book_...``, what the released
    datasets and ``uwmbench corpus`` call a task's file: ``{task_name}_demo.hdf5``); a task of
    another benchmark keeps its own name. ``task=None`` (pretraining) leaves the path as it is."""
    if task is None:
        return path
    if "{task_name}" in path:
        try:
            name = resolve_libero_task(task)[1]
        except KeyError:   # not a LIBERO task (evaluate.runner plugs in other benchmarks)
            name = task
        path = path.replace("{task_name}", name)
    return path.replace("{task}", task)


def _has_task(path: str) -> bool:
    return "{task}" in path or "{task_name}" in path


def prepare_targets(full: dict[str, Any]) -> tuple[list[tuple[str, str]], str | None]:
    """What the data stage will make: ([(task, hdf5 path)] to collect, VAE folder to fit or None).
    Only paths that do not exist yet; collection covers finetune sources whose path holds ``{task}``
    or ``{task_name}``."""
    prep = _prepare_of(full)
    fin = typed(full.get("finetune") or {}, StageConfig, "finetune")
    collect = []
    if prep.collect_missing and fin.enabled:
        for src in fin.sources:
            path = str(src if isinstance(src, str) else (src or {}).get("path", ""))
            if not _has_task(path) or any(c in path for c in "*?["):
                continue
            for task in full["tasks"]:
                p = os.path.expanduser(task_path(path, str(task)))
                if not os.path.exists(p):
                    collect.append((str(task), p))
    vae = prepare_vae_dir(full)
    if vae is not None and os.path.isfile(os.path.join(vae, "config.json")):
        vae = None
    return collect, vae


def stage_prepare(full: dict[str, Any]) -> dict[str, Any]:
    """The data stage: collect the missing scripted demos, then fit the VAE if it is missing. Both
    are shared by every cell that needs the same files: a lease on the output's folder lets one
    process make it while the others wait, then find it made; collection resumes (<out>.partial)
    and fitting resumes from its checkpoint after a kill."""
    prep = _prepare_of(full)
    collect_list, vae = prepare_targets(full)
    made: dict[str, Any] = {"collected": [], "vae": None}
    for task, path in collect_list:
        folder = Path(path).parent / f".collect-{Path(path).name}"
        folder.mkdir(parents=True, exist_ok=True)
        with run_lease(folder, f"collect {task} -> {path}", wait_s=float("inf")):
            if os.path.exists(path):  # made by the holder we waited for
                continue
            from uwmbench.benchmarks.libero.collect import CollectConfig, collect
            log.info("data stage: collecting %d scripted demos of %s -> %s", prep.episodes, task, path)
            for rnd in range(prep.collect_rounds):  # each round resumes <out>.partial with new attempts
                res = collect(CollectConfig(task=task, condition="id", episodes=prep.episodes, workers=prep.workers,
                                            out=path, seed=prep.seed, max_steps=prep.max_steps))
                if res["demos"] >= res["wanted"]:
                    break
                log.warning("data stage: round %d/%d kept %d/%d demos of %s; resuming with new attempts",
                            rnd + 1, prep.collect_rounds, res["demos"], res["wanted"], task)
            if res["demos"] < res["wanted"]:
                raise RuntimeError(f"data stage: the scripted expert kept {res['demos']}/{res['wanted']} demos of "
                                   f"{task} ({path}.partial) after {prep.collect_rounds} rounds "
                                   "(prepare.collect_rounds); rerun to make more attempts")
            made["collected"].append({"task": task, "path": path, "expert_success_rate": res["expert_success_rate"]})
    if vae is not None:
        fin = typed(full.get("finetune") or {}, StageConfig, "finetune")
        srcs = [s for task in full["tasks"] for s in _sources(fin, task, {}, "finetune")
                if s.get("kind", "hdf5") == "hdf5"]
        Path(vae).parent.mkdir(parents=True, exist_ok=True)
        lease_dir = Path(vae).parent / f".fit-{Path(vae).name}"
        lease_dir.mkdir(parents=True, exist_ok=True)
        with run_lease(lease_dir, f"fit-vae -> {vae}", wait_s=float("inf")):
            if not os.path.isfile(os.path.join(vae, "config.json")):
                from uwmbench.benchmarks.fit_vae import fit_vae
                log.info("data stage: fitting a %s VAE on %d source(s) -> %s", prep.vae_preset, len(srcs), vae)
                cfg = to_container(load_config("fit_vae", [
                    f"out='{vae}'", f"preset={prep.vae_preset}", f"steps={prep.vae_steps}",
                    f"image_size={prep.vae_image_size}", f"resize={prep.vae_resize}", "batch_size=32",
                    f"seed={prep.seed}"]))
                cfg["data"]["sources"] = [{"path": s["path"]} for s in srcs]
                r = fit_vae(cfg)
                made["vae"] = {"out": vae, "psnr_holdout_db": r.get("psnr_holdout_db")}
    return made


def _sources(stage: StageConfig, task: str | None, video_sets: dict[str, Any], where: str) -> list[dict[str, Any]]:
    out = []
    for s in list(stage.sources) + list(stage.cotrain):
        s = {"path": s} if isinstance(s, str) else dict(s)
        if task is not None:
            s["path"] = task_path(str(s["path"]), task)
        out.append(s)
    if stage.cotrain_video != "none":
        if stage.cotrain_video not in (video_sets or {}):
            raise ConfigError(f"{where}.cotrain_video={stage.cotrain_video!r} is not 'none' or a key of video_sets "
                              f"({sorted(video_sets or {})})")
        out += [dict(s) for s in video_sets[stage.cotrain_video]]
    if not out:
        raise ConfigError(f"{where}.sources is empty")
    return out


def _val_columns(val: dict[str, Any] | None) -> dict[str, float]:
    out = {}
    for k, v in (val or {}).items():
        if isinstance(v, (int, float)):
            out["val_" + k.split("/", 1)[-1].replace("/", "_")] = float(v)
    return out


_Stages = Stages  # stages.json (uwmbench.run_dir)


def in_multitask_job() -> bool:
    """This process is one of N > 1 tasks of a submitit job (a data-parallel stage job)."""
    if not (os.environ.get("SUBMITIT_EXECUTOR") or os.environ.get("SUBMITIT_LOCAL_JOB_ID")):
        return False
    try:
        import submitit
        return submitit.JobEnvironment().num_tasks > 1
    except Exception:  # noqa: BLE001 - not inside a submitit job
        return False


def _is_rank0() -> bool:
    return os.environ.get("RANK", "0") == "0"


def _train(train_cfg: dict[str, Any], run_dir: Path, stage: StageConfig | None = None,
           where: str = "stage") -> dict[str, Any]:
    if in_multitask_job():  # this job IS the stage's data-parallel job (a sweep's stage graph)
        from uwmbench.benchmarks.train import train_in_job
        summary = train_in_job(train_cfg, run_dir)
    elif stage is not None and stage.distributed:
        summary = _train_distributed(train_cfg, run_dir, stage, where)
    else:
        if stage is not None and stage.gpus > 1:
            log.warning("%s.gpus=%d but %s.distributed is null: training in this process on one device, global "
                        "batch = trainer.batch_size (%s); set %s.distributed=slurm|local for %d x %s", where,
                        stage.gpus, where, stage.trainer.batch_size, where, stage.gpus, stage.trainer.batch_size)
        summary = train(train_cfg, run_dir)
    if summary.get("interrupted") or not summary.get("completed", True):
        raise RunInterrupted(f"training in {run_dir} stopped at step {summary.get('steps')} (resumable)")
    return summary


def _train_distributed(train_cfg: dict[str, Any], run_dir: Path, stage: StageConfig, where: str) -> dict[str, Any]:
    """The stage as ONE job with ``stage.gpus`` tasks (DDP; uwmbench.sweeps.launch.submit_training)
    on the ``stage.distributed`` launcher; this process waits for it."""
    from uwmbench.sweeps.launch import load_launcher, submit_training
    launcher = load_launcher(stage.distributed)
    unknown = sorted(set(stage.launcher) - set(launcher))
    if unknown:
        raise ConfigError(f"{where}.launcher: unknown key(s) {unknown} for launcher {stage.distributed!r}; "
                          f"valid: {sorted(launcher)}")
    launcher.update(stage.launcher)
    cpu = str(stage.trainer.device) == "cpu"
    job = submit_training(train_cfg, run_dir, launcher, n_tasks=max(1, stage.gpus), gpus_per_task=0 if cpu else 1,
                          job_name=f"uwm-{where}")
    log.info("%s: waiting for the %d-task training job %s (%s)", where, max(1, stage.gpus), job.job_id,
             stage.distributed)
    return job.results()[0]


def _reference_source(fin: StageConfig, task: str) -> str | None:
    """inverse_dynamics: the expert demos to track = the first hdf5 finetune source of ``task``."""
    for s in fin.sources:
        s = {"path": s} if isinstance(s, str) else dict(s)
        if s.get("kind", "hdf5") == "hdf5":
            return task_path(str(s["path"]), task)
    return None


def _hdf5_files(fin: StageConfig, pre: StageConfig, task: str) -> list[str]:
    """The HDF5 demo files a run trains on (finetune of ``task`` and pretrain), globs expanded."""
    out = []
    for stage, t in ((fin, task), (pre, None)):
        if not stage.enabled:
            continue
        for s in stage.sources:
            s = {"path": s} if isinstance(s, str) else dict(s)
            if s.get("kind", "hdf5") == "hdf5":
                p = os.path.expanduser(task_path(str(s["path"]), t))
                out += sorted(glob.glob(p)) if any(c in p for c in "*?[") else [p]
    return out


def _evaluate(ckpt: str, task: str, ev: EvalConfig, mode: str, seed: int, sink, meta: dict, out_dir: Path,
              reference: str | None = None, train_files: Sequence[str] = (), conditions: Sequence[str] | None = None,
              episodes: Sequence[int] | None = None):
    conditions = list(ev.conditions if conditions is None else conditions)
    if mode == "inverse_dynamics":
        if not reference:
            raise ConfigError(f"evaluate.modes contains inverse_dynamics but finetune.sources has no hdf5 source "
                              f"of task {task!r} to track (its expert demos are the reference)")
        # the finetune demos start from in-distribution placements: there are no OOD expert demos to track
        conditions = [c for c in conditions if c == "id"]
        if not conditions:
            raise ConfigError(f"evaluate.modes contains inverse_dynamics, which tracks the (in-distribution) finetune "
                              f"demos, but evaluate.conditions={list(ev.conditions)} has no 'id'")
        if len(conditions) < len(ev.conditions):
            log.info("task %s: inverse_dynamics evaluated in-distribution only (reference %s has no OOD demos)",
                     task, reference)
    if mode == "policy" and "id" in conditions and not ev.runner:  # LIBERO's init states
        from uwmbench.benchmarks.evaluate import demo_init_overlap

        overlap = demo_init_overlap([p for p in train_files if os.path.isfile(p)], task, "id")
        meta = {**meta, "train_eval_overlap": len(overlap)}
        if overlap:
            log.warning("!" * 78)
            log.warning("task %s: %d training demo(s) start from the benchmark's ID evaluation init states (e.g. %s "
                        "%s = init state %d): the ID numbers of this run are train-on-test. Collect demos from "
                        "random placements (uwmbench collect, the default).", task, len(overlap), *overlap[0])
            log.warning("!" * 78)
    opts = dataclasses.replace(ev, modes=[mode], conditions=conditions,
                               reference=reference if mode == "inverse_dynamics" else None)
    return evaluate(ckpt, [task], opts, row_sink=sink, run_meta=meta, out_dir=str(out_dir), episodes=episodes)


_WARNED_OPEN_LOOP: set[tuple[str, int]] = set()


def _warn_open_loop_small(full: dict[str, Any], ev: RunEvalConfig) -> None:
    """A ``small`` preset rolled out with whole 16-action chunks open loop: say once per process
    what that did in our reduced-scale runs (the default stays the public code's 16)."""
    method = full.get("method") or {}
    key = (str(method.get("name")), int(ev.replan_every))
    if (method.get("size") != "small" or ev.n_rollouts <= 0 or "policy" not in ev.modes or ev.replan_every < 16
            or key in _WARNED_OPEN_LOOP):
        return
    _WARNED_OPEN_LOOP.add(key)
    log.warning("evaluate.replan_every=%d with method.size=small: each action chunk runs open loop for %d steps. "
                "In docs/results/reduced (50 demos, small presets) this gave 0-3/20 successes where "
                "evaluate.replan_every=4 gave 10-14/20 for the same BC checkpoints; consider evaluate.replan_every=4 "
                "(the paper's text says 8, its public code 16).", ev.replan_every, ev.replan_every)


def check_run(full: dict[str, Any], data: bool = True) -> tuple[StageConfig, StageConfig, RunEvalConfig]:
    """What can be checked before a run starts (``uwmbench run``, ``sweep --dry-run`` and the
    launch of every cell): the stages, the task names, the method's capabilities for the
    evaluation asked for and (``data=True``) that every input file exists."""
    pre = typed(full.get("pretrain") or {}, StageConfig, "pretrain")
    fin = typed(full.get("finetune") or {}, StageConfig, "finetune")
    ev = typed(full.get("evaluate") or {}, RunEvalConfig, "evaluate")
    if ev.n_rollouts > 0:  # a misspelt task fails now, not after training
        from uwmbench.benchmarks.libero.tasks import resolve
        runner = ev.make_runner()  # None: LIBERO
        for t in full["tasks"]:
            try:
                runner.check_task(str(t)) if runner is not None else resolve(str(t))
            except KeyError as e:
                raise ConfigError(f"tasks: {error_message(e)} (evaluate.n_rollouts={ev.n_rollouts} rolls out "
                                  "every task)") from None
    method_name = full["method"]["name"]
    _warn_open_loop_small(full, ev)
    if ev.forward_dynamics_error or "inverse_dynamics" in ev.modes:
        m = dict(full["method"])
        try:  # what an instance of this config can do (UWM without the future objective has no dynamics)
            caps = get_method_class(method_name).capabilities_for(make_config(method_name, m.pop("size", None), m))
        except (KeyError, TypeError, ValueError) as e:
            raise ConfigError(f"method: {error_message(e)}") from None
        need = ([FORWARD_DYNAMICS] if ev.forward_dynamics_error else []) + \
               ([INVERSE_DYNAMICS] if "inverse_dynamics" in ev.modes else [])
        missing = [c for c in need if c not in caps]
        if missing:
            raise ConfigError(f"method {method_name!r} with this config cannot do {missing}, which evaluate.modes / "
                              f"evaluate.forward_dynamics_error ask for (it can: {sorted(caps)})")
    if data:
        check_inputs(full, pre, fin)
    return pre, fin, ev


def check_inputs(full: dict[str, Any], pre: StageConfig, fin: StageConfig) -> None:
    """Every data source of a stage that will train matches a file (``{task}`` replaced by each
    task), and every checkpoint given exists; the error names the key and the path."""
    exists = _exists

    hint = f" (data_root={full.get('data_root')}; relative paths are from {os.getcwd()})"
    will_make = {p for _, p in prepare_targets(full)[0]}  # the data stage collects these first
    if pre.checkpoint and not exists(str(pre.checkpoint)):
        raise ConfigError(f"pretrain.checkpoint={pre.checkpoint}: no such checkpoint or run folder")
    if fin.checkpoint and not exists(str(fin.checkpoint)):
        raise ConfigError(f"finetune.checkpoint={fin.checkpoint}: no such checkpoint or run folder")
    stages = []
    if pre.enabled and not pre.checkpoint:
        stages.append(("pretrain", pre, [None]))
    if fin.enabled:
        stages.append(("finetune", fin, list(full["tasks"])))
    for where, stage, tasks in stages:
        for key in ("sources", "cotrain"):
            for i, src in enumerate(getattr(stage, key)):
                path = str(src if isinstance(src, str) else (src or {}).get("path", ""))
                for task in tasks:
                    p = task_path(path, task)
                    if not exists(p) and os.path.expanduser(p) not in will_make:
                        raise ConfigError(f"{where}.{key}[{i}].path: no file matches {p}{hint}")
        if stage.cotrain_video != "none":
            for i, src in enumerate((full.get("video_sets") or {}).get(stage.cotrain_video) or []):
                p = str(src if isinstance(src, str) else src.get("path", ""))
                if not exists(p):
                    raise ConfigError(f"video_sets.{stage.cotrain_video}[{i}].path ({where}.cotrain_video): "
                                      f"no file matches {p}{hint}")


# ----------------------------------------------------------------------------- stages
# A protocol run is a small graph of stages: pretrain (possibly shared by several runs) ->
# finetune/<task> (+ its diagnostics) -> eval/<task>/<mode> (or its rollout chunks
# eval/<task>/<mode>/<condition>/<first>-<last>) -> the run row. ``run_protocol`` runs them in
# order in one process; a sweep with ``launcher.stage_jobs`` runs each as its own job through
# ``run_stage`` (uwmbench.sweeps.stages). Both go through the functions below.

class StageNotReady(RuntimeError):
    """A stage job started before a stage it needs finished (its dependency failed or was cancelled)."""


def pretrain_hash(full: dict[str, Any]) -> str:
    """What makes two runs' pretraining the same: method section, seed, the pretrain stage (without
    ``run_dir``), the shared data options and the video sets it trains on."""
    import hashlib

    pre = {k: v for k, v in (full.get("pretrain") or {}).items() if k != "run_dir"}
    pre["trainer"] = {k: v for k, v in (pre.get("trainer") or {}).items() if k not in ("stop_after", "progress")}
    vs = (full.get("video_sets") or {}).get(pre.get("cotrain_video", "none"))
    blob = json.dumps({"method": full["method"], "seed": full["seed"], "pretrain": pre, "data": full.get("data"),
                       "video_set": vs}, sort_keys=True, default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:10]


def shared_pretrain_dir(full: dict[str, Any]) -> Path | None:
    """``<runs_root>/<sweep>/_pretrain/<method>-s<seed>-<hash>``: where the runs of a sweep with the
    same pretraining train it once; None when the run does not pretrain."""
    pre = full.get("pretrain") or {}
    if not pre.get("enabled", True) or pre.get("checkpoint"):
        return None
    where = full.get("sweep_name") or "runs"
    return (Path(full["runs_root"]) / where / "_pretrain" /
            f"{full['method']['name']}-s{full['seed']}-{pretrain_hash(full)}").absolute()


@dataclass
class Run:
    """One protocol run, typed once from its composed config and passed to every stage: the
    resolved config, its checked sections, the run folder, the results store."""
    full: dict[str, Any]
    pre: StageConfig
    fin: StageConfig
    ev: RunEvalConfig
    dir: RunDir
    store: ResultsStore

    @classmethod
    def from_config(cls, cfg: Any) -> "Run":
        full = _resolve(cfg)
        pre, fin, ev = check_run(full, data=False)
        return cls(full, pre, fin, ev, RunDir(run_dir_of(full)), ResultsStore(full["store"]))

    run_id = property(lambda self: str(self.full["run_id"]))
    seed = property(lambda self: int(self.full["seed"]))
    tasks = property(lambda self: list(self.full["tasks"]))
    rank0 = property(lambda self: _is_rank0())   # this process records (a data-parallel job: rank 0)

    @property
    def meta(self) -> dict[str, Any]:
        """The columns every row of this run carries."""
        return _meta(self.full)

    def row(self, **cols: Any) -> dict[str, Any]:
        """The run's row in the store with ``cols`` (status, error, job facts, ...)."""
        return {**self.meta, "task": ",".join(self.tasks), **cols}

    def check_inputs(self) -> None:
        check_inputs(self.full, self.pre, self.fin)

    def graph(self, per_job: int | None = None) -> list[tuple[StageKey, list[StageKey]]]:
        """The run's stages in order (:func:`run_graph`)."""
        return run_graph(self.full, self.pre, self.fin, self.ev, per_job)

    def pretrain_place(self) -> tuple[RunDir, Stages]:
        """(trainer folder, stages file) of the run's pretraining: ``pretrain.run_dir`` (shared) or
        ``<run>/pretrain`` with the run's own stages.json."""
        if self.pre.run_dir:
            d = RunDir(self.pre.run_dir)
            return d, Stages(d.path / RunDir.STAGES)
        return self.dir.pretrain, self.dir.stages()

    def train_config(self, stage: StageConfig, task: str | None, trainer: dict[str, Any], where: str) -> dict[str, Any]:
        """The ``uwmbench train`` config of one training stage of this run."""
        data_common = {k: v for k, v in (self.full.get("data") or {}).items() if k != "sources"}
        return {"method": self.full["method"], "seed": self.full["seed"], "trainer": trainer,
                "data": {**data_common, "sources": _sources(stage, task, self.full.get("video_sets"), where)}}


def _stage_result(s: dict[str, Any], t0: float) -> dict[str, Any]:
    return {"checkpoint": s["checkpoint"], "steps": s["steps"], "final_loss": s["final_loss"],
            "val": _val_columns(s.get("val")), "elapsed_s": time.time() - t0}


def stage_pretrain(run: Run) -> tuple[str | None, dict[str, Any] | None]:
    """(checkpoint to finetune from, the pretrain result): trains when it has not been trained
    (a shared ``pretrain.run_dir`` trained by one run at a time; the others wait and reuse it)."""
    pre = run.pre
    pdir, st = run.pretrain_place()
    if not pre.enabled or pre.checkpoint or st.get("pretrain") is not None:
        return _pretrained(run, StageKey("pretrain"))
    tcfg = run.train_config(pre, None, dataclasses.asdict(pre.trainer), "pretrain")
    ctx = run_lease(pdir.path / "_stage", "pretrain (shared by the runs of a sweep)", wait_s=float("inf")) \
        if pre.run_dir and not in_multitask_job() else contextlib.nullcontext()
    with ctx:  # a shared pretrain: whoever holds it trains; the others wait, then reuse its result
        res = st.reload().get("pretrain")
        if res is None:
            t0 = time.time()
            res = _stage_result(_train(tcfg, pdir.path, pre, "pretrain"), t0)
            if run.rank0:  # a data-parallel job: rank 0 records (the other ranks return it unrecorded)
                st.put("pretrain", res)
    return res["checkpoint"], res


def _no_finetune(init_from: str | None) -> dict[str, Any]:
    """The finetune result of a run with ``finetune.enabled=false``: it evaluates ``init_from``."""
    return {"checkpoint": init_from, "steps": 0, "final_loss": None, "val": {}}


def stage_finetune(run: Run, task: str, init_from: str | None) -> dict[str, Any]:
    """Finetune on ``task`` (resumes; skipped when finished) and its diagnostics; the result."""
    fin, ev, rd = run.fin, run.ev, run.dir
    stages = rd.stages()
    key = StageKey.finetune(task)
    res = stages.get(key) if fin.enabled else _no_finetune(init_from)
    if res is None:
        trainer = dataclasses.asdict(fin.trainer)
        if init_from:
            trainer["init_from"] = str(init_from)
        t0 = time.time()
        res = _stage_result(_train(run.train_config(fin, task, trainer, "finetune"), rd.finetune(task).path, fin,
                                   "finetune"), t0)
        if not run.rank0:
            return res  # a data-parallel job: rank 0 records and diagnoses
        stages.put(key, res)
    if not res.get("checkpoint"):
        raise ConfigError(f"run {run.run_id}: no checkpoint to evaluate for task {task} "
                          "(finetune.enabled=false needs pretrain or pretrain.checkpoint)")
    dkey = StageKey.diagnostics(task)
    if ev.n_rollouts > 0 and ev.diagnose_windows > 0 and fin.enabled and not stages.reload().get(dkey):
        from uwmbench.benchmarks.diagnose import diagnose
        d = diagnose(res["checkpoint"], out=rd.diagnostics(task), windows=ev.diagnose_windows,
                     first_obs=ev.diagnose_first_obs, seed=run.seed)
        stages.put(dkey, {"open_loop": [{k: v for k, v in s.items() if not isinstance(v, list)}
                                        for s in d["open_loop"]]})
    return res


def eval_conditions(ev: RunEvalConfig, mode: str) -> list[str]:
    """The conditions a mode is evaluated on (inverse_dynamics tracks the ID finetune demos only)."""
    return [c for c in ev.conditions if c == "id"] if mode == "inverse_dynamics" else list(ev.conditions)


def eval_chunks(ev: RunEvalConfig, mode: str, per_job: int) -> list[tuple[str, int, int]]:
    """[(condition, first, last)]: the rollouts of one (task, mode) cut into jobs of at most
    ``per_job`` episodes (the episodes of a condition, in order)."""
    if per_job < 1:
        raise ConfigError(f"launcher.rollouts_per_job={per_job} must be >= 1")
    return [(c, lo, min(lo + per_job, ev.n_rollouts) - 1) for c in eval_conditions(ev, mode)
            for lo in range(0, ev.n_rollouts, per_job)]


def stage_evaluate(run: Run, task: str, mode: str, res: dict[str, Any],
                   chunk: tuple[str, int, int] | None = None) -> dict[str, Any]:
    """Roll out the task's checkpoint in ``mode`` (every condition, or one ``chunk``); rows go to
    the store as they come; the result is recorded in stages.json."""
    rd = run.dir
    key = StageKey.eval(task, mode, chunk)
    m = {**run.meta, "task": task, "mode": mode, "checkpoint": str(res["checkpoint"])}
    out = rd.eval_chunk(task, mode, *chunk) if chunk else rd.eval(task, mode)
    t0 = time.time()
    df = _evaluate(str(res["checkpoint"]), task, run.ev, mode, run.seed, run.store.rollout_sink(m), m, out.path,
                   reference=_reference_source(run.fin, task), train_files=_hdf5_files(run.fin, run.pre, task),
                   conditions=[chunk[0]] if chunk else None,
                   episodes=list(range(chunk[1], chunk[2] + 1)) if chunk else None)
    r = {"rollouts": int(len(df)), "successes": int(df["success"].sum()) if len(df) else 0,
         "success_rate": float(df["success"].mean()) if len(df) else None, "elapsed_s": time.time() - t0}
    rd.stages().put(key, r)
    return r


def gather_chunks(run: Run, task: str, mode: str, per_job: int) -> dict[str, Any]:
    """``eval/<task>/<mode>`` from its finished rollout chunks (stage jobs); raises StageNotReady
    naming the missing ones."""
    stages = run.dir.stages()
    keys = [StageKey.eval(task, mode, chunk) for chunk in eval_chunks(run.ev, mode, per_job)]
    missing = [str(k) for k in keys if not stages.get(k)]
    if missing:
        raise StageNotReady(f"run {run.run_id}: rollout chunk(s) not finished: {missing[:5]}"
                            + (f" and {len(missing) - 5} more" if len(missing) > 5 else ""))
    parts = [stages.get(k) for k in keys]
    n = sum(p["rollouts"] for p in parts)
    succ = sum(p.get("successes", 0) for p in parts)
    r = {"rollouts": n, "successes": succ, "success_rate": succ / n if n else None, "chunks": len(keys),
         "elapsed_s": sum(p.get("elapsed_s", 0.0) for p in parts)}
    stages.put(StageKey.eval(task, mode), r)
    return r


def run_row(run: Run, per_task: dict[str, dict[str, Any]], pre_res: dict[str, Any] | None, wall_time_s: float,
            job: dict[str, Any]) -> dict[str, Any]:
    """The run's row in the store (status done)."""
    ev = run.ev
    vals: dict[str, list[float]] = {}
    for r in per_task.values():
        for k, v in (r.get("val") or {}).items():
            vals.setdefault(k, []).append(v)
    losses = [r["final_loss"] for r in per_task.values() if r.get("final_loss") is not None]
    pre_res = pre_res or {}
    row = {**run.meta, "task": ",".join(run.tasks), "status": "done",
           "train_steps": int(sum(r.get("steps") or 0 for r in per_task.values()) + (pre_res.get("steps") or 0)),
           "final_loss": float(sum(losses) / len(losses)) if losses else None,
           **{k: sum(v) / len(v) for k, v in vals.items()},
           "wall_time_s": wall_time_s, "error": "",
           "evaluated": ev.n_rollouts > 0, "run_dir": str(run.dir.path),
           "checkpoints": json.dumps({t: str(r.get("checkpoint")) for t, r in per_task.items()}),
           "host": job["host"], "job_id": job["job_id"]}
    if ev.forward_dynamics_error:
        row["val_forward_dynamics_error"] = row.get("val_next_obs_latent_mse")
    return row


def run_graph(full: dict[str, Any], pre: StageConfig, fin: StageConfig, ev: RunEvalConfig,
              per_job: int | None = None) -> list[tuple[StageKey, list[StageKey]]]:
    """The stage graph of one run, in an order that runs: ``[(stage, the stages it needs)]``.

    data (where ``prepare`` makes missing inputs) -> pretrain (unless given or off) ->
    finetune/<task> -> eval/<task>/<mode> -> row. ``per_job=None``: one evaluation stage per (task,
    mode) (the run executed in one process); else rollout chunks of ``per_job`` episodes
    (``eval/<task>/<mode>/<condition>/<first>-<last>``, a stage job each). The local run
    (:func:`run_protocol`) executes this list in order; a sweep's stage graph
    (``uwmbench/sweeps/stages.py``) makes one job of each entry."""
    graph: list[tuple[StageKey, list[StageKey]]] = []
    deps: list[StageKey] = []
    if any(prepare_targets(full)):
        graph.append((StageKey("data"), []))
        deps = [StageKey("data")]
    if pre.enabled and not pre.checkpoint:
        graph.append((StageKey("pretrain"), deps))
        deps = [StageKey("pretrain")]
    ends: list[StageKey] = []
    for task in full["tasks"]:
        tdeps = deps
        if fin.enabled:
            graph.append((StageKey.finetune(task), deps))
            tdeps = [StageKey.finetune(task)]
            ends.append(tdeps[0])
        if ev.n_rollouts > 0:
            evals = [StageKey.eval(task, mode, chunk) for mode in ev.modes
                     for chunk in ([None] if per_job is None else eval_chunks(ev, mode, per_job))]
            graph += [(k, tdeps) for k in evals]
            ends = [e for e in ends if e not in tdeps] + evals
    graph.append((StageKey("row"), ends or deps))
    return graph


def _meta(full: dict[str, Any]) -> dict[str, Any]:
    return {"run_id": full["run_id"], "sweep": full.get("sweep_name"), "cell": full.get("cell"),
            "method": full["method"]["name"], "variant": full.get("variant") or "default", "seed": int(full["seed"]),
            "size": str(full["method"].get("size") or "")}


def _job_info(run_dir: Path) -> dict[str, Any]:
    return {"host": socket.gethostname(), "pid": os.getpid(),
            "job_id": os.environ.get("SLURM_ARRAY_JOB_ID", os.environ.get("SLURM_JOB_ID",
                                                                          os.environ.get("SUBMITIT_LOCAL_JOB_ID"))),
            "run_dir": str(run_dir)}


def run_protocol(cfg: Any) -> dict[str, Any]:
    """Run (or resume, or skip if finished) one protocol run; returns its run row."""
    run = Run.from_config(cfg)
    done_file = run.dir.done
    if done_file.is_file():
        row = json.loads(done_file.read_text())
        log.info("run %s is finished (%s): nothing to do", run.run_id, done_file)
        run.store.set_run(row)  # no-op if the store has it; restores it into a fresh store
        return row
    try:  # missing data or checkpoints fail now, before anything is trained; the store says why
        run.check_inputs()
    except ConfigError as e:
        run.store.set_run(run.row(status="failed", error="".join(traceback.format_exception(e))))
        raise
    with run_lease(run.dir.path, "uwmbench run"):  # one process per run folder (LeaseHeld names the holder)
        if done_file.is_file():  # finished by the holder we waited for
            return json.loads(done_file.read_text())
        with _run_log(run):
            return _run_stages(run)


def _config_yaml(full: dict[str, Any]) -> str:
    # the stored config leaves out trainer.stop_after (a testing aid that may differ between attempts)
    return dump_yaml({k: ({**v, "trainer": {tk: tv for tk, tv in (v.get("trainer") or {}).items()
                                            if tk != "stop_after"}}
                          if k in ("pretrain", "finetune") and isinstance(v, dict) else v)
                      for k, v in full.items()})


def _only_added_nulls(stored: str, new: str) -> list[str] | None:
    """The keys ``new`` adds to ``stored`` when that is its only difference and each added value is
    null (keys a newer uwmbench added, at their do-nothing default); else None."""
    import yaml
    try:
        a, b = yaml.safe_load(stored), yaml.safe_load(new)
    except yaml.YAMLError:
        return None
    added: list[str] = []

    def walk(x: Any, y: Any, path: str) -> bool:
        if isinstance(x, dict) and isinstance(y, dict):
            if set(x) - set(y):
                return False
            for k in y:
                if k not in x:
                    if y[k] is not None:
                        return False
                    added.append(f"{path}{k}")
                elif not walk(x[k], y[k], f"{path}{k}."):
                    return False
            return True
        return x == y

    return added if walk(a, b, "") and added else None


@contextlib.contextmanager
def _run_log(run: Run):
    """Store the run's config (refusing a different one once the run has checkpoints) and append
    this process's log to ``run.log`` while the body runs."""
    config_yaml = _config_yaml(run.full)
    rd = run.dir
    cfg_file = rd.config
    if cfg_file.is_file() and cfg_file.read_text() != config_yaml:
        # a changed config may only replace one that produced nothing yet (e.g. a run that failed at start)
        progress = bool(rd.stages().finished()) or rd.has_checkpoints()
        added = _only_added_nulls(cfg_file.read_text(), config_yaml)
        if added is not None:  # written by an older uwmbench: keys added since, at null; the run is the same
            log.info("run %s: config.yaml predates keys %s (null here): the same run, rewritten with them",
                     run.run_id, added)
        elif progress:
            import difflib
            diff = "".join(list(difflib.unified_diff(cfg_file.read_text().splitlines(True),
                                                     config_yaml.splitlines(True), "stored", "new"))[:40])
            msg = (f"run folder {rd.path} holds a different config and has checkpoints; use another run_id, "
                   f"the same config, or delete the folder:\n{diff}")
            run.store.set_run(run.row(status="failed", error=msg))
            raise ConfigError(msg)
        log.warning("run %s: config changed since the last attempt (which left no checkpoints): replacing it",
                    run.run_id)
    if not cfg_file.is_file() or cfg_file.read_text() != config_yaml:
        _atomic_write(cfg_file, config_yaml)
    handler = logging.FileHandler(rd.run_log)  # every attempt (and every stage job) appends its log here
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger().addHandler(handler)
    try:
        yield
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()


ELAPSED_EVERY_S = 60.0  # how often a running run writes its wall time so far into stages.json (env UWMBENCH_ELAPSED_EVERY_S)


class _ElapsedBeat:
    """While a run's stages execute, its wall time so far (``elapsed``) is written into its
    stages.json (``elapsed_s``) every ``every_s`` seconds by a background thread, so that a run
    killed outright (SIGKILL, a lost machine, a session's end) still counts that time when it is
    resumed: at most ``every_s`` of it goes unrecorded. ``uwmbench sweep --status`` reads it for
    cells in flight."""

    def __init__(self, stages_path: Path, elapsed: Callable[[], float], every_s: float | None = None):
        self.path, self.elapsed = Path(stages_path), elapsed
        self.every_s = float(every_s if every_s is not None else os.environ.get("UWMBENCH_ELAPSED_EVERY_S", ELAPSED_EVERY_S))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="uwmbench-elapsed", daemon=True)

    def _loop(self) -> None:
        while not self._stop.wait(self.every_s):
            try:
                Stages(self.path).put("elapsed_s", self.elapsed())
            except OSError as e:  # a full disk must not stop the run: the next beat tries again
                log.warning("could not record the run's elapsed time in %s: %s", self.path, e)

    def __enter__(self) -> "_ElapsedBeat":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def _run_stages(run: Run) -> dict[str, Any]:
    """The run's stage graph executed in this process, in order (a local run of a cell), ending
    with the run row and DONE; the row's wall time sums every attempt's (each attempt's time is
    kept in stages.json as it runs, see :class:`_ElapsedBeat`)."""
    rd = run.dir
    stages = rd.stages()
    elapsed_before = float(stages.get("elapsed_s") or 0.0)
    t0 = time.time()
    job = _job_info(rd.path)
    _atomic_write(rd.worker, json.dumps(job))
    run.store.set_run(run.row(status="running", **job))
    if run.ev.n_rollouts == 0:
        log.info("run %s: evaluate.n_rollouts=0, no rollouts (offline validation metrics only)", run.run_id)
    try:
        res: dict[str, Any] = {}
        with _ElapsedBeat(stages.path, lambda: elapsed_before + time.time() - t0):
            for key, _ in run.graph():
                res = execute_stage(run, key, None, job, lambda: elapsed_before + time.time() - t0)
        return res  # the row
    except BaseException as e:
        stages.put("elapsed_s", elapsed_before + time.time() - t0)
        if isinstance(e, (RunInterrupted, KeyboardInterrupt, SystemExit)):
            raise  # resumable: the run stays "running" until it is resumed
        run.store.set_run(run.row(status="failed", wall_time_s=elapsed_before + time.time() - t0,
                                  error="".join(traceback.format_exception(e)), **job))
        raise


def _pretrained(run: Run, key: StageKey) -> tuple[str | None, dict[str, Any] | None]:
    """(checkpoint to finetune from, the pretrain result) once the run's pretraining has finished."""
    pre = run.pre
    if not pre.enabled or pre.checkpoint:
        return (str(pre.checkpoint) if pre.checkpoint else None), None
    pre_dir, pre_stages = run.pretrain_place()
    res = pre_stages.get("pretrain")
    if res is None:
        raise StageNotReady(f"run {run.run_id}: stage {key} needs the pretraining in {pre_dir.path}, "
                            "which has not finished")
    return res["checkpoint"], res


def _finetuned(run: Run, key: StageKey, init_from: str | None, tasks: list[str]) -> dict[str, dict[str, Any]]:
    """task -> its finetune result (the checkpoint to evaluate) once finished."""
    out = {}
    for task in tasks:
        res = run.dir.stages().get(StageKey.finetune(task)) if run.fin.enabled else _no_finetune(init_from)
        if not res:
            raise StageNotReady(f"run {run.run_id}: stage {key} needs finetune/{task}, not finished")
        if not res.get("checkpoint"):
            raise ConfigError(f"run {run.run_id}: no checkpoint to evaluate for task {task} "
                              "(finetune.enabled=false needs pretrain or pretrain.checkpoint)")
        out[task] = res
    return out


def execute_stage(run: Run, key: StageKey, per_job: int | None, job: dict[str, Any],
                  wall_s: Callable[[], float]) -> dict[str, Any]:
    """Run one stage of :func:`run_graph` once the stages it needs have finished (else
    :class:`StageNotReady`); a finished stage returns its recorded result. The one executor of
    both a local run (``per_job=None``, the graph in order) and a sweep's stage jobs. ``row``
    gathers the rollout chunks (stage jobs), writes the run row (wall time ``wall_s()``) and DONE."""
    rd = run.dir
    if key.kind == "data":
        res = stage_prepare(run.full)
        rd.stages().put("data", res)
        return res
    if key.kind == "pretrain":
        return stage_pretrain(run)[1] or {}
    init_from, pre_res = _pretrained(run, key)
    if key.kind == "finetune":
        return stage_finetune(run, key.task, init_from)
    if key.kind == "eval":
        done = rd.stages().get(key)
        if done:
            return done
        res = _finetuned(run, key, init_from, [key.task])[key.task]
        if key.chunk is None:
            return stage_evaluate(run, key.task, key.mode, res)
        with run_lease(rd.eval_chunk(key.task, key.mode, *key.chunk).path, f"stage {key}"):
            return stage_evaluate(run, key.task, key.mode, res, chunk=key.chunk)
    if key.kind != "row":
        raise ValueError(f"stage {key} is not a stage of the run graph")
    per_task = _finetuned(run, key, init_from, run.tasks)
    if per_job is not None and run.ev.n_rollouts > 0:
        for task in run.tasks:
            for mode in run.ev.modes:
                gather_chunks(run, task, mode, per_job)
    row = run_row(run, per_task, pre_res, wall_s(), job)
    if per_job is not None:
        row["stage_jobs"] = True  # wall_time_s: the stage jobs' times summed
    run.store.set_run(row)
    _atomic_write(rd.done, json.dumps(row, default=str))
    return row


def parse_stage(stage: str) -> StageKey:
    """A stage job's stage: ``data`` | ``pretrain`` | ``finetune/<task>`` |
    ``eval/<task>/<mode>/<condition>/<first>-<last>`` | ``row``."""
    key = StageKey.parse(stage)
    if key.kind == "diagnostics" or (key.kind == "eval" and key.chunk is None):
        raise ValueError(f"stage {stage!r} is not a stage job: data, pretrain, finetune/<task>, "
                         "eval/<task>/<mode>/<cond>/<a>-<b> or row")
    return key


def _is_job_stage(key: str) -> bool:
    try:
        k = StageKey.parse(key)
    except ValueError:
        return False
    return k.kind == "finetune" or k.chunk is not None


def run_stage(cfg: Any, stage: str, rollouts_per_job: int = 25) -> dict[str, Any]:
    """Run ONE stage of a protocol run (a stage job of a sweep's stage graph) with
    :func:`execute_stage`: its inputs must be finished (else :class:`StageNotReady`); it resumes
    like the whole run does (checkpoints, written rollouts) and records its result in stages.json;
    ``row`` gathers the rollout chunks and writes the run row and DONE. Returns the stage's result."""
    run = Run.from_config(cfg)
    key = parse_stage(stage)
    rd = run.dir
    if rd.done.is_file():
        log.info("run %s is finished (%s): stage %s has nothing to do", run.run_id, rd.done, stage)
        return json.loads(rd.done.read_text())
    job, t0 = _job_info(rd.path), time.time()
    if key.kind in ("pretrain", "finetune"):
        run.check_inputs()
    if key.kind in ("data", "pretrain"):  # shared by several runs: no run log, no run row
        return execute_stage(run, key, rollouts_per_job, job, lambda: 0.0)
    with _run_log(run):
        try:
            if key.kind == "finetune":
                run.store.set_run(run.row(status="running", stage=stage, **job))
            if key.kind != "row":
                return execute_stage(run, key, rollouts_per_job, job, lambda: 0.0)
            with run_lease(rd.path, "stage row"):
                return execute_stage(run, key, rollouts_per_job, job, lambda: _stage_jobs_wall(run, t0))
        except BaseException as e:
            if not isinstance(e, (RunInterrupted, KeyboardInterrupt, SystemExit)):
                run.store.set_run(run.row(status="failed", stage=stage, **job,
                                          error=f"stage {stage}: " + "".join(traceback.format_exception(e))))
            raise


def _stage_jobs_wall(run: Run, t0: float) -> float:
    """A stage-job run's wall time: its finetune and rollout-chunk jobs and its pretraining, summed,
    plus this row job's time so far."""
    st = run.dir.stages()
    parts = sum(r.get("elapsed_s", 0.0) for k, r in st.data.items() if isinstance(r, dict) and _is_job_stage(k))
    pre = run.pretrain_place()[1].get("pretrain") if run.pre.enabled and not run.pre.checkpoint else None
    return parts + (pre or {}).get("elapsed_s", 0.0) + time.time() - t0


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="uwmbench run", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="overrides: key=value for uwmbench/configs/run.yaml, e.g. method=dp tasks=[book_caddy] "
                                       "pretrain.enabled=false evaluate.n_rollouts=10")
    p.add_argument("--print-config", action="store_true", help="print the composed, checked config and exit")
    p.add_argument("--dry-run", action="store_true",
                   help="check everything a run needs (config, tasks, capabilities, data files) and exit")
    p.add_argument("overrides", nargs="*")
    a = p.parse_intermixed_args(argv)
    cfg = load_config("run", a.overrides)
    if a.print_config or a.dry_run:
        full = _resolve(cfg)
        check_run(full, data=a.dry_run)
        if a.print_config:
            print(dump_yaml(full))
        if a.dry_run:
            print(f"run {full['run_id']}: config, tasks {full['tasks']}, capabilities and data files check out; "
                  f"run folder {run_dir_of(full)}; dry run, nothing started")
        return 0
    row = run_protocol(cfg)
    keys = ["run_id", "status", "train_steps", "final_loss", "wall_time_s"]
    print(json.dumps({k: row.get(k) for k in keys} | {k: v for k, v in row.items() if k.startswith("val_")},
                     default=str, indent=1))
    return 0
