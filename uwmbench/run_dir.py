"""The run folder layout, defined once: paths and readers. Every module that writes or reads a
run folder (trainer, checkpoints, protocol, evaluator, tune, report, diagnose) goes through
these classes instead of joining path literals.

A trainer's folder (``uwmbench train``; each stage of a protocol run; each tune trial)::

    config.yaml          the resolved training config
    metrics.csv          step, loss, lr, val/* ...
    summary.json         written when training finished
    checkpoints/latest   name of the newest complete checkpoint
    checkpoints/step_00001000/   a checkpoint (:class:`CheckpointDir`)
    diagnostics/         ``uwmbench diagnose`` of its checkpoint (default output)

A protocol run's folder (``uwmbench run``, ``<runs_root>/<run_id>/``)::

    config.yaml  run.log  worker.json  stages.json  DONE
    pretrain/                 a trainer's folder
    finetune/<task>/          a trainer's folder per task
    eval/<task>/<mode>/       evaluator output (:class:`EvalDir`); stage jobs: chunks/<cond>-<a>-<b>/
    diagnostics/<task>/       ``uwmbench diagnose`` of the task's checkpoint (summary.json ...)

Writers keep their atomicity (temporary file + rename); this module only names the files and
reads them back.
"""
from __future__ import annotations

import csv
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from uwmbench.fileio import atomic_write_text
from uwmbench.rows import ROLLOUTS_FILE, read_jsonl


class CheckpointDir:
    """``checkpoints/step_NNNNNNNN/``: everything to rebuild and resume a method."""

    MODEL = "model.safetensors"        # the method's state dict (action-normaliser statistics included)
    EMA = "ema.safetensors"            # EMA weights (when trained with trainer.ema > 0)
    TRAINER_STATE = "trainer_state.pt"  # optimizer, LR scheduler, RNG states, step
    METHOD = "method.json"             # the method's typed config
    CONFIG = "config.yaml"             # the whole resolved run config
    VAE_CONFIG = "vae_config.json"     # architecture of the frozen VAE
    META = "meta.json"                 # what the evaluator checks: frame_size [H, W]

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def __fspath__(self) -> str:
        return os.fspath(self.path)

    def __repr__(self) -> str:
        return f"CheckpointDir({str(self.path)!r})"

    model = property(lambda self: self.path / self.MODEL)
    ema = property(lambda self: self.path / self.EMA)
    trainer_state = property(lambda self: self.path / self.TRAINER_STATE)
    method = property(lambda self: self.path / self.METHOD)
    config = property(lambda self: self.path / self.CONFIG)
    vae_config = property(lambda self: self.path / self.VAE_CONFIG)
    meta = property(lambda self: self.path / self.META)

    @property
    def is_checkpoint(self) -> bool:
        return self.model.is_file()

    @property
    def has_ema(self) -> bool:
        return self.ema.is_file()

    @property
    def run_dir(self) -> "RunDir":
        """The trainer's folder this checkpoint belongs to (``<run>/checkpoints/step_*``)."""
        return RunDir(self.path.parent.parent)


class EvalDir:
    """The evaluator's output folder (``uwmbench evaluate out=DIR``; ``eval/<task>/<mode>/`` of a run)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    rollouts = property(lambda self: self.path / ROLLOUTS_FILE)       # one JSON row per rollout
    videos = property(lambda self: self.path / "videos")              # MP4s of recorded rollouts
    summary_csv = property(lambda self: self.path / "summary.csv")
    summary_md = property(lambda self: self.path / "summary.md")

    def read_rows(self, skipped: list[str] | None = None) -> list[dict[str, Any]]:
        return read_jsonl(self.rollouts, skipped)


@dataclass(frozen=True)
class StageKey:
    """The name of a stage, in ``stages.json`` and in a sweep's stage graph: ``data``, ``pretrain``,
    ``finetune/<task>``, ``diagnostics/<task>``, ``eval/<task>/<mode>`` (a task's rollouts in one
    mode), ``eval/<task>/<mode>/<condition>/<first>-<last>`` (a chunk of them: a stage job) or
    ``row``. Task names may hold slashes (``libero_10/<name>``): keys are parsed from the right."""
    kind: str                        # data | pretrain | finetune | diagnostics | eval | row
    task: str | None = None
    mode: str | None = None
    condition: str | None = None     # eval chunks only
    first: int | None = None
    last: int | None = None

    @classmethod
    def finetune(cls, task: str) -> "StageKey":
        return cls("finetune", task)

    @classmethod
    def diagnostics(cls, task: str) -> "StageKey":
        return cls("diagnostics", task)

    @classmethod
    def eval(cls, task: str, mode: str, chunk: tuple[str, int, int] | None = None) -> "StageKey":
        return cls("eval", task, mode) if chunk is None else cls("eval", task, mode, chunk[0], int(chunk[1]), int(chunk[2]))

    @property
    def chunk(self) -> tuple[str, int, int] | None:
        """(condition, first, last) of an eval chunk, else None."""
        return None if self.condition is None else (self.condition, int(self.first), int(self.last))

    def __str__(self) -> str:
        if self.kind in ("data", "pretrain", "row"):
            return self.kind
        if self.kind in ("finetune", "diagnostics"):
            return f"{self.kind}/{self.task}"
        base = f"eval/{self.task}/{self.mode}"
        return base if self.chunk is None else f"{base}/{self.condition}/{self.first}-{self.last}"

    @classmethod
    def parse(cls, key: str) -> "StageKey":
        kind, _, rest = str(key).partition("/")
        if kind in ("data", "pretrain", "row") and not rest:
            return cls(kind)
        if kind in ("finetune", "diagnostics") and rest:
            return cls(kind, rest)
        parts = rest.split("/")
        if kind == "eval" and len(parts) >= 4 and re.fullmatch(r"\d+-\d+", parts[-1]):
            a, b = parts[-1].split("-")
            return cls("eval", "/".join(parts[:-3]), parts[-3], parts[-2], int(a), int(b))
        if kind == "eval" and len(parts) >= 2:
            return cls("eval", "/".join(parts[:-1]), parts[-1])
        raise ValueError(f"stage {key!r} is not data, pretrain, finetune/<task>, diagnostics/<task>, "
                         "eval/<task>/<mode>, eval/<task>/<mode>/<condition>/<first>-<last> or row")


class Stages:
    """``stages.json`` of a protocol run: results of finished stages (rewritten atomically on
    each change). Keys: ``pretrain``, ``finetune/<task>``, ``diagnostics/<task>``,
    ``eval/<task>/<mode>``, ``eval/<task>/<mode>/<condition>/<first>-<last>`` (a rollout chunk
    of a stage job) (:class:`StageKey`), ``elapsed_s``."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.data: dict[str, Any] = json.loads(self.path.read_text()) if self.path.is_file() else {}

    def get(self, key: "str | StageKey") -> Any:
        return self.data.get(str(key))

    def reload(self) -> "Stages":
        self.data = json.loads(self.path.read_text()) if self.path.is_file() else {}
        return self

    def put(self, key: "str | StageKey", value: Any) -> None:
        """Set one key. Stage jobs of one run write this file at once (rollout chunks of a
        sweep's stage graph): the file is re-read and rewritten under an exclusive lock
        (``stages.json.lock``), so no job's key is lost."""
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_name(self.path.name + ".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                self.reload()
                self.data[str(key)] = value
                atomic_write_text(self.path, json.dumps(self.data, indent=2, default=str))
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def finished(self) -> set[str]:
        """Keys of finished stages (``elapsed_s`` is bookkeeping, not a stage)."""
        return set(self.data) - {"elapsed_s"}


class RunDir:
    """A run folder (a trainer's or a protocol run's; see the module docstring)."""

    CONFIG = "config.yaml"
    METRICS = "metrics.csv"
    SUMMARY = "summary.json"
    CHECKPOINTS = "checkpoints"
    LATEST = "latest"
    STEP_PREFIX = "step_"
    RUN_LOG = "run.log"
    WORKER = "worker.json"
    STAGES = "stages.json"
    DONE = "DONE"
    PRETRAIN = "pretrain"
    FINETUNE = "finetune"
    EVAL = "eval"
    DIAGNOSTICS = "diagnostics"
    DIAGNOSTICS_SUMMARY = "summary.json"

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def __fspath__(self) -> str:
        return os.fspath(self.path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RunDir) and other.path == self.path

    def __hash__(self) -> int:
        return hash(self.path)

    # ------------------------------------------------------------------ a trainer's folder
    config = property(lambda self: self.path / self.CONFIG)
    metrics = property(lambda self: self.path / self.METRICS)
    summary = property(lambda self: self.path / self.SUMMARY)
    checkpoints = property(lambda self: self.path / self.CHECKPOINTS)
    latest_marker = property(lambda self: self.checkpoints / self.LATEST)

    @classmethod
    def step_name(cls, step: int) -> str:
        return f"{cls.STEP_PREFIX}{int(step):08d}"

    def checkpoint(self, step: int) -> CheckpointDir:
        return CheckpointDir(self.checkpoints / self.step_name(step))

    def step_checkpoints(self, complete: bool = False) -> list[Path]:
        """``checkpoints/step_*`` folders, oldest first; ``complete``: only those with their
        trainer state (a fully written checkpoint)."""
        if not self.checkpoints.is_dir():
            return []
        out = sorted(self.checkpoints.glob(self.STEP_PREFIX + "*"))
        return [p for p in out if CheckpointDir(p).trainer_state.is_file()] if complete else out

    def latest_checkpoint(self) -> Path | None:
        """The checkpoint named by ``checkpoints/latest``, else the newest complete one (a lost
        marker), else None."""
        marker = self.latest_marker
        if marker.is_file():
            p = self.checkpoints / marker.read_text().strip()
            if CheckpointDir(p).is_checkpoint:
                return p
        done = self.step_checkpoints(complete=True)
        return done[-1] if done else None

    def has_checkpoints(self) -> bool:
        """Any ``checkpoints/step_*`` in this folder or below (a protocol run's stages)."""
        return any(self.path.glob(f"**/{self.CHECKPOINTS}/{self.STEP_PREFIX}*"))

    def read_summary(self) -> dict[str, Any] | None:
        """The trainer's ``summary.json`` (None before training finished)."""
        return _read_json(self.summary)

    def read_metrics(self) -> list[dict[str, str]]:
        """Rows of ``metrics.csv`` as written (strings; empty cells for metrics not logged)."""
        if not self.metrics.is_file():
            return []
        with open(self.metrics, newline="") as f:
            return list(csv.DictReader(f))

    def last_metric(self, name: str) -> float | None:
        """The last logged value of one ``metrics.csv`` column."""
        last = None
        for r in self.read_metrics():
            if r.get(name) not in (None, ""):
                last = float(r[name])
        return last

    # ------------------------------------------------------------------ a protocol run's folder
    run_log = property(lambda self: self.path / self.RUN_LOG)
    worker = property(lambda self: self.path / self.WORKER)
    stages_file = property(lambda self: self.path / self.STAGES)
    done = property(lambda self: self.path / self.DONE)

    @property
    def pretrain(self) -> "RunDir":
        return RunDir(self.path / self.PRETRAIN)

    def finetune(self, task: str) -> "RunDir":
        return RunDir(self.path / self.FINETUNE / task)

    def eval(self, task: str, mode: str = "policy") -> EvalDir:
        return EvalDir(self.path / self.EVAL / task / mode)

    def eval_chunk(self, task: str, mode: str, condition: str, first: int, last: int) -> EvalDir:
        """``eval/<task>/<mode>/chunks/<condition>-<first>-<last>/``: one rollout job's output
        (episodes ``first..last`` of one condition) when a sweep runs stages as jobs."""
        return EvalDir(self.path / self.EVAL / task / mode / "chunks" / f"{condition}-{first}-{last}")

    def diagnostics(self, task: str | None = None) -> Path:
        """``diagnostics/<task>/`` of a protocol run; ``diagnostics/`` of a trainer's folder."""
        d = self.path / self.DIAGNOSTICS
        return d / task if task else d

    def stages(self) -> Stages:
        return Stages(self.stages_file)

    def read_done(self) -> dict[str, Any] | None:
        """The run row written to ``DONE`` when the run finished (None while it is not)."""
        return _read_json(self.done)

    def read_worker(self) -> dict[str, Any] | None:
        """Host, pid and job id of the attempt that runs (ran) it."""
        return _read_json(self.worker)

    @classmethod
    def find_diagnostics(cls, root: str | os.PathLike) -> list[tuple[str, str, Path]]:
        """``(run name, task, summary.json)`` of every protocol run's diagnostics under ``root``
        (``<run>/diagnostics/<task>/summary.json``)."""
        root = Path(root)
        if not root.is_dir():
            return []
        out = []
        for f in root.rglob(f"{cls.DIAGNOSTICS}/*/{cls.DIAGNOSTICS_SUMMARY}"):
            f = f.resolve()
            out.append((f.parent.parent.parent.name, f.parent.name, f))
        return out


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text()) if path.is_file() else None


__all__ = ["RunDir", "CheckpointDir", "EvalDir", "Stages", "StageKey"]
